//! `FakeServicesServer`: an in-process `logdog.Services` server over loopback,
//! speaking gRPC and pRPC (`docs/prpc.md`), each on its own listener
//! ([`FakeServer::endpoint`], [`FakeServer::prpc_endpoint`]). Both protocols
//! share one state, one set of counters and fault knobs, and one set of
//! accepted tokens.
//!
//! **Credentials.** With accepted bearer tokens configured
//! ([`FakeServicesServerBuilder::token`], [`FakeServicesServer::set_tokens`]),
//! a call without `authorization: Bearer <one of them>` is answered
//! `PermissionDenied` ("not a service") before anything else (not counted, no
//! faults, the request not looked at), like the real Coordinator.
//!
//! **pRPC.** `POST /prpc/logdog.Services/{Method}` with a binary
//! (`application/prpc; encoding=binary`) or JSON (`application/json`, the
//! proto3 JSON mapping) body; JSON answers carry the `)]}'` anti-XSSI line.
//! Every answer has `X-Prpc-Grpc-Code` and `X-Content-Type-Options: nosniff`;
//! errors are `text/plain` messages with the HTTP status of their code (generic
//! messages for server-side codes). Unknown method: 501; unsupported
//! `Content-Type` or `Content-Encoding`: 415; unsatisfiable `Accept`: 406;
//! undecodable body: 400; `X-Prpc-Grpc-Timeout` that cannot be met:
//! `DeadlineExceeded` (504); non-`POST`: 405 (`Unimplemented`). Gzip request
//! bodies are accepted, and answers are gzipped for `Accept-Encoding: gzip`.
//! [`FakeServer::prpc_connections`] counts accepted pRPC connections.
//!
//! **Health and reflection.** The gRPC listener also serves
//! `grpc.health.v1.Health` (`logdog.Services` and the server as a whole, `""`,
//! SERVING while it serves, NOT_SERVING once a shutdown begins) and server
//! reflection (`grpc.reflection.v1` and `v1alpha`) of the checked-in
//! descriptor set. Neither asks for a token.
//!
//! **Metrics.** The counters behind [`FakeServicesServer::calls`] and the
//! stored state are also `metrics` handles, registered when the server is
//! created (with the recorder installed then; none: no-ops). Servers in one
//! process share the series.
//!
//! | name | kind | counts |
//! | --- | --- | --- |
//! | `fake_coordinator_rpcs_total{rpc="RegisterStream"}` (one series per RPC) | counter | RPCs received, as [`CallCounts::of`] |
//! | `fake_coordinator_prpc_rpcs_total` | counter | [`CallCounts::prpc_rpcs`] |
//! | `fake_coordinator_prpc_connections_total` | counter | [`CallCounts::prpc_connections`] |
//! | `fake_coordinator_batch_entries_total{kind="register"\|"terminate"\|"other"}` | counter | batch entries received |
//! | `fake_coordinator_faults_injected_total{kind="call"\|"batch_entry"\|"dropped_entry"\|"empty_batch"}` | counter | [`CallCounts::faults_injected`], by kind |
//! | `fake_coordinator_streams_registered_total` | counter | streams created |
//! | `fake_coordinator_streams_terminated_total` | counter | streams given a terminal index (at registration or by TerminateStream) |
//! | `fake_coordinator_streams` | gauge | streams stored now |
//!
//! **State dump.** [`FakeServicesServer::dump_state`] returns the prefixes,
//! streams and call counts as a serde-serializable [`StateDump`], with no
//! secret in it; `fake-coordinator --dump-on-exit FILE` writes it as JSON on
//! shutdown.
//!
//! It keeps the Coordinator's real server semantics (spec §6): prefixes are
//! registered first (project, prefix, secret, optional expiry); `RegisterStream`
//! derives the stream path from the descriptor, accepts protocol version `"1"`
//! only, is idempotent (an existing stream's stored state is returned, whatever
//! the new request says) and creates the stream terminated when
//! `terminal_index >= 0`; stream IDs are the lowercase hex SHA-256 of the path;
//! `TerminateStream` is idempotent at the same index and refuses another one.
//! `LoadStream` returns the stored state; `ArchiveStream`, `LeaseArchiveTasks`
//! and `DeleteArchiveTasks` answer `Unimplemented`.
//!
//! Status codes:
//!
//! | RPC | condition | code |
//! | --- | --- | --- |
//! | Register | invalid project, unknown `proto_version`, undecodable descriptor | `InvalidArgument` |
//! | Register | invalid descriptor: prefix or name not a valid stream name, stream type not TEXT/BINARY/DATAGRAM, empty content type, no timestamp, a tag key not a valid stream name or over 64 bytes, a tag value over 4096 bytes | `InvalidArgument` |
//! | Register | prefix not registered, or expired (each prefix has its own expiry) | `FailedPrecondition` |
//! | Register | secret not 36 bytes, or not the prefix's | `InvalidArgument` |
//! | Terminate | invalid project, negative index, ID not 64 hex characters | `InvalidArgument` |
//! | Terminate | unknown ID (in that project) | `NotFound` |
//! | Terminate | wrong secret | `InvalidArgument` |
//! | Terminate | already terminated at another index | `FailedPrecondition` |
//! | Load | invalid project or ID / unknown ID | `InvalidArgument` / `NotFound` |
//!
//! Checks run in the order of the table; secrets are compared in constant time
//! and never appear in messages or logs.
//!
//! `Batch` runs its entries concurrently (one task each) and answers each with
//! its request index: a register entry with `register_stream`, a load entry with
//! `load_stream`, a failure with `err` (code, `transient` per the code table,
//! message). **A successful terminate entry is answered with an entry that has
//! its index and no `value` (`value: None`)**: `BatchResponse.Entry` has no
//! terminate response type. An entry without a request and an archive entry are
//! answered with `err` (`InvalidArgument`, `Unimplemented`).
//!
//! ```
//! use coordinator_testkit::{FakeServicesServer, register_request};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = FakeServicesServer::start().await;
//! let secret = server.new_prefix(&"chromium".parse()?, &"builds/1".parse()?);
//! let path = "builds/1/+/stdout".parse()?;
//! let project = "chromium".parse()?;
//! let resp = server
//!     .client()
//!     .register_stream(register_request(&project, &path, &secret, None))
//!     .await?
//!     .into_inner();
//! let stored = server.stream(&project, &path).expect("registered");
//! assert_eq!(resp.id, stored.id.as_str());
//! assert_eq!(server.calls().register, 1);
//! # Ok(()) }
//! ```

