//! [`BatchingClient`]: queues individual calls and sends them together through
//! the `Batch` RPC, as LogDog's production collector does.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coordinator_api::{CoordinatorFuture, Error};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use crate::BuildError;
use crate::client::{CallOptions, ServicesClient, ServicesFuture, SharedClient};
use crate::convert::{bad_response, error_from_wire};
use crate::panic::CatchPanic;
use crate::proto::logdog as proto;
use proto::batch_request::entry::Value as RequestValue;
use proto::batch_response::entry::Value as AnswerValue;

/// When a [`BatchingClient`] sends a batch.
///
/// A batch goes out as soon as the queue holds `max_entries` entries, when the
/// oldest queued entry has waited `max_delay`, or when adding an entry would
/// take the encoded request past `max_bytes` (the entries queued before it go
/// out; an entry larger than `max_bytes` on its own goes alone).
///
/// ```
/// use std::time::Duration;
/// use coordinator_services::BatchOptions;
///
/// // Low latency: a few milliseconds of batching instead of LogDog's 1 s.
/// let options = BatchOptions::default().with_max_delay(Duration::from_millis(5));
/// assert_eq!(options.max_entries, 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct BatchOptions {
    /// Count threshold: the most entries in one batch. Default 20 (LogDog's);
    /// 0 is treated as 1.
    pub max_entries: usize,
    /// Delay threshold: how long the oldest queued entry may wait. Default 1 s,
    /// for parity with LogDog's collector, which favours fewer RPCs over
    /// latency; a few milliseconds suits low-latency use.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_delay: Duration,
    /// Byte threshold: the largest encoded `BatchRequest`, counted with prost's
    /// `encoded_len`. Default 31 MiB: the Coordinator's 32 MiB request limit
    /// minus headroom for headers and framing.
    pub max_bytes: usize,
    /// How many times an entry the server left unanswered is re-queued before
    /// its caller gets a transient `Unavailable` error. Default 3.
    pub max_requeues: u32,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_entries: 20,
            max_delay: Duration::from_secs(1),
            max_bytes: 31 * 1024 * 1024,
            max_requeues: 3,
        }
    }
}

impl BatchOptions {
    /// The same options with a count threshold of `max_entries`.
    pub fn with_max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// The same options with a delay threshold of `max_delay`.
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// The same options with a byte threshold of `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The same options with at most `max_requeues` re-queues per entry.
    pub fn with_max_requeues(mut self, max_requeues: u32) -> Self {
        self.max_requeues = max_requeues;
        self
    }
}

/// A snapshot of a [`BatchingClient`]'s counters (since it was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchStats {
    /// `Batch` RPCs sent.
    pub batches_sent: u64,
    /// Entries sent, summed over all batches (a re-queued entry counts again).
    pub entries_sent: u64,
    /// The most entries sent in one batch.
    pub largest_batch: u64,
    /// Entries the server left unanswered that were queued again.
    pub requeued_entries: u64,
    /// Batches whose RPC failed, or whose answer was malformed as a whole (no
    /// entries, or more entries than the batch).
    pub failed_batches: u64,
    /// Answers the server sent that were ignored: an index out of range or
    /// answered twice (logged once per batch).
    pub ignored_answers: u64,
    /// Entries dropped before sending because their caller had gone away.
    pub abandoned_entries: u64,
}

impl BatchStats {
    /// Mean entries per batch (0 before the first batch).
    pub fn mean_entries_per_batch(&self) -> f64 {
        if self.batches_sent == 0 {
            0.0
        } else {
            self.entries_sent as f64 / self.batches_sent as f64
        }
    }
}

