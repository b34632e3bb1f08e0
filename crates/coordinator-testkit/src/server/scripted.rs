//! `ScriptedServices`: a `logdog.Services` server whose answers are whatever the
//! test scripts, for checking what a client does with malformed answers.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use coordinator_grpc::proto::logdog::services_server::{Services, ServicesServer};
use coordinator_grpc::proto::logdog::{
    ArchiveStreamRequest, BatchRequest, BatchResponse, DeleteRequest, LeaseRequest, LeaseResponse,
    LoadStreamRequest, LoadStreamResponse, RegisterStreamRequest, RegisterStreamResponse,
    TerminateStreamRequest,
};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

type RegisterScript = dyn Fn(&RegisterStreamRequest) -> RegisterStreamResponse + Send + Sync;
type BatchScript = dyn Fn(&BatchRequest) -> BatchResponse + Send + Sync;

/// A `logdog.Services` implementation that answers RegisterStream and Batch with
/// the test's closures, as they are (no validation, no state), and every
/// TerminateStream with success. The other RPCs answer `Unimplemented`.
///
/// Unlike [`FakeServicesServer`](crate::FakeServicesServer) it keeps no server
/// semantics: it exists to send a client answers a real server never would
/// (missing state, bad secrets, wrong or duplicate batch indexes, ...).
///
/// ```
/// use coordinator_grpc::proto::logdog::{BatchResponse, RegisterStreamResponse};
/// use coordinator_testkit::ScriptedServices;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let scripted = ScriptedServices::new(
///     |_| RegisterStreamResponse::default(), // no state: a malformed answer
///     |_| BatchResponse::default(),          // no entries
/// );
/// let endpoint = scripted.clone().serve().await?;
/// assert!(endpoint.starts_with("http://127.0.0.1:"));
/// assert_eq!(scripted.batches(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ScriptedServices {
    register: Arc<RegisterScript>,
    batch: Arc<BatchScript>,
    batches: Arc<AtomicU64>,
}

impl ScriptedServices {
    /// A server answering RegisterStream with `register(request)` and Batch with
    /// `batch(request)`.
    pub fn new(
        register: impl Fn(&RegisterStreamRequest) -> RegisterStreamResponse + Send + Sync + 'static,
        batch: impl Fn(&BatchRequest) -> BatchResponse + Send + Sync + 'static,
    ) -> Self {
        ScriptedServices {
            register: Arc::new(register),
            batch: Arc::new(batch),
            batches: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many Batch RPCs it has received (shared by clones).
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::SeqCst)
    }

    /// Serves it on a free loopback port (with `TCP_NODELAY`) until the runtime
    /// shuts down; returns the endpoint URL (`http://127.0.0.1:PORT`).
    pub async fn serve(self) -> io::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ServicesServer::new(self))
                .serve_with_incoming(incoming),
        );
        Ok(format!("http://{addr}"))
    }
}

impl std::fmt::Debug for ScriptedServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedServices")
            .field("batches", &self.batches())
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl Services for ScriptedServices {
    async fn register_stream(
        &self,
        request: Request<RegisterStreamRequest>,
    ) -> Result<Response<RegisterStreamResponse>, Status> {
        Ok(Response::new((self.register)(request.get_ref())))
    }

    async fn load_stream(
        &self,
        _: Request<LoadStreamRequest>,
    ) -> Result<Response<LoadStreamResponse>, Status> {
        Err(Status::unimplemented("LoadStream is not scripted"))
    }

    async fn terminate_stream(
        &self,
        _: Request<TerminateStreamRequest>,
    ) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }

    async fn archive_stream(
        &self,
        _: Request<ArchiveStreamRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("ArchiveStream is not scripted"))
    }

    async fn batch(
        &self,
        request: Request<BatchRequest>,
    ) -> Result<Response<BatchResponse>, Status> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new((self.batch)(request.get_ref())))
    }

    async fn lease_archive_tasks(
        &self,
        _: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        Err(Status::unimplemented("LeaseArchiveTasks is not scripted"))
    }

    async fn delete_archive_tasks(
        &self,
        _: Request<DeleteRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("DeleteArchiveTasks is not scripted"))
    }
}