mod faults;
mod metrics;
mod prpc;
mod scripted;
mod state;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use coordinator_api::{
    Code, Error, MessageIndex, PROTOCOL_VERSION, PrefixSecret, ProjectName, StreamId, StreamName,
    StreamPath,
};
use coordinator_grpc::proto::logdog::services_client::ServicesClient;
use coordinator_grpc::proto::logdog::services_server::{Services, ServicesServer};
use coordinator_grpc::proto::logdog::{
    ArchiveStreamRequest, BatchRequest, BatchResponse, DeleteRequest, LeaseRequest, LeaseResponse,
    LoadStreamRequest, LoadStreamResponse, RegisterStreamRequest, RegisterStreamResponse,
    TerminateStreamRequest, batch_request, batch_response,
};
use coordinator_grpc::proto::logpb::LogStreamDescriptor;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_health::server::HealthReporter;

pub use coordinator_services::descriptor::DescriptorBuilder;
pub use faults::{BatchOrder, CallCounts, Faults, RpcKind};
pub use scripted::ScriptedServices;
pub use state::{PrefixDump, StateDump, StoredStream, StreamDump};

use faults::{Counters, EntryKind, EntryPlan, INJECTED, InjectedFault, Stopped};
use prpc::PrpcServing;
use state::Registry;

/// The timestamp of every [`descriptor_message`]: 2023-11-14T22:13:20Z (fixed,
/// so that the same path always gives the same descriptor bytes).
pub const DESCRIPTOR_TIMESTAMP_SECONDS: i64 = 1_700_000_000;

/// The [`DescriptorBuilder`] of every [`descriptor_message`]: `path`'s
/// prefix and name, a TEXT stream of content type `text/plain`, timestamp
/// [`DESCRIPTOR_TIMESTAMP_SECONDS`], no tags. Change it for other valid
/// descriptors.
pub fn descriptor_builder(path: &StreamPath) -> DescriptorBuilder {
    DescriptorBuilder::for_path(path).timestamp(
        std::time::UNIX_EPOCH + Duration::from_secs(DESCRIPTOR_TIMESTAMP_SECONDS.unsigned_abs()),
    )
}

/// A `logpb.LogStreamDescriptor` for `path` that passes the server's
/// validation: [`descriptor_builder`]`(path).build()`. Tests of invalid
/// descriptors change fields of it.
pub fn descriptor_message(path: &StreamPath) -> LogStreamDescriptor {
    descriptor_builder(path).build()
}

/// [`descriptor_message`]`(path)` serialized, as `RegisterStreamRequest.desc`
/// expects (the same bytes for the same path).
pub fn descriptor(path: &StreamPath) -> Vec<u8> {
    descriptor_builder(path).to_bytes()
}