#[derive(Default)]
struct Counters {
    batches_sent: AtomicU64,
    entries_sent: AtomicU64,
    largest_batch: AtomicU64,
    requeued_entries: AtomicU64,
    failed_batches: AtomicU64,
    ignored_answers: AtomicU64,
    abandoned_entries: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> BatchStats {
        BatchStats {
            batches_sent: self.batches_sent.load(Ordering::Relaxed),
            entries_sent: self.entries_sent.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            requeued_entries: self.requeued_entries.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            ignored_answers: self.ignored_answers.load(Ordering::Relaxed),
            abandoned_entries: self.abandoned_entries.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// Queues individual RegisterStream and TerminateStream calls and sends them
/// together as `Batch` RPCs through any [`ServicesClient`] (see
/// [`BatchOptions`] for when a batch goes out). It is itself a
/// [`ServicesClient`] (its `batch` and `load_stream` go straight through);
/// wrap it in a [`ServicesCoordinator`](crate::ServicesCoordinator) for the
/// collector's [`Coordinator`](coordinator_api::Coordinator) interface.
///
/// - Each caller awaits its own entry's answer, matched by index (answers may
///   come in any order). A per-entry error keeps its code and transient flag.
/// - An entry the server left unanswered is queued again for the next batch
///   (its delay counts from the re-queue), at most
///   [`max_requeues`](BatchOptions::max_requeues) times, then fails with a
///   transient `Unavailable` error. Answers with an out-of-range or repeated
///   index are ignored, counted ([`BatchStats::ignored_answers`]) and logged
///   once per batch.
/// - A failed `Batch` RPC fails every entry of that batch with its error
///   (transient per its code). An answer with no entries, or with more entries
///   than the batch, is malformed: a transient `Internal` error for every
///   entry. Each `Batch` call asks the transport to refuse a response larger
///   than the batch can legitimately be answered with
///   ([`response_size_limit`]), so a hostile answer cannot take more memory or
///   decoding time than that. A panic in the transport is a transient
///   `Internal` error for the batch's entries. Nothing the server sends causes
///   a panic.
/// - Cancel-safe: a caller that goes away does not disturb the batch; its entry
///   is dropped if not yet sent, and its answer is discarded otherwise.
/// - [`flush`](Self::flush) sends what is queued without waiting for the
///   thresholds and waits for all outstanding batches. [`close`](Self::close)
///   flushes and stops accepting calls (later calls fail with a transient
///   `Unavailable` error). Dropping the last clone flushes in the background.
///
/// One attempt per entry: it does not retry failures. Put a
/// [`Retry`](crate::Retry) above it (as [`ServicesStack`](crate::ServicesStack)
/// does) for retries. Clones share one queue.
///
/// ```no_run
/// use coordinator_services::{BatchOptions, BatchingClient, ServicesClient, ServicesCoordinator};
///
/// # fn any_transport() -> std::sync::Arc<dyn ServicesClient> { unimplemented!() }
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = any_transport(); // a gRPC or pRPC client, or your own
/// let batching = BatchingClient::new(transport, BatchOptions::default())?;
/// let coordinator = ServicesCoordinator::new(batching.clone());
/// # let _ = coordinator;
/// batching.close().await; // sends what is queued
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BatchingClient {
    commands: mpsc::UnboundedSender<Command>,
    counters: Arc<Counters>,
    options: BatchOptions,
    /// The client batches are sent through (also for `batch` and
    /// `load_stream` calls made on this client).
    inner: SharedClient,
}

impl fmt::Debug for BatchingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchingClient")
            .field("options", &self.options)
            .field("stats", &self.stats())
            .field("closed", &self.commands.is_closed())
            .finish()
    }
}

/// The most bytes a `Batch` response may take for a batch of `entries`
/// entries: what the batch can legitimately be answered with. An answer is at
/// most a RegisterStream response (about 150 bytes) or an error whose message
/// is kept to [`MAX_ERROR_MESSAGE`](crate::convert::MAX_ERROR_MESSAGE) bytes, so
/// each entry is allowed that plus 512 bytes, and the response one entry more
/// for framing.
pub fn response_size_limit(entries: usize) -> usize {
    const PER_ENTRY: usize = crate::convert::MAX_ERROR_MESSAGE + 512;
    entries.saturating_add(1).saturating_mul(PER_ENTRY)
}

impl BatchingClient {
    /// A batching client that sends its batches through `inner`.
    ///
    /// Spawns the queue's worker task on the current Tokio runtime: errors with
    /// [`BuildError::NoRuntime`] outside one.
    pub fn new(
        inner: impl ServicesClient + 'static,
        options: BatchOptions,
    ) -> Result<BatchingClient, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime {
            what: "a batching client",
        })?;
        let inner: SharedClient = Arc::new(inner);
        let (commands, receiver) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let options = BatchOptions {
            max_entries: options.max_entries.max(1),
            ..options
        };
        let worker = Worker {
            commands: receiver,
            accepting: true,
            transport: inner.clone(),
            options,
            counters: counters.clone(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: JoinSet::new(),
            flush_waiters: Vec::new(),
            close_waiters: Vec::new(),
        };
        runtime.spawn(worker.run());
        Ok(BatchingClient {
            commands,
            counters,
            options,
            inner,
        })
    }

    /// The client's thresholds.
    pub fn options(&self) -> &BatchOptions {
        &self.options
    }

    /// A snapshot of the counters: batches sent, entries per batch, re-queued
    /// entries, failed batches, ignored answers, abandoned entries.
    pub fn stats(&self) -> BatchStats {
        self.counters.snapshot()
    }

    /// Sends what is queued now and waits until no entry is queued and no batch
    /// is in flight (re-queued entries included; entries queued meanwhile are
    /// sent at once too). Returns at once if the client is closed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).is_ok() {
            // An error means the worker stopped: nothing is left to wait for.
            let _ = wait.await;
        }
    }

    /// Flushes, then stops the client: calls from now on (from any clone) fail
    /// with a transient `Unavailable` error. Calls already made are answered.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Close(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// True once the client is closed (by [`close`](Self::close)) and its
    /// worker has stopped.
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }

    async fn submit(&self, kind: Kind, value: RequestValue) -> Reply {
        let entry = proto::batch_request::Entry { value: Some(value) };
        let len = entry.encoded_len();
        // The entry's share of the BatchRequest: tag, length prefix, body.
        let size = 1 + prost::length_delimiter_len(len) + len;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            entry,
            kind,
            size,
            reply,
            requeues: 0,
            queued_at: None,
        };
        self.commands
            .send(Command::Entry(pending))
            .map_err(|_| Error::unavailable("the batching client is closed"))?;
        answer.await.unwrap_or_else(|_| {
            Err(Error::unavailable(
                "the entry's batch ended without answering it: its task was cancelled, \
                 or the runtime running the batching client shut down",
            ))
        })
    }
}

impl ServicesClient for BatchingClient {
    /// Queues the request as an entry of the next batch and returns the
    /// server's answer to it.
    fn register_stream<'a>(
        &'a self,
        _options: CallOptions,
        request: &'a proto::RegisterStreamRequest,
    ) -> ServicesFuture<'a, proto::RegisterStreamResponse> {
        CoordinatorFuture::new(async move {
            let answer = self
                .submit(
                    Kind::Register,
                    RequestValue::RegisterStream(request.clone()),
                )
                .await?;
            answer.ok_or_else(|| bad_response("resp", "no RegisterStream response"))
        })
    }

    /// Queues the request as an entry of the next batch and waits for its
    /// answer.
    fn terminate_stream<'a>(
        &'a self,
        _options: CallOptions,
        request: &'a proto::TerminateStreamRequest,
    ) -> ServicesFuture<'a, ()> {
        CoordinatorFuture::new(async move {
            self.submit(
                Kind::Terminate,
                RequestValue::TerminateStream(request.clone()),
            )
            .await
            .map(drop)
        })
    }

    /// Sent as it is through the inner client (not queued).
    fn batch<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::BatchRequest,
    ) -> ServicesFuture<'a, proto::BatchResponse> {
        self.inner.batch(options, request)
    }

    /// Sent as it is through the inner client (not queued).
    fn load_stream<'a>(
        &'a self,
        options: CallOptions,
        request: &'a proto::LoadStreamRequest,
    ) -> ServicesFuture<'a, proto::LoadStreamResponse> {
        self.inner.load_stream(options, request)
    }
}

/// The kind of a request entry in a batch: what answer it expects.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A RegisterStream entry: answered by a RegisterStream response or an error.
    Register,
    /// A TerminateStream entry: answered by no value (success) or an error.
    Terminate,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Register => "RegisterStream",
            Kind::Terminate => "TerminateStream",
        })
    }
}

/// A register entry's answer is its response; a terminate entry's is `None`.
type Reply = Result<Option<proto::RegisterStreamResponse>, Error>;

struct Pending {
    entry: proto::batch_request::Entry,
    kind: Kind,
    /// The entry's share of the encoded BatchRequest, in bytes.
    size: usize,
    reply: oneshot::Sender<Reply>,
    requeues: u32,
    /// When the worker queued it (last re-queue included).
    queued_at: Option<Instant>,
}

impl Pending {
    /// Answers the caller from the server's answer for this entry. A caller that
    /// has gone away is ignored.
    fn answer(self, reply: Reply) {
        let _ = self.reply.send(reply);
    }

    fn fail(self, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

/// The reply for an entry of `kind` from the server's answer `value` for it.
fn reply_for(kind: Kind, value: Option<AnswerValue>) -> Reply {
    match (kind, value) {
        (_, Some(AnswerValue::Err(error))) => Err(error_from_wire(&error)),
        (Kind::Register, Some(AnswerValue::RegisterStream(response))) => Ok(Some(response)),
        (Kind::Terminate, None) => Ok(None),
        (Kind::Register, None) => Err(bad_response(
            "resp.value",
            "no answer for a RegisterStream entry",
        )),
        (kind, Some(other)) => Err(bad_response(
            "resp.value",
            format_args!("{} answer for a {kind} entry", answer_name(&other)),
        )),
    }
}

/// How a `Batch` response settles one entry of the request it answers.
#[doc(hidden)]
#[derive(Debug)]
pub enum EntryOutcome {
    /// The entry's answer: a RegisterStream entry's response, `None` for a
    /// TerminateStream entry's success, or the entry's error.
    Answered(Reply),
    /// The server did not answer the entry: it is re-queued (or failed once
    /// its re-queues are used up).
    Unanswered,
}

/// The outcomes of one `Batch` response, and how many answers were ignored.
#[doc(hidden)]
#[derive(Debug)]
pub struct Matched {
    /// One outcome per request entry, in request order.
    pub outcomes: Vec<EntryOutcome>,
    /// Answers ignored: out-of-range or repeated indexes.
    pub ignored: usize,
    /// True if the response as a whole was malformed (no entries, or more
    /// entries than the request): every entry then has the same transient
    /// error.
    pub malformed: bool,
}

/// Matches a `Batch` response to the entries of its request, where `kinds[i]`
/// is the kind of the request's entry `i`; returns one outcome per entry, in
/// request order. This is what the batching client does with every response.
///
/// An answer settles the entry at its index; answers whose index is out of
/// range or already answered are ignored and counted. A per-entry error is the
/// entry's error (transient per its flag or code); an answer of the wrong
/// kind, or a RegisterStream entry answered with no value, is a transient
/// `Internal` error (a malformed answer). A response with no entries at all,
/// or with more entries than the request, answers every entry with a transient
/// `Internal` error. The work is bounded by the request's size. Never panics.
#[doc(hidden)]
pub fn match_response(kinds: &[Kind], response: proto::BatchResponse) -> Matched {
    let len = kinds.len();
    let answers = response.resp.len();
    if answers == 0 || answers > len {
        let error = if answers == 0 {
            Error::internal(format!(
                "the Coordinator answered a batch of {len} entries with no entries"
            ))
        } else {
            bad_response(
                "resp",
                format_args!("{answers} answers for a batch of {len} entries"),
            )
        };
        return Matched {
            outcomes: kinds
                .iter()
                .map(|_| EntryOutcome::Answered(Err(error.clone())))
                .collect(),
            ignored: 0,
            malformed: true,
        };
    }
    let mut outcomes: Vec<EntryOutcome> = kinds.iter().map(|_| EntryOutcome::Unanswered).collect();
    let mut ignored = 0;
    for answer in response.resp {
        let slot = usize::try_from(answer.index)
            .ok()
            .and_then(|i| outcomes.get_mut(i).zip(kinds.get(i)));
        match slot {
            Some((slot @ EntryOutcome::Unanswered, &kind)) => {
                *slot = EntryOutcome::Answered(reply_for(kind, answer.value));
            }
            // Out of range, or answered already.
            _ => ignored += 1,
        }
    }
    Matched {
        outcomes,
        ignored,
        malformed: false,
    }
}

fn answer_name(value: &AnswerValue) -> &'static str {
    match value {
        AnswerValue::Err(_) => "an error",
        AnswerValue::RegisterStream(_) => "a RegisterStream",
        AnswerValue::LoadStream(_) => "a LoadStream",
    }
}

enum Command {
    Entry(Pending),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// The task that owns the queue: it batches entries, sends batches (each in its
/// own task) and re-queues what the server left unanswered.
struct Worker {
    commands: mpsc::UnboundedReceiver<Command>,
    /// False once every client handle is gone or the client was closed and the
    /// command queue is drained.
    accepting: bool,
    transport: SharedClient,
    options: BatchOptions,
    counters: Arc<Counters>,
    /// Queued entries, oldest first (`queued_at` never decreases front to back).
    queue: VecDeque<Pending>,
    queued_bytes: usize,
    /// Batches being sent; each returns the entries to re-queue.
    in_flight: JoinSet<Vec<Pending>>,
    flush_waiters: Vec<oneshot::Sender<()>>,
    close_waiters: Vec<oneshot::Sender<()>>,
}

impl Worker {
    async fn run(mut self) {
        loop {
            self.dispatch();
            let idle = self.queue.is_empty() && self.in_flight.is_empty();
            if idle {
                for waiter in self.flush_waiters.drain(..) {
                    let _ = waiter.send(());
                }
                if !self.accepting {
                    break;
                }
            }
            let due = self
                .queue
                .front()
                .and_then(|p| p.queued_at)
                .map(|at| at + self.options.max_delay);
            tokio::select! {
                joined = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Some(joined) = joined {
                        self.requeue(joined);
                    }
                }
                command = self.commands.recv(), if self.accepting => self.command(command),
                () = sleep_until(due), if due.is_some() => {}
            }
        }
        for waiter in self.close_waiters.drain(..) {
            let _ = waiter.send(());
        }
        tracing::debug!("batching client stopped");
    }