/// A valid `RegisterStreamRequest` for `path` in `project`: protocol version
/// `"1"`, [`descriptor`]`(path)`, and `terminal_index` (`-1` when `None`).
/// Tests of invalid input change fields afterwards.
pub fn register_request(
    project: &ProjectName,
    path: &StreamPath,
    secret: &PrefixSecret,
    terminal_index: Option<MessageIndex>,
) -> RegisterStreamRequest {
    RegisterStreamRequest {
        project: project.as_str().to_owned(),
        secret: secret.as_bytes().to_vec(),
        proto_version: PROTOCOL_VERSION.to_owned(),
        desc: descriptor(path),
        terminal_index: MessageIndex::optional_to_wire(terminal_index),
    }
}

/// A valid `TerminateStreamRequest` for the stream at `path` in `project` (its
/// ID is [`StreamId::for_path`]).
pub fn terminate_request(
    project: &ProjectName,
    path: &StreamPath,
    secret: &PrefixSecret,
    terminal_index: MessageIndex,
) -> TerminateStreamRequest {
    TerminateStreamRequest {
        project: project.as_str().to_owned(),
        id: StreamId::for_path(path).as_str().to_owned(),
        secret: secret.as_bytes().to_vec(),
        terminal_index: terminal_index.to_wire(),
    }
}

/// The fake `logdog.Services` implementation: the state (prefixes, streams),
/// the fault knobs and the counters, behind one `Arc` (clones share them).
///
/// Most tests want [`FakeServicesServer::start`], which serves it on loopback
/// and returns a [`FakeServer`] handle. To mount it in a tonic server of your
/// own, use [`FakeServicesServer::new`] and [`FakeServicesServer::service`].
#[derive(Clone, Default)]
pub struct FakeServicesServer {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    registry: Mutex<Registry>,
    faults: Faults,
    counters: Counters,
    /// Accepted bearer tokens; empty: no credentials required.
    tokens: Mutex<Vec<String>>,
}

impl std::fmt::Debug for FakeServicesServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeServicesServer")
            .field("calls", &self.calls())
            .field("faults", &self.shared.faults)
            .finish_non_exhaustive()
    }
}

impl FakeServicesServer {
    /// A server with no prefixes, no streams and no faults (not yet serving).
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder, to choose the address or pre-register prefixes.
    pub fn builder() -> FakeServicesServerBuilder {
        FakeServicesServerBuilder::default()
    }

    /// Serves a fresh server on `127.0.0.1` at a free port.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound; see [`FakeServicesServer::try_start`].
    pub async fn start() -> FakeServer {
        Self::builder().start().await
    }

    /// Serves a fresh server on `127.0.0.1` at a free port; fails if it cannot
    /// bind.
    pub async fn try_start() -> io::Result<FakeServer> {
        Self::builder().try_start().await
    }

    /// This server as a tonic service (sharing state with `self`).
    pub fn service(&self) -> ServicesServer<FakeServicesServer> {
        ServicesServer::new(self.clone())
    }

    /// Registers `prefix` in `project` with `secret`, expiring `expires_in` from
    /// now (by the tokio clock) if given. Registering a prefix again replaces
    /// its secret and expiry; streams already registered keep theirs.
    pub fn register_prefix(
        &self,
        project: &ProjectName,
        prefix: &StreamName,
        secret: &PrefixSecret,
        expires_in: Option<Duration>,
    ) {
        self.shared.registry.lock().register_prefix(
            project,
            prefix,
            secret,
            expires_in,
            Instant::now(),
        );
    }

    /// Registers `prefix` in `project` with a fresh random secret, never
    /// expiring, and returns the secret.
    ///
    /// # Panics
    ///
    /// If the operating system's random source fails.
    pub fn new_prefix(&self, project: &ProjectName, prefix: &StreamName) -> PrefixSecret {
        #[allow(clippy::expect_used)] // A test helper; an OS RNG failure is not a test condition.
        let secret = PrefixSecret::generate().expect("the OS random source failed");
        self.register_prefix(project, prefix, &secret, None);
        secret
    }

    /// A snapshot of the calls received so far.
    pub fn calls(&self) -> CallCounts {
        self.shared.counters.snapshot()
    }

    /// Waits until the call counts satisfy `done` (checked now and after every
    /// counted call; calls are counted on arrival, before latency, holds and
    /// injected failures). Cancel-safe.
    pub async fn wait_calls(&self, done: impl FnMut(&CallCounts) -> bool) {
        self.shared.counters.wait(done).await;
    }

    /// Requires credentials: from now on, a call (gRPC or pRPC) whose
    /// `authorization` is not `Bearer <token>` with one of `tokens` is answered
    /// `PermissionDenied` ("not a service") before anything else, like the
    /// real Coordinator's service-group check: it is not counted, faults do not
    /// apply to it, and its request is not looked at. No tokens (the default):
    /// every call is accepted. Tokens are compared in constant time and never
    /// logged.
    pub fn set_tokens<T: Into<String>>(&self, tokens: impl IntoIterator<Item = T>) {
        *self.shared.tokens.lock() = tokens.into_iter().map(Into::into).collect();
    }

    /// Checks a call's `authorization` header or metadata value against the
    /// accepted tokens (see [`FakeServicesServer::set_tokens`]).
    pub(crate) fn authorize(&self, authorization: Option<&[u8]>) -> Result<(), Error> {
        let tokens = self.shared.tokens.lock();
        if tokens.is_empty() {
            return Ok(());
        }
        let presented = authorization.and_then(bearer_token);
        // Every accepted token is compared, so the time taken does not say
        // which one (if any) matched.
        let accepted = presented.is_some_and(|presented| {
            tokens
                .iter()
                .fold(subtle::Choice::from(0), |any, token| {
                    any | subtle::ConstantTimeEq::ct_eq(token.as_bytes(), presented)
                })
                .into()
        });
        if accepted {
            Ok(())
        } else {
            tracing::debug!("fake server: call without an accepted token refused");
            Err(Error::new(Code::PermissionDenied, "not a service"))
        }
    }

    /// How many connections the pRPC listener has accepted (across restarts):
    /// a client that reuses its connections keeps this low.
    pub fn prpc_connections(&self) -> u64 {
        self.shared.counters.prpc_connections()
    }

    /// The fault-injection knobs.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The stored stream at `path` in `project`, if registered.
    pub fn stream(&self, project: &ProjectName, path: &StreamPath) -> Option<StoredStream> {
        self.shared.registry.lock().stream(project, path).cloned()
    }

    /// Every stored stream, sorted by project and path.
    pub fn streams(&self) -> Vec<StoredStream> {
        self.shared.registry.lock().streams()
    }

    /// Marks a stored stream archived (or not); later answers carry the flag.
    /// False if there is no such stream.
    pub fn set_archived(&self, project: &ProjectName, path: &StreamPath, archived: bool) -> bool {
        self.update_stream(project, path, |s| s.archived = archived)
    }

    /// Marks a stored stream purged (or not); later answers carry the flag.
    /// False if there is no such stream.
    pub fn set_purged(&self, project: &ProjectName, path: &StreamPath, purged: bool) -> bool {
        self.update_stream(project, path, |s| s.purged = purged)
    }

    fn update_stream(
        &self,
        project: &ProjectName,
        path: &StreamPath,
        update: impl FnOnce(&mut StoredStream),
    ) -> bool {
        let mut registry = self.shared.registry.lock();
        registry.stream_mut(project, path).map(update).is_some()
    }

    /// The state as data: prefixes (with their expiry), streams (path, ID,
    /// protocol version, terminal index, archival flags, registration time,
    /// counts) and the call counts; **never a secret**. Serialize it (e.g. with
    /// `serde_json`) to keep or compare it.
    pub fn dump_state(&self) -> StateDump {
        let calls = self.calls();
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        self.shared.registry.lock().dump(calls, now, wall)
    }

    /// Forgets every prefix and stream (knobs and counters are kept).
    pub fn clear_state(&self) {
        self.shared.registry.lock().clear();
    }

    /// Counts the call, waits its latency, and applies an injected failure.
    async fn admit(&self, kind: RpcKind) -> Result<(), Status> {
        self.shared.counters.rpc(kind);
        let plan = self.shared.faults.plan_call(kind);
        self.shared
            .faults
            .delay(plan.latency)
            .await
            .map_err(stopped)?;
        match plan.fail {
            Some(code) => {
                self.shared.counters.faults_injected(InjectedFault::Call, 1);
                tracing::debug!(?kind, %code, "fake server: injected call failure");
                Err(Status::new(tonic_code(code), INJECTED))
            }
            None => Ok(()),
        }
    }

    /// [`Self::admit`] plus the hold gate, for unary calls.
    async fn admit_unary(&self, kind: RpcKind) -> Result<(), Status> {
        self.admit(kind).await?;
        self.shared.faults.gate().await.map_err(stopped)
    }

    fn register(&self, req: &RegisterStreamRequest) -> Result<RegisterStreamResponse, Error> {
        let result = self.shared.registry.lock().register(req, Instant::now());
        log_outcome("RegisterStream", &req.project, result.as_ref().err());
        result
    }

    fn terminate(&self, req: &TerminateStreamRequest) -> Result<(), Error> {
        let result = self.shared.registry.lock().terminate(req);
        log_outcome("TerminateStream", &req.project, result.as_ref().err());
        result
    }

    fn load(&self, req: &LoadStreamRequest) -> Result<LoadStreamResponse, Error> {
        let result = self.shared.registry.lock().load(req, Instant::now());
        log_outcome("LoadStream", &req.project, result.as_ref().err());
        result
    }