    fn command(&mut self, command: Option<Command>) {
        match command {
            Some(Command::Entry(pending)) => self.push(pending),
            Some(Command::Flush(waiter)) => self.flush_waiters.push(waiter),
            Some(Command::Close(waiter)) => {
                // Refuse new commands; those already sent are still received.
                self.commands.close();
                self.close_waiters.push(waiter);
            }
            None => self.accepting = false,
        }
    }

    fn push(&mut self, mut pending: Pending) {
        pending.queued_at = Some(Instant::now());
        self.queued_bytes = self.queued_bytes.saturating_add(pending.size);
        self.queue.push_back(pending);
    }

    /// Sends every batch that is due: full by count or bytes, the oldest entry
    /// waited long enough, or a flush or close is pending.
    fn dispatch(&mut self) {
        let urgent =
            !self.flush_waiters.is_empty() || !self.close_waiters.is_empty() || !self.accepting;
        loop {
            let Some(front) = self.queue.front() else {
                return;
            };
            let full = self.queue.len() >= self.options.max_entries
                || self.queued_bytes > self.options.max_bytes;
            let expired = front
                .queued_at
                .is_some_and(|at| at + self.options.max_delay <= Instant::now());
            if !(full || expired || urgent) {
                return;
            }
            self.send_one();
        }
    }

    /// Takes the next batch off the front of the queue and sends it in its own
    /// task.
    fn send_one(&mut self) {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while let Some(front) = self.queue.front() {
            if batch.len() >= self.options.max_entries
                || (!batch.is_empty() && bytes.saturating_add(front.size) > self.options.max_bytes)
            {
                break;
            }
            let Some(pending) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes = self.queued_bytes.saturating_sub(pending.size);
            if pending.reply.is_closed() {
                Counters::add(&self.counters.abandoned_entries, 1);
                continue;
            }
            bytes = bytes.saturating_add(pending.size);
            batch.push(pending);
        }
        if batch.is_empty() {
            return;
        }
        let transport = self.transport.clone();
        let counters = self.counters.clone();
        let max_requeues = self.options.max_requeues;
        self.in_flight
            .spawn(send_batch(transport, batch, counters, max_requeues));
    }