    /// One batch entry: its answer (`None`: a successful terminate).
    async fn batch_entry(
        &self,
        entry: batch_request::Entry,
        plan: EntryPlan,
    ) -> Option<batch_response::entry::Value> {
        use batch_request::entry::Value as Req;
        use batch_response::entry::Value as Resp;

        if self.shared.faults.gate().await.is_err() {
            return Some(Resp::Err(entry_error(&stopped_error())));
        }
        if let Some((code, transient)) = plan.fail {
            return Some(Resp::Err(coordinator_grpc::proto::logdog::Error {
                grpc_code: code.as_i32(),
                transient,
                msg: INJECTED.to_owned(),
            }));
        }
        let result = match entry.value {
            None => Err(Error::invalid_argument("batch entry holds no request")),
            Some(Req::RegisterStream(req)) => {
                self.register(&req).map(|r| Some(Resp::RegisterStream(r)))
            }
            Some(Req::LoadStream(req)) => self.load(&req).map(|r| Some(Resp::LoadStream(r))),
            Some(Req::TerminateStream(req)) => self.terminate(&req).map(|()| None),
            Some(Req::ArchiveStream(_)) => Err(unimplemented_error("ArchiveStream")),
        };
        result.unwrap_or_else(|e| Some(Resp::Err(entry_error(&e))))
    }
}

/// The RPCs without the credential check, shared by the gRPC and pRPC
/// front ends.
impl FakeServicesServer {
    pub(crate) async fn rpc_register_stream(
        &self,
        request: RegisterStreamRequest,
    ) -> Result<RegisterStreamResponse, Status> {
        self.admit_unary(RpcKind::RegisterStream).await?;
        self.register(&request).map_err(|e| status(&e))
    }

    pub(crate) async fn rpc_load_stream(
        &self,
        request: LoadStreamRequest,
    ) -> Result<LoadStreamResponse, Status> {
        self.admit_unary(RpcKind::LoadStream).await?;
        self.load(&request).map_err(|e| status(&e))
    }

    pub(crate) async fn rpc_terminate_stream(
        &self,
        request: TerminateStreamRequest,
    ) -> Result<(), Status> {
        self.admit_unary(RpcKind::TerminateStream).await?;
        self.terminate(&request).map_err(|e| status(&e))
    }

    pub(crate) async fn rpc_archive_stream(
        &self,
        _request: ArchiveStreamRequest,
    ) -> Result<(), Status> {
        self.admit_unary(RpcKind::ArchiveStream).await?;
        Err(status(&unimplemented_error("ArchiveStream")))
    }

    pub(crate) async fn rpc_batch(&self, request: BatchRequest) -> Result<BatchResponse, Status> {
        use batch_request::entry::Value as Req;
        let entries = request.req;
        self.shared
            .counters
            .batch_entries(entries.iter().map(|entry| match entry.value {
                Some(Req::RegisterStream(_)) => EntryKind::Register,
                Some(Req::TerminateStream(_)) => EntryKind::Terminate,
                _ => EntryKind::Other,
            }));
        self.admit(RpcKind::Batch).await?;

        let plan = self.shared.faults.plan_batch(entries.len());
        let counters = &self.shared.counters;
        let count =
            |pick: fn(&EntryPlan) -> bool| plan.entries.iter().filter(|&e| pick(e)).count() as u64;
        counters.faults_injected(InjectedFault::BatchEntry, count(|e| e.fail.is_some()));
        if plan.empty {
            counters.faults_injected(InjectedFault::EmptyBatch, 1);
        } else {
            counters.faults_injected(InjectedFault::DroppedEntry, count(|e| e.drop));
        }
        let mut tasks = JoinSet::new();
        let mut task_index = std::collections::HashMap::with_capacity(entries.len());
        for (index, (entry, entry_plan)) in entries.into_iter().zip(&plan.entries).enumerate() {
            let this = self.clone();
            let entry_plan = *entry_plan;
            let handle =
                tasks.spawn(async move { (index, this.batch_entry(entry, entry_plan).await) });
            task_index.insert(handle.id(), index);
        }
        let mut answers: Vec<Option<batch_response::Entry>> = vec![None; plan.entries.len()];
        while let Some(joined) = tasks.join_next().await {
            let (index, value) = match joined {
                Ok(answer) => answer,
                Err(e) => {
                    // Only a panic (a bug in this fake) gets here; answer it.
                    let Some(&index) = task_index.get(&e.id()) else {
                        continue;
                    };
                    let err = Error::internal("batch entry processing panicked");
                    (
                        index,
                        Some(batch_response::entry::Value::Err(entry_error(&err))),
                    )
                }
            };
            if let Some(slot) = answers.get_mut(index) {
                *slot = Some(batch_response::Entry {
                    index: i32::try_from(index).unwrap_or(i32::MAX),
                    value,
                });
            }
        }

        let resp = if plan.empty {
            Vec::new()
        } else {
            plan.order
                .iter()
                .filter(|&&i| !plan.entries[i].drop)
                .filter_map(|&i| answers[i].take())
                .collect()
        };
        Ok(BatchResponse { resp })
    }

    pub(crate) async fn rpc_lease_archive_tasks(
        &self,
        _request: LeaseRequest,
    ) -> Result<LeaseResponse, Status> {
        self.admit_unary(RpcKind::LeaseArchiveTasks).await?;
        Err(status(&unimplemented_error("LeaseArchiveTasks")))
    }

    pub(crate) async fn rpc_delete_archive_tasks(
        &self,
        _request: DeleteRequest,
    ) -> Result<(), Status> {
        self.admit_unary(RpcKind::DeleteArchiveTasks).await?;
        Err(status(&unimplemented_error("DeleteArchiveTasks")))
    }
}

/// Checks the caller's credentials (gRPC `authorization` metadata), then runs
/// the RPC.
macro_rules! grpc_rpc {
    ($self:ident, $request:ident, $rpc:ident) => {{
        $self
            .authorize(
                $request
                    .metadata()
                    .get("authorization")
                    .map(|v| v.as_bytes()),
            )
            .map_err(|e| status(&e))?;
        $self.$rpc($request.into_inner()).await.map(Response::new)
    }};
}

#[tonic::async_trait]
impl Services for FakeServicesServer {
    async fn register_stream(
        &self,
        request: Request<RegisterStreamRequest>,
    ) -> Result<Response<RegisterStreamResponse>, Status> {
        grpc_rpc!(self, request, rpc_register_stream)
    }

    async fn load_stream(
        &self,
        request: Request<LoadStreamRequest>,
    ) -> Result<Response<LoadStreamResponse>, Status> {
        grpc_rpc!(self, request, rpc_load_stream)
    }

    async fn terminate_stream(
        &self,
        request: Request<TerminateStreamRequest>,
    ) -> Result<Response<()>, Status> {
        grpc_rpc!(self, request, rpc_terminate_stream)
    }

    async fn archive_stream(
        &self,
        request: Request<ArchiveStreamRequest>,
    ) -> Result<Response<()>, Status> {
        grpc_rpc!(self, request, rpc_archive_stream)
    }

    async fn batch(
        &self,
        request: Request<BatchRequest>,
    ) -> Result<Response<BatchResponse>, Status> {
        grpc_rpc!(self, request, rpc_batch)
    }

    async fn lease_archive_tasks(
        &self,
        request: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        grpc_rpc!(self, request, rpc_lease_archive_tasks)
    }

    async fn delete_archive_tasks(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<()>, Status> {
        grpc_rpc!(self, request, rpc_delete_archive_tasks)
    }
}

/// The token of an `authorization` value `Bearer <token>` (the scheme in any
/// case).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

fn tonic_code(code: Code) -> tonic::Code {
    tonic::Code::from_i32(code.as_i32())
}

fn status(e: &Error) -> Status {
    Status::new(tonic_code(e.code()), e.message())
}

/// A local error as a batch entry's `Error`: its code, `transient` per the code
/// table, its message.
fn entry_error(e: &Error) -> coordinator_grpc::proto::logdog::Error {
    coordinator_grpc::proto::logdog::Error {
        grpc_code: e.code().as_i32(),
        transient: e.code().is_transient(),
        msg: e.message().to_owned(),
    }
}

fn unimplemented_error(rpc: &str) -> Error {
    Error::new(
        Code::Unimplemented,
        format!("{rpc} is not implemented by the fake server"),
    )
}

fn stopped_error() -> Error {
    Error::unavailable("the fake server is stopping")
}

fn stopped(_: Stopped) -> Status {
    status(&stopped_error())
}

/// Logs a failed call's project and error (never a secret: messages hold none).
fn log_outcome(rpc: &str, project: &str, error: Option<&Error>) {
    if let Some(e) = error {
        tracing::debug!(rpc, project, error = %e, "fake server: call failed");
    }
}

/// Builds and starts a [`FakeServer`].
pub struct FakeServicesServerBuilder {
    addr: SocketAddr,
    prpc_addr: SocketAddr,
    prefixes: Vec<(ProjectName, StreamName, PrefixSecret, Option<Duration>)>,
    tokens: Vec<String>,
}

impl std::fmt::Debug for FakeServicesServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are credentials: only their number is shown.
        f.debug_struct("FakeServicesServerBuilder")
            .field("addr", &self.addr)
            .field("prpc_addr", &self.prpc_addr)
            .field("prefixes", &self.prefixes)
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl Default for FakeServicesServerBuilder {
    fn default() -> Self {
        FakeServicesServerBuilder {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            prpc_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            prefixes: Vec::new(),
            tokens: Vec::new(),
        }
    }
}

impl FakeServicesServerBuilder {
    /// The address to serve gRPC on (default `127.0.0.1:0`: a free loopback
    /// port).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// The address to serve pRPC on (default `127.0.0.1:0`: a free loopback
    /// port). pRPC has its own listener (HTTP/1.1 and cleartext HTTP/2).
    pub fn prpc_addr(mut self, addr: SocketAddr) -> Self {
        self.prpc_addr = addr;
        self
    }