    fn requeue(&mut self, joined: Result<Vec<Pending>, JoinError>) {
        match joined {
            Ok(entries) => {
                for pending in entries {
                    self.push(pending);
                }
            }
            // The batch's task was cancelled (or panicked outside the
            // transport, whose panics are caught): its entries' reply senders
            // are gone, so their callers get an `Unavailable` error saying so.
            Err(error) => {
                tracing::error!(%error, "a batch task ended without answering its entries")
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends one batch and answers its entries; returns the entries to re-queue.
async fn send_batch(
    transport: SharedClient,
    mut batch: Vec<Pending>,
    counters: Arc<Counters>,
    max_requeues: u32,
) -> Vec<Pending> {
    // The entries move into the request and, after the call, back into the
    // entries the server left unanswered: nothing is copied.
    let mut request = proto::BatchRequest {
        req: batch
            .iter_mut()
            .map(|p| std::mem::take(&mut p.entry))
            .collect(),
    };
    let len = batch.len();
    Counters::add(&counters.batches_sent, 1);
    Counters::add(&counters.entries_sent, len);
    counters
        .largest_batch
        .fetch_max(u64::try_from(len).unwrap_or(u64::MAX), Ordering::Relaxed);
    tracing::trace!(entries = len, "sending a batch");

    let options = CallOptions::new().with_max_response_size(response_size_limit(len));
    let call = CatchPanic::call("the Batch call", || transport.batch(options, &request));
    let response = call.await;
    for (pending, entry) in batch.iter_mut().zip(request.req.drain(..)) {
        pending.entry = entry;
    }
    let response = match response {
        Ok(response) => response,
        Err(error) => {
            Counters::add(&counters.failed_batches, 1);
            tracing::warn!(%error, entries = len, "a Batch RPC failed");
            for pending in batch {
                pending.fail(error.clone());
            }
            return Vec::new();
        }
    };

    let kinds: Vec<Kind> = batch.iter().map(|p| p.kind).collect();
    let Matched {
        outcomes,
        ignored,
        malformed,
    } = match_response(&kinds, response);
    if malformed {
        Counters::add(&counters.failed_batches, 1);
        tracing::warn!(
            entries = len,
            "the Coordinator answered a batch with a malformed response"
        );
    }
    if ignored > 0 {
        Counters::add(&counters.ignored_answers, ignored);
        tracing::warn!(
            ignored,
            entries = len,
            "ignored batch answers with out-of-range or repeated indexes"
        );
    }
    let mut requeue = Vec::new();
    for (mut pending, outcome) in batch.into_iter().zip(outcomes) {
        if let EntryOutcome::Answered(reply) = outcome {
            pending.answer(reply);
        } else if pending.reply.is_closed() {
            Counters::add(&counters.abandoned_entries, 1);
        } else if pending.requeues >= max_requeues {
            let error = Error::unavailable(format!(
                "the Coordinator left the {} entry unanswered in {} batches",
                pending.kind,
                pending.requeues + 1
            ));
            pending.fail(error);
        } else {
            pending.requeues += 1;
            requeue.push(pending);
        }
    }
    if !requeue.is_empty() {
        Counters::add(&counters.requeued_entries, requeue.len());
        tracing::debug!(
            entries = requeue.len(),
            "re-queueing entries the Coordinator did not answer"
        );
    }
    requeue
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use coordinator_api::{
        Code, Coordinator, LogStreamState, RegisterRequest, StreamId, TerminateRequest,
    };
    use tokio::sync::Mutex;

    use super::*;
    use crate::ServicesCoordinator;
    use crate::convert::register_to_wire;

    /// A transport that hands every batch to the test, which answers it.
    struct ScriptedTransport {
        batches: mpsc::UnboundedSender<(proto::BatchRequest, oneshot::Sender<BatchResult>)>,
    }

    type BatchResult = Result<proto::BatchResponse, Error>;

    impl ServicesClient for ScriptedTransport {
        fn register_stream<'a>(
            &'a self,
            _: CallOptions,
            _: &'a proto::RegisterStreamRequest,
        ) -> ServicesFuture<'a, proto::RegisterStreamResponse> {
            unreachable!("the batching client sends only batches")
        }

        fn terminate_stream<'a>(
            &'a self,
            _: CallOptions,
            _: &'a proto::TerminateStreamRequest,
        ) -> ServicesFuture<'a, ()> {
            unreachable!("the batching client sends only batches")
        }

        fn batch<'a>(
            &'a self,
            options: CallOptions,
            request: &'a proto::BatchRequest,
        ) -> ServicesFuture<'a, proto::BatchResponse> {
            assert_eq!(
                options.max_response_size,
                Some(response_size_limit(request.req.len())),
                "every Batch call is bounded by what the batch can answer"
            );
            if request.req.iter().any(|e| desc_of(e).ends_with("/panic")) {
                panic!("transport bug");
            }
            let (tx, rx) = oneshot::channel();
            let sent = self.batches.send((request.clone(), tx));
            CoordinatorFuture::new(async move {
                if sent.is_err() {
                    return Err(Error::unavailable("test transport gone"));
                }
                rx.await
                    .unwrap_or_else(|_| Err(Error::unavailable("test dropped the batch")))
            })
        }
    }

    struct Harness {
        client: BatchingClient,
        batches:
            Mutex<mpsc::UnboundedReceiver<(proto::BatchRequest, oneshot::Sender<BatchResult>)>>,
    }

    impl Harness {
        fn new(options: BatchOptions) -> Harness {
            let (tx, rx) = mpsc::unbounded_channel();
            let client = BatchingClient::new(ScriptedTransport { batches: tx }, options).unwrap();
            Harness {
                client,
                batches: Mutex::new(rx),
            }
        }

        async fn next_batch(&self) -> (proto::BatchRequest, oneshot::Sender<BatchResult>) {
            self.batches.lock().await.recv().await.unwrap()
        }

        fn no_batch_yet(&self) -> bool {
            self.batches.try_lock().unwrap().try_recv().is_err()
        }
    }

    const SECRET: [u8; 36] = [3; 36];

    fn register(name: &str) -> RegisterRequest {
        RegisterRequest::parse("proj", &format!("pre/+/{name}"), &SECRET, None).unwrap()
    }

    fn terminate(name: &str) -> TerminateRequest {
        let path = format!("pre/+/{name}");
        let id = StreamId::for_path(&path.parse().unwrap());
        TerminateRequest::parse("proj", &path, &id.as_str(), &SECRET, 5).unwrap()
    }

    /// The server's answer to a register entry: ID from the descriptor bytes
    /// (the tests put the path there), state echoing the request.
    fn answer_register(
        index: usize,
        entry: &proto::batch_request::Entry,
    ) -> proto::batch_response::Entry {
        let Some(RequestValue::RegisterStream(req)) = &entry.value else {
            panic!("not a register entry: {entry:?}");
        };
        let path = String::from_utf8(req.desc.clone()).unwrap();
        proto::batch_response::Entry {
            index: index as i32,
            value: Some(AnswerValue::RegisterStream(proto::RegisterStreamResponse {
                id: StreamId::for_path(&path.parse().unwrap()).to_string(),
                state: Some(proto::InternalLogStreamState {
                    proto_version: req.proto_version.clone(),
                    secret: req.secret.clone(),
                    terminal_index: req.terminal_index,
                    archived: false,
                    purged: false,
                }),
                error: None,
            })),
        }
    }

    fn answer_all(request: &proto::BatchRequest) -> proto::BatchResponse {
        proto::BatchResponse {
            resp: request
                .req
                .iter()
                .enumerate()
                .map(|(i, e)| match &e.value {
                    Some(RequestValue::RegisterStream(_)) => answer_register(i, e),
                    _ => proto::batch_response::Entry {
                        index: i as i32,
                        value: None,
                    },
                })
                .collect(),
        }
    }

    fn desc_of(entry: &proto::batch_request::Entry) -> String {
        match &entry.value {
            Some(RequestValue::RegisterStream(r)) => String::from_utf8(r.desc.clone()).unwrap(),
            Some(RequestValue::TerminateStream(t)) => format!("terminate {}", t.id),
            other => panic!("unexpected entry {other:?}"),
        }
    }

    async fn call(client: &BatchingClient, name: &str) -> Result<Arc<LogStreamState>, Error> {
        let req = register(name);
        ServicesCoordinator::new(client)
            .register_stream(&req, req.path.as_str().as_bytes())
            .await
    }

    fn spawn_calls(
        client: &BatchingClient,
        names: impl IntoIterator<Item = String>,
    ) -> JoinSet<(String, Result<Arc<LogStreamState>, Error>)> {
        let mut set = JoinSet::new();
        for name in names {
            let client = client.clone();
            set.spawn(async move {
                let r = call(&client, &name).await;
                (name, r)
            });
        }
        set
    }

    /// Lets spawned tasks run until they are all blocked.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn count_threshold_sends_full_batches_at_once() {
        let h = Harness::new(BatchOptions::default());
        let mut calls = spawn_calls(&h.client, (0..45).map(|i| format!("s{i}")));
        settle().await;
        // 45 entries: two full batches go out without any time passing.
        let start = Instant::now();
        let (b1, r1) = h.next_batch().await;
        let (b2, r2) = h.next_batch().await;
        assert_eq!((b1.req.len(), b2.req.len()), (20, 20));
        assert!(h.no_batch_yet());
        // The remaining 5 go out after the delay threshold.
        let (b3, r3) = h.next_batch().await;
        assert_eq!(b3.req.len(), 5);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        for (b, r) in [(b1, r1), (b2, r2), (b3, r3)] {
            r.send(Ok(answer_all(&b))).unwrap();
        }
        while let Some(joined) = calls.join_next().await {
            let (name, result) = joined.unwrap();
            let state = result.unwrap();
            assert_eq!(state.path.as_str(), format!("pre/+/{name}"));
            assert_eq!(state.id, StreamId::for_path(&state.path));
        }
        let stats = h.client.stats();
        assert_eq!(stats.batches_sent, 3);
        assert_eq!(stats.entries_sent, 45);
        assert_eq!(stats.largest_batch, 20);
        assert_eq!(stats.mean_entries_per_batch(), 15.0);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_threshold_sends_a_lone_call() {
        let h = Harness::new(BatchOptions::default().with_max_delay(Duration::from_millis(250)));
        let start = Instant::now();
        let mut calls = spawn_calls(&h.client, ["lone".to_string()]);
        let (batch, reply) = h.next_batch().await;
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert_eq!(batch.req.len(), 1);
        reply.send(Ok(answer_all(&batch))).unwrap();
        let (_, result) = calls.join_next().await.unwrap().unwrap();
        assert!(result.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn byte_threshold_splits_before_passing_it() {
        // Each entry is ~100 bytes; allow two per batch.
        let probe = proto::batch_request::Entry {
            value: Some(RequestValue::RegisterStream(register_to_wire(
                &register("s0"),
                b"pre/+/s0",
            ))),
        };
        let size = 1 + prost::length_delimiter_len(probe.encoded_len()) + probe.encoded_len();
        let h = Harness::new(BatchOptions::default().with_max_bytes(2 * size + size / 2));
        let mut calls = spawn_calls(&h.client, (0..5).map(|i| format!("s{i}")));
        settle().await;
        let mut sizes = Vec::new();
        for _ in 0..2 {
            let (b, r) = h.next_batch().await;
            assert!(b.encoded_len() <= 2 * size + size / 2);
            sizes.push(b.req.len());
            r.send(Ok(answer_all(&b))).unwrap();
        }
        // The fifth waits for the delay (or more entries).
        assert!(h.no_batch_yet());
        let (b, r) = h.next_batch().await;
        sizes.push(b.req.len());
        r.send(Ok(answer_all(&b))).unwrap();
        assert_eq!(sizes, [2, 2, 1]);
        while let Some(j) = calls.join_next().await {
            assert!(j.unwrap().1.is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_oversized_entry_goes_alone() {
        let h = Harness::new(BatchOptions::default().with_max_bytes(10));
        let mut calls = spawn_calls(&h.client, ["a".to_string(), "b".to_string()]);
        settle().await;
        for _ in 0..2 {
            let (b, r) = h.next_batch().await;
            assert_eq!(b.req.len(), 1);
            r.send(Ok(answer_all(&b))).unwrap();
        }
        while let Some(j) = calls.join_next().await {
            assert!(j.unwrap().1.is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_out_of_order_reach_their_callers() {
        let h = Harness::new(BatchOptions::default().with_max_entries(4));
        let names: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
        let mut calls = spawn_calls(&h.client, names.clone());
        let (batch, reply) = h.next_batch().await;
        let mut response = answer_all(&batch);
        response.resp.reverse();
        response.resp.swap(0, 2);
        reply.send(Ok(response)).unwrap();
        while let Some(j) = calls.join_next().await {
            let (name, result) = j.unwrap();
            assert_eq!(result.unwrap().path.as_str(), format!("pre/+/{name}"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn per_entry_errors_keep_code_and_flag() {
        let h = Harness::new(BatchOptions::default().with_max_entries(3));
        let mut calls = spawn_calls(&h.client, (0..3).map(|i| format!("s{i}")));
        let (batch, reply) = h.next_batch().await;
        let mut response = answer_all(&batch);
        let mut expected = std::collections::HashMap::new();
        for (i, (code, transient)) in [
            (Code::NotFound, false),
            (Code::FailedPrecondition, true),
            (Code::Unavailable, false),
        ]
        .into_iter()
        .enumerate()
        {
            response.resp[i].value = Some(AnswerValue::Err(proto::Error {
                grpc_code: code.as_i32(),
                transient,
                msg: format!("entry {i}"),
            }));
            expected.insert(
                desc_of(&batch.req[i]),
                (code, transient || code.is_transient()),
            );
        }
        reply.send(Ok(response)).unwrap();
        while let Some(j) = calls.join_next().await {
            let (name, result) = j.unwrap();
            let e = result.unwrap_err();
            let (code, transient) = expected[&format!("pre/+/{name}")];
            assert_eq!(e.code(), code);
            assert_eq!(e.is_transient(), transient, "{e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_entries_are_requeued_then_fail_transiently() {
        let h = Harness::new(
            BatchOptions::default()
                .with_max_entries(3)
                .with_max_delay(Duration::from_millis(100))
                .with_max_requeues(2),
        );
        let mut calls = spawn_calls(&h.client, (0..3).map(|i| format!("s{i}")));
        // Batch 1: answer only the entry at index 1, plus junk indexes.
        let (b1, r1) = h.next_batch().await;
        let mut resp = answer_all(&b1);
        let answered = desc_of(&b1.req[1]);
        let keep = resp.resp.remove(1);
        let dup = keep.clone();
        let mut out_of_range = keep.clone();
        out_of_range.index = 3;
        let mut negative = keep.clone();
        negative.index = -1;
        // No more answers than entries (a longer answer is malformed as a whole).
        resp.resp = vec![keep, dup, out_of_range];
        r1.send(Ok(resp)).unwrap();
        // The two others are re-queued and go out after the delay.
        let start = Instant::now();
        let (b2, r2) = h.next_batch().await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(b2.req.len(), 2);
        let requeued: Vec<String> = b2.req.iter().map(desc_of).collect();
        assert!(!requeued.contains(&answered));
        // Batch 2: answer the first of them only; batch 3: nothing for the last.
        let mut resp = answer_all(&b2);
        resp.resp.truncate(1);
        resp.resp.push(negative);
        r2.send(Ok(resp)).unwrap();
        let (b3, r3) = h.next_batch().await;
        assert_eq!(b3.req.len(), 1);
        let last = desc_of(&b3.req[0]);
        r3.send(Ok(proto::BatchResponse {
            resp: vec![proto::batch_response::Entry {
                index: 7,
                value: None,
            }],
        }))
        .unwrap();
        // Unanswered a third time, after two re-queues (max_requeues = 2): fails.
        let mut ok = 0;
        while let Some(j) = calls.join_next().await {
            let (name, result) = j.unwrap();
            if format!("pre/+/{name}") == last {
                let e = result.unwrap_err();
                assert_eq!(e.code(), Code::Unavailable);
                assert!(e.is_transient());
                assert!(e.message().contains("unanswered in 3 batches"), "{e}");
            } else {
                result.unwrap();
                ok += 1;
            }
        }
        assert_eq!(ok, 2);
        assert_eq!(h.client.stats().requeued_entries, 2 + 1);
        // Batch 1: a repeated and an out-of-range index; batch 2: a negative
        // one; batch 3: one more out of range.
        assert_eq!(h.client.stats().ignored_answers, 2 + 1 + 1);
        assert_eq!(h.client.stats().batches_sent, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn empty_response_fails_every_entry_transiently() {
        let h = Harness::new(BatchOptions::default().with_max_entries(5));
        let mut calls = spawn_calls(&h.client, (0..5).map(|i| format!("s{i}")));
        let (_, reply) = h.next_batch().await;
        reply.send(Ok(proto::BatchResponse::default())).unwrap();
        while let Some(j) = calls.join_next().await {
            let e = j.unwrap().1.unwrap_err();
            assert_eq!(e.code(), Code::Internal);
            assert!(e.is_transient());
        }
        assert_eq!(h.client.stats().failed_batches, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn more_answers_than_entries_fail_every_entry_transiently() {
        let h = Harness::new(BatchOptions::default().with_max_entries(2));
        let mut calls = spawn_calls(&h.client, (0..2).map(|i| format!("s{i}")));
        let (batch, reply) = h.next_batch().await;
        let mut response = answer_all(&batch);
        // A flood of answers: only as many as the batch's entries are allowed.
        let extra = response.resp[0].clone();
        response.resp.extend(std::iter::repeat_n(extra, 10_000));
        reply.send(Ok(response)).unwrap();
        while let Some(j) = calls.join_next().await {
            let e = j.unwrap().1.unwrap_err();
            assert_eq!(e.code(), Code::Internal);
            assert!(e.is_transient());
            assert!(
                e.message().contains("10002 answers for a batch of 2"),
                "{e}"
            );
        }
        let stats = h.client.stats();
        assert_eq!((stats.failed_batches, stats.ignored_answers), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_transport_is_a_transient_error_that_says_so() {
        let h = Harness::new(BatchOptions::default().with_max_entries(2));
        let mut calls = spawn_calls(&h.client, ["s0".to_string(), "panic".to_string()]);
        while let Some(j) = calls.join_next().await {
            let e = j.unwrap().1.unwrap_err();
            assert_eq!(e.code(), Code::Internal);
            assert!(e.is_transient());
            assert!(e.message().contains("panicked: transport bug"), "{e}");
        }
        // The client still works.
        let mut calls = spawn_calls(&h.client, ["s1".to_string(), "s2".to_string()]);
        let (batch, reply) = h.next_batch().await;
        reply.send(Ok(answer_all(&batch))).unwrap();
        while let Some(j) = calls.join_next().await {
            j.unwrap().1.unwrap();
        }
    }

    #[test]
    fn response_limit_grows_with_the_batch_and_never_overflows() {
        assert!(response_size_limit(20) < 128 * 1024);
        // An entry answered with the longest kept error message fits.
        let longest = proto::BatchResponse {
            resp: vec![
                proto::batch_response::Entry {
                    index: 0,
                    value: Some(AnswerValue::Err(proto::Error {
                        grpc_code: 5,
                        transient: false,
                        msg: "m".repeat(crate::convert::MAX_ERROR_MESSAGE),
                    })),
                };
                20
            ],
        };
        assert!(longest.encoded_len() <= response_size_limit(20));
        assert!(response_size_limit(1) < response_size_limit(2));
        assert_eq!(response_size_limit(usize::MAX), usize::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_rpc_fails_every_entry_with_its_error() {
        for error in [
            Error::unavailable("down"),
            Error::new(Code::PermissionDenied, "no"),
        ] {
            let h = Harness::new(BatchOptions::default().with_max_entries(4));
            let mut calls = spawn_calls(&h.client, (0..4).map(|i| format!("s{i}")));
            let (_, reply) = h.next_batch().await;
            reply.send(Err(error.clone())).unwrap();
            while let Some(j) = calls.join_next().await {
                assert_eq!(j.unwrap().1.unwrap_err(), error);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn malformed_answers_are_errors_not_panics() {
        let h = Harness::new(BatchOptions::default().with_max_entries(4));
        let (a, b) = (register("a"), register("b"));
        let (t1, t2) = (terminate("c"), terminate("d"));
        let client = &ServicesCoordinator::new(&h.client);
        let calls = async {
            tokio::join!(
                client.register_stream(&a, b"pre/+/a"),
                client.register_stream(&b, b"pre/+/b"),
                client.terminate_stream(&t1),
                client.terminate_stream(&t2),
            )
        };
        let script = async {
            let (batch, reply) = h.next_batch().await;
            let kinds: Vec<bool> = batch
                .req
                .iter()
                .map(|e| matches!(e.value, Some(RequestValue::RegisterStream(_))))
                .collect();
            let register_response = |state: Option<proto::InternalLogStreamState>| {
                AnswerValue::RegisterStream(proto::RegisterStreamResponse {
                    id: "x".into(),
                    state,
                    error: None,
                })
            };
            let mut resp = Vec::new();
            let mut first_register = true;
            for (i, is_register) in kinds.into_iter().enumerate() {
                let value = match (is_register, first_register) {
                    // A register answered with nothing; another missing its state.
                    (true, true) => None,
                    (true, false) => Some(register_response(None)),
                    // A terminate answered with a RegisterStream response.
                    (false, _) if i % 2 == 0 => Some(register_response(None)),
                    (false, _) => Some(AnswerValue::LoadStream(Default::default())),
                };
                if is_register {
                    first_register = false;
                }
                resp.push(proto::batch_response::Entry {
                    index: i as i32,
                    value,
                });
            }
            reply.send(Ok(proto::BatchResponse { resp })).unwrap();
        };
        let ((ra, rb, rt1, rt2), ()) = tokio::join!(calls, script);
        for e in [
            ra.unwrap_err(),
            rb.unwrap_err(),
            rt1.unwrap_err(),
            rt2.unwrap_err(),
        ] {
            assert_eq!(e.code(), Code::Internal, "{e}");
            assert!(e.is_transient(), "a malformed answer is not kept: {e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn terminate_entries_succeed_with_no_value() {
        let h = Harness::new(BatchOptions::default().with_max_entries(1));
        let t = terminate("x");
        let coordinator = ServicesCoordinator::new(&h.client);
        let (result, ()) = tokio::join!(coordinator.terminate_stream(&t), async {
            let (batch, reply) = h.next_batch().await;
            let Some(RequestValue::TerminateStream(wire)) = &batch.req[0].value else {
                panic!("not a terminate entry");
            };
            assert_eq!(wire.terminal_index, 5);
            assert_eq!(wire.id, t.id.as_str());
            reply.send(Ok(answer_all(&batch))).unwrap();
        });
        result.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_caller_does_not_break_the_batch() {
        let h = Harness::new(BatchOptions::default().with_max_entries(4));
        // A caller that goes away before its entry is sent: the entry is skipped.
        let early = spawn_calls(&h.client, ["gone-early".to_string()]);
        settle().await;
        drop(early);
        settle().await;
        let mut calls = spawn_calls(&h.client, ["s0".to_string(), "s1".to_string()]);
        let mut late = spawn_calls(&h.client, ["gone-late".to_string()]);
        settle().await;
        let (batch, reply) = h.next_batch().await;
        let sent: Vec<String> = batch.req.iter().map(desc_of).collect();
        assert_eq!(sent, ["pre/+/s0", "pre/+/s1", "pre/+/gone-late"]);
        // A caller that goes away while its batch is in flight: the others still
        // get their answers.
        late.abort_all();
        assert!(late.join_next().await.unwrap().unwrap_err().is_cancelled());
        reply.send(Ok(answer_all(&batch))).unwrap();
        while let Some(j) = calls.join_next().await {
            let (name, result) = j.unwrap();
            assert_eq!(result.unwrap().path.as_str(), format!("pre/+/{name}"));
        }
        assert_eq!(h.client.stats().abandoned_entries, 1);
        assert_eq!(h.client.stats().batches_sent, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn flush_sends_now_and_waits_for_outstanding_batches() {
        let h = Harness::new(BatchOptions::default());
        let mut calls = spawn_calls(&h.client, (0..3).map(|i| format!("s{i}")));
        settle().await;
        assert!(h.no_batch_yet());
        let flushed = Arc::new(AtomicUsize::new(0));
        let flusher = {
            let client = h.client.clone();
            let flushed = flushed.clone();
            tokio::spawn(async move {
                client.flush().await;
                flushed.fetch_add(1, Ordering::SeqCst);
            })
        };
        let start = Instant::now();
        let (batch, reply) = h.next_batch().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(batch.req.len(), 3);
        settle().await;
        assert_eq!(
            flushed.load(Ordering::SeqCst),
            0,
            "flush returned before the batch was answered"
        );
        // Leave one entry unanswered: flush waits for its re-queue too.
        let mut resp = answer_all(&batch);
        resp.resp.pop();
        reply.send(Ok(resp)).unwrap();
        let (batch, reply) = h.next_batch().await;
        assert_eq!(batch.req.len(), 1);
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "re-queued entries are sent at once while flushing"
        );
        settle().await;
        assert_eq!(flushed.load(Ordering::SeqCst), 0);
        reply.send(Ok(answer_all(&batch))).unwrap();
        flusher.await.unwrap();
        while let Some(j) = calls.join_next().await {
            j.unwrap().1.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn close_flushes_and_refuses_later_calls() {
        let h = Harness::new(BatchOptions::default());
        let mut calls = spawn_calls(&h.client, (0..7).map(|i| format!("s{i}")));
        settle().await;
        let closer = {
            let client = h.client.clone();
            tokio::spawn(async move { client.close().await })
        };
        let (batch, reply) = h.next_batch().await;
        assert_eq!(batch.req.len(), 7);
        reply.send(Ok(answer_all(&batch))).unwrap();
        closer.await.unwrap();
        while let Some(j) = calls.join_next().await {
            j.unwrap().1.unwrap();
        }
        assert!(h.client.is_closed());
        let e = call(&h.client, "late").await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.is_transient());
        // Flushing a closed client returns at once.
        h.client.flush().await;
    }

    #[test]
    fn needs_a_runtime() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let e = BatchingClient::new(ScriptedTransport { batches: tx }, BatchOptions::default())
            .unwrap_err();
        assert!(matches!(e, BuildError::NoRuntime { .. }), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_last_handle_stops_the_worker() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let client =
            BatchingClient::new(ScriptedTransport { batches: tx }, BatchOptions::default())
                .unwrap();
        let req = register("a");
        let coordinator = ServicesCoordinator::new(&client);
        let (result, ()) = tokio::join!(coordinator.register_stream(&req, b"pre/+/a"), async {
            let (b, r) = rx.recv().await.unwrap();
            r.send(Ok(answer_all(&b))).unwrap();
        });
        result.unwrap();
        drop(coordinator);
        drop(client);
        // The worker drops the transport (and its sender) when it stops.
        assert!(rx.recv().await.is_none());
    }
}