    /// Accepts `token` as a bearer token and requires one of the accepted
    /// tokens on every call (see [`FakeServicesServer::set_tokens`]).
    /// Repeatable.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.tokens.push(token.into());
        self
    }

    /// Pre-registers a prefix (see [`FakeServicesServer::register_prefix`]).
    pub fn prefix(
        mut self,
        project: ProjectName,
        prefix: StreamName,
        secret: PrefixSecret,
        expires_in: Option<Duration>,
    ) -> Self {
        self.prefixes.push((project, prefix, secret, expires_in));
        self
    }

    /// Binds and serves.
    ///
    /// # Panics
    ///
    /// If the address cannot be bound; see [`FakeServicesServerBuilder::try_start`].
    pub async fn start(self) -> FakeServer {
        let addr = self.addr;
        match self.try_start().await {
            Ok(server) => server,
            Err(e) => panic!("cannot start the fake Coordinator server on {addr}: {e}"),
        }
    }

    /// Binds and serves; fails if the address cannot be bound. Must run inside a
    /// tokio runtime (the server is a spawned task).
    pub async fn try_start(self) -> io::Result<FakeServer> {
        let service = FakeServicesServer::new();
        for (project, prefix, secret, expires_in) in &self.prefixes {
            service.register_prefix(project, prefix, secret, *expires_in);
        }
        service.set_tokens(self.tokens);
        let listener = bind(self.addr)?;
        let addr = listener.local_addr()?;
        let prpc_listener = bind(self.prpc_addr)?;
        let prpc_addr = prpc_listener.local_addr()?;
        let endpoint = format!("http://{addr}");
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
            .connect_lazy();
        let running = Running::spawn(&service, listener, prpc_listener).await?;
        Ok(FakeServer {
            service,
            addr,
            prpc_addr,
            endpoint,
            channel,
            running: Some(running),
        })
    }
}

/// A listener on `addr` with `SO_REUSEADDR`, so that a restart can bind the
/// same port while closed connections linger in `TIME_WAIT`.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A serving task and the way to stop it.
struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    prpc: PrpcServing,
    health: HealthReporter,
}

impl Running {
    /// Serves `service` on both listeners: `logdog.Services` over pRPC, and over
    /// gRPC with health checking (`logdog.Services` and the server, `""`,
    /// SERVING) and reflection (v1 and v1alpha) of the checked-in descriptor
    /// set.
    async fn spawn(
        service: &FakeServicesServer,
        listener: TcpListener,
        prpc_listener: TcpListener,
    ) -> io::Result<Self> {
        service.shared.faults.set_stopping(false);
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<ServicesServer<FakeServicesServer>>()
            .await;
        let reflection = || {
            tonic_reflection::server::Builder::configure().register_encoded_file_descriptor_set(
                coordinator_services::proto::FILE_DESCRIPTOR_SET,
            )
        };
        let invalid = |e: tonic_reflection::server::Error| {
            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
        };
        let reflection_v1 = reflection().build_v1().map_err(invalid)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(invalid)?;
        let (shutdown, signal) = oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .add_service(service.service())
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        // TCP_NODELAY: without it, concurrent calls on loopback pay ~40 ms of
        // Nagle + delayed-ACK stalls.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
            // Fires on send and on drop of the sender alike.
            let _ = signal.await;
        }));
        let prpc = PrpcServing::spawn(service, prpc_listener);
        Ok(Running {
            shutdown,
            task,
            prpc,
            health,
        })
    }
}

/// A running [`FakeServicesServer`] on loopback: its gRPC and pRPC addresses,
/// a gRPC client channel, the state and knobs (shared with the service), and
/// restart/shutdown (of both listeners: a restart binds both ports again).
///
/// Dropping it stops the server (in-flight calls held by
/// [`Faults::hold`] or latency answer `Unavailable`).
#[derive(Debug)]
pub struct FakeServer {
    service: FakeServicesServer,
    addr: SocketAddr,
    prpc_addr: SocketAddr,
    endpoint: String,
    channel: Channel,
    running: Option<Running>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").finish_non_exhaustive()
    }
}

impl FakeServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its gRPC URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The address its pRPC listener listens on.
    pub fn prpc_addr(&self) -> SocketAddr {
        self.prpc_addr
    }

    /// Its pRPC base URL, `http://127.0.0.1:PORT` (calls go to
    /// `{prpc_endpoint}/prpc/logdog.Services/{Method}`).
    pub fn prpc_endpoint(&self) -> String {
        format!("http://{}", self.prpc_addr)
    }

    /// See [`FakeServicesServer::prpc_connections`].
    pub fn prpc_connections(&self) -> u64 {
        self.service.prpc_connections()
    }

    /// See [`FakeServicesServer::set_tokens`].
    pub fn set_tokens<T: Into<String>>(&self, tokens: impl IntoIterator<Item = T>) {
        self.service.set_tokens(tokens);
    }

    /// A lazily connected channel to it (clones share one connection; it
    /// reconnects after a restart).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A generated `ServicesClient` on [`FakeServer::channel`].
    pub fn client(&self) -> ServicesClient<Channel> {
        ServicesClient::new(self.channel())
    }

    /// A [`GrpcCoordinator`](coordinator_grpc::GrpcCoordinator) with default
    /// options (direct RPCs, default retry policy) on [`FakeServer::channel`].
    /// For other options build one on [`FakeServer::channel`] yourself.
    pub fn coordinator(&self) -> coordinator_grpc::GrpcCoordinator {
        coordinator_grpc::GrpcCoordinator::new(self.channel())
    }

    /// The service (state, knobs, counters) behind this server.
    pub fn service(&self) -> &FakeServicesServer {
        &self.service
    }

    /// See [`FakeServicesServer::register_prefix`].
    pub fn register_prefix(
        &self,
        project: &ProjectName,
        prefix: &StreamName,
        secret: &PrefixSecret,
        expires_in: Option<Duration>,
    ) {
        self.service
            .register_prefix(project, prefix, secret, expires_in);
    }

    /// See [`FakeServicesServer::new_prefix`].
    ///
    /// # Panics
    ///
    /// If the operating system's random source fails.
    pub fn new_prefix(&self, project: &ProjectName, prefix: &StreamName) -> PrefixSecret {
        self.service.new_prefix(project, prefix)
    }

    /// See [`FakeServicesServer::calls`].
    pub fn calls(&self) -> CallCounts {
        self.service.calls()
    }

    /// See [`FakeServicesServer::wait_calls`].
    pub async fn wait_calls(&self, done: impl FnMut(&CallCounts) -> bool) {
        self.service.wait_calls(done).await;
    }

    /// See [`FakeServicesServer::faults`].
    pub fn faults(&self) -> &Faults {
        self.service.faults()
    }

    /// See [`FakeServicesServer::stream`].
    pub fn stream(&self, project: &ProjectName, path: &StreamPath) -> Option<StoredStream> {
        self.service.stream(project, path)
    }

    /// See [`FakeServicesServer::streams`].
    pub fn streams(&self) -> Vec<StoredStream> {
        self.service.streams()
    }

    /// See [`FakeServicesServer::dump_state`].
    pub fn dump_state(&self) -> StateDump {
        self.service.dump_state()
    }

    /// See [`FakeServicesServer::set_archived`].
    pub fn set_archived(&self, project: &ProjectName, path: &StreamPath, archived: bool) -> bool {
        self.service.set_archived(project, path, archived)
    }

    /// See [`FakeServicesServer::set_purged`].
    pub fn set_purged(&self, project: &ProjectName, path: &StreamPath, purged: bool) -> bool {
        self.service.set_purged(project, path, purged)
    }

    /// Stops serving (held and delayed calls answer `Unavailable`, open
    /// connections are closed), forgets every prefix and stream unless
    /// `keep_state`, and serves again on the same address. Knobs and counters are
    /// kept. Returns once the new listener is bound.
    ///
    /// # Panics
    ///
    /// If the address cannot be bound again; see [`FakeServer::try_restart`].
    pub async fn restart(&mut self, keep_state: bool) {
        if let Err(e) = self.try_restart(keep_state).await {
            panic!(
                "cannot restart the fake Coordinator server on {}: {e}",
                self.addr
            );
        }
    }

    /// Like [`FakeServer::restart`], failing if the address cannot be bound
    /// again (the server then stays stopped).
    pub async fn try_restart(&mut self, keep_state: bool) -> io::Result<()> {
        self.stop().await;
        if !keep_state {
            self.service.clear_state();
        }
        let listener = bind(self.addr)?;
        let prpc_listener = bind(self.prpc_addr)?;
        self.running = Some(Running::spawn(&self.service, listener, prpc_listener).await?);
        Ok(())
    }

    /// Stops serving and waits until every connection is closed.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        // Health checks see the server going away before its listeners do.
        running
            .health
            .set_not_serving::<ServicesServer<FakeServicesServer>>()
            .await;
        running
            .health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.service.faults().set_stopping(true);
        let _ = running.shutdown.send(());
        let (grpc, ()) = tokio::join!(running.task, running.prpc.stop());
        match grpc {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "fake server: serving failed"),
            Err(e) => tracing::warn!(error = %e, "fake server: serving task failed"),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.service.faults().set_stopping(true);
            let _ = running.shutdown.send(());
            running.prpc.signal();
        }
    }
}
