//! The scriptable in-memory [`FakeCoordinator`].
//!
//! A `FakeCoordinator` answers [`Coordinator`] calls from memory, and lets a test
//! watch and steer every call:
//!
//! - **counts and records**: [`FakeCoordinator::calls`] counts calls per
//!   [`Operation`] (started, completed, failed, cancelled), and
//!   [`registers`](FakeCoordinator::registers) /
//!   [`terminates`](FakeCoordinator::terminates) return the requests it saw;
//! - **a gate**: [`hold_all`](FakeCoordinator::hold_all) /
//!   [`hold_next`](FakeCoordinator::hold_next) keep calls in flight until
//!   [`release`](FakeCoordinator::release) (oldest first) /
//!   [`release_newest`](FakeCoordinator::release_newest) /
//!   [`release_all`](FakeCoordinator::release_all) / [`open`](FakeCoordinator::open); [`wait_for_held`](FakeCoordinator::wait_for_held)
//!   and [`wait_for_started`](FakeCoordinator::wait_for_started) wait for calls to
//!   arrive without sleeping;
//! - **scripted failures**: [`inject`](FakeCoordinator::inject) a [`Fault`] (the next
//!   N calls, one operation, or one stream fail with a chosen transient or permanent
//!   [`Error`]);
//! - **latency**: [`set_latency`](FakeCoordinator::set_latency) (a
//!   `tokio::time::sleep`, so paused time applies);
//! - **marked answers**: a returned state has `id = StreamId::for_path(path)` and,
//!   by default, the protocol version `"<requested>+fake.<serial>"`, where `serial`
//!   is the register call's 1-based start order ([`FakeCoordinator::serial_of`]), so
//!   a test can tell a remote answer from an echo of its request, and which call
//!   produced it;
//! - **real per-stream state**, optionally ([`FakeCoordinator::with_streams`]):
//!   idempotent registration, terminal index conflicts, secret checks.
//!
//! ```
//! use coordinator_api::{Coordinator, Error, RegisterRequest};
//! use coordinator_testkit::{FakeCoordinator, Fault, Operation};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let fake = FakeCoordinator::new();
//! fake.inject(Fault::new(Error::unavailable("flaky")).on(Operation::Register).times(1));
//!
//! let req = RegisterRequest::parse("chromium", "builds/1/+/stdout", &[7; 36], None)?;
//! assert!(fake.register_stream(&req, b"desc").await.unwrap_err().is_transient());
//! let state = fake.register_stream(&req, b"desc").await?;
//! assert_eq!(FakeCoordinator::serial_of(&state), Some(2));
//! assert_eq!(fake.calls(Operation::Register).started, 2);
//!
//! // Hold the next call at the gate, watch it arrive, then let it go.
//! fake.hold_next(1);
//! let call = tokio::spawn({
//!     let (fake, req) = (fake.clone(), req.clone());
//!     async move { fake.register_stream(&req, b"").await }
//! });
//! fake.wait_for_held(1).await;
//! assert_eq!(fake.release_all(), 1);
//! assert!(call.await.unwrap().is_ok());
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use coordinator_api::{
    Coordinator, CoordinatorFuture, Error, LogStreamState, ProjectName, RegisterRequest, StreamId,
    StreamPath, TerminateRequest,
};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// One of the two [`Coordinator`] operations, for counting and scripting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// [`Coordinator::register_stream`].
    Register,
    /// [`Coordinator::terminate_stream`].
    Terminate,
}

impl Operation {
    fn index(self) -> usize {
        match self {
            Operation::Register => 0,
            Operation::Terminate => 1,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Register => "register_stream",
            Operation::Terminate => "terminate_stream",
        })
    }
}

/// Call counts for one [`Operation`] (a snapshot from [`FakeCoordinator::calls`]).
///
/// A call *starts* when its future is first polled, and then either *completes*
/// (returns `Ok` or `Err`) or is *cancelled* (its future is dropped first).
/// `started == completed + cancelled + in flight`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationCounts {
    /// Calls that started.
    pub started: usize,
    /// Calls that returned (successfully or not).
    pub completed: usize,
    /// Calls that returned an error.
    pub failed: usize,
    /// Calls whose future was dropped before it returned.
    pub cancelled: usize,
}

/// A register request as the fake saw it: the request and its descriptor bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRegister {
    /// The request.
    pub request: RegisterRequest,
    /// The serialized descriptor passed with it.
    pub desc: Vec<u8>,
}

/// A scripted failure for [`FakeCoordinator::inject`]: which calls fail, and with
/// which [`Error`].
///
/// By default a fault matches every call of both operations, forever; narrow it
/// with [`on`](Fault::on), [`for_stream`](Fault::for_stream) and
/// [`times`](Fault::times). A call is matched against the faults in the order they
/// were injected when it *starts*, and the first matching fault with uses left
/// decides its outcome (the call still passes the gate and the latency first).
#[derive(Debug, Clone)]
pub struct Fault {
    error: Error,
    operation: Option<Operation>,
    stream: Option<(ProjectName, StreamPath)>,
    remaining: Option<usize>,
}

impl Fault {
    /// A fault that fails every call with `error` (transient or permanent, as
    /// [`Error::is_transient`] says).
    pub fn new(error: Error) -> Self {
        Fault {
            error,
            operation: None,
            stream: None,
            remaining: None,
        }
    }

    /// Only calls of `operation` match.
    pub fn on(mut self, operation: Operation) -> Self {
        self.operation = Some(operation);
        self
    }

    /// Only calls for the stream `(project, path)` match.
    pub fn for_stream(mut self, project: &ProjectName, path: &StreamPath) -> Self {
        self.stream = Some((project.clone(), path.clone()));
        self
    }

    /// The fault is used up after failing `n` calls.
    pub fn times(mut self, n: usize) -> Self {
        self.remaining = Some(n);
        self
    }

    fn matches(&self, op: Operation, project: &ProjectName, path: &StreamPath) -> bool {
        self.remaining != Some(0)
            && self.operation.is_none_or(|o| o == op)
            && self
                .stream
                .as_ref()
                .is_none_or(|(p, s)| p == project && s == path)
    }
}

/// A scriptable in-memory [`Coordinator`] for tests (see the [module
/// docs](crate::fake) for an overview and an example).
///
/// Cloning is cheap and every clone controls the same fake, so a test can keep one
/// handle and give another to the code under test. Settings can change at any time,
/// also while calls are in flight. Nothing here sleeps except the injected latency,
/// and all waiting (`wait_for_*`, the gate) is wake-up driven.
///
/// Call futures are cancel-safe: dropping one counts it as
/// [`cancelled`](OperationCounts::cancelled) and takes it off the gate.
#[derive(Clone, Default)]
pub struct FakeCoordinator {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken on every change a `wait_for_*` caller may be waiting for.
    changed: Notify,
    /// Woken when held calls are released.
    released: Notify,
}

struct State {
    counts: [OperationCounts; 2],
    registers: Vec<RecordedRegister>,
    terminates: Vec<TerminateRequest>,
    hold: Hold,
    next_ticket: u64,
    /// Tickets of the calls waiting at the gate, in arrival order.
    held: BTreeSet<u64>,
    faults: Vec<Fault>,
    latency: Duration,
    mark_states: bool,
    streams: Option<HashMap<(ProjectName, StreamPath), Arc<LogStreamState>>>,
}

impl Default for State {
    fn default() -> Self {
        State {
            counts: [OperationCounts::default(); 2],
            registers: Vec::new(),
            terminates: Vec::new(),
            hold: Hold::Off,
            next_ticket: 0,
            held: BTreeSet::new(),
            faults: Vec::new(),
            latency: Duration::ZERO,
            mark_states: true,
            streams: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Hold {
    Off,
    All,
    Next(usize),
}

/// The marker [`FakeCoordinator`] puts in the protocol version of the states it
/// creates: `"<requested version>+fake.<serial>"`.
const MARK: &str = "+fake.";

impl FakeCoordinator {
    /// A fake that answers every call successfully and keeps no per-stream state:
    /// each register answers a fresh state built from its request.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake that keeps real per-stream state, like the Coordinator service:
    ///
    /// - register: the first registration of `(project, path)` stores the state it
    ///   answers; a later one returns that stored state (the same `Arc`), whatever
    ///   the new request says, except that a different secret is a permanent
    ///   `InvalidArgument` error (streams of a prefix share its secret);
    /// - terminate: an unknown `(project, path)` or an ID that does not match is
    ///   `NotFound`; a wrong secret is `InvalidArgument`; the first terminate records
    ///   the index (the stored state gets it); terminating again at the same index
    ///   succeeds, at a different index is `FailedPrecondition`.
    pub fn with_streams() -> Self {
        let fake = Self::default();
        fake.shared.state.lock().streams = Some(HashMap::new());
        fake
    }

    // ----- Counting and recording -----

    /// Call counts for `operation`.
    pub fn calls(&self, operation: Operation) -> OperationCounts {
        self.shared.state.lock().counts[operation.index()]
    }

    /// Every register request seen so far, in start order.
    pub fn registers(&self) -> Vec<RecordedRegister> {
        self.shared.state.lock().registers.clone()
    }

    /// Every terminate request seen so far, in start order.
    pub fn terminates(&self) -> Vec<TerminateRequest> {
        self.shared.state.lock().terminates.clone()
    }

    /// The serial [`FakeCoordinator`] marked `state` with: the 1-based start order of
    /// the register call that created it, or `None` for a state it did not mark.
    pub fn serial_of(state: &LogStreamState) -> Option<u64> {
        let (_, serial) = state.proto_version.rsplit_once(MARK)?;
        serial.parse().ok()
    }

    /// Waits until at least `n` calls of `operation` have started.
    pub async fn wait_for_started(&self, operation: Operation, n: usize) {
        self.wait_until(|s| s.counts[operation.index()].started >= n)
            .await;
    }

    /// Waits until at least `n` calls of `operation` have completed.
    pub async fn wait_for_completed(&self, operation: Operation, n: usize) {
        self.wait_until(|s| s.counts[operation.index()].completed >= n)
            .await;
    }

    /// Waits until at least `n` calls are waiting at the gate.
    pub async fn wait_for_held(&self, n: usize) {
        self.wait_until(|s| s.held.len() >= n).await;
    }

    async fn wait_until(&self, mut done: impl FnMut(&State) -> bool) {
        loop {
            let changed = self.shared.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if done(&self.shared.state.lock()) {
                return;
            }
            changed.await;
        }
    }

    // ----- The gate -----

    /// From now on, every call waits at the gate (after it is counted and
    /// recorded, before its latency and answer) until released.
    pub fn hold_all(&self) {
        self.shared.state.lock().hold = Hold::All;
    }

    /// The next `n` calls to start wait at the gate (in addition to any already
    /// announced with `hold_next`; no effect while [`hold_all`](Self::hold_all) is
    /// on).
    pub fn hold_next(&self, n: usize) {
        let mut state = self.shared.state.lock();
        state.hold = match state.hold {
            Hold::All => Hold::All,
            Hold::Off => Hold::Next(n),
            Hold::Next(m) => Hold::Next(m.saturating_add(n)),
        };
    }

    /// New calls are no longer held; calls already waiting stay held.
    pub fn stop_holding(&self) {
        self.shared.state.lock().hold = Hold::Off;
    }

    /// The number of calls waiting at the gate now.
    pub fn held(&self) -> usize {
        self.shared.state.lock().held.len()
    }

    /// Lets the `n` longest-waiting held calls proceed; returns how many it
    /// released (fewer if fewer are waiting). Later calls are still held as before.
    pub fn release(&self, n: usize) -> usize {
        let released = {
            let mut state = self.shared.state.lock();
            let n = n.min(state.held.len());
            for _ in 0..n {
                state.held.pop_first();
            }
            n
        };
        self.shared.released.notify_waiters();
        self.shared.changed.notify_waiters();
        released
    }

    /// Lets the `n` most recently arrived held calls proceed (newest first);
    /// returns how many it released. For tests that need calls to finish in the
    /// reverse of their start order.
    pub fn release_newest(&self, n: usize) -> usize {
        let released = {
            let mut state = self.shared.state.lock();
            let n = n.min(state.held.len());
            for _ in 0..n {
                state.held.pop_last();
            }
            n
        };
        self.shared.released.notify_waiters();
        self.shared.changed.notify_waiters();
        released
    }

    /// Lets every call waiting at the gate proceed; returns how many. Later calls
    /// are still held as before.
    pub fn release_all(&self) -> usize {
        self.release(usize::MAX)
    }

    /// Opens the gate: stops holding new calls and releases every held call;
    /// returns how many were released.
    pub fn open(&self) -> usize {
        self.stop_holding();
        self.release_all()
    }

    // ----- Scripting -----

    /// Adds a scripted failure (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.shared.state.lock().faults.push(fault);
    }

    /// Shorthand: the next `n` calls of `operation` fail with `error`.
    pub fn fail_next(&self, operation: Operation, n: usize, error: Error) {
        self.inject(Fault::new(error).on(operation).times(n));
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.shared.state.lock().faults.clear();
    }

    /// Every call sleeps `latency` (with `tokio::time::sleep`) after the gate and
    /// before it answers. Zero (the default) means no sleep at all.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.state.lock().latency = latency;
    }

    /// Whether created states carry the `"+fake.<serial>"` protocol version mark
    /// (default: yes). Without it a state echoes the requested version.
    pub fn set_mark_states(&self, mark: bool) {
        self.shared.state.lock().mark_states = mark;
    }

    // ----- Per-stream state (with_streams) -----

    /// The stored state of a stream, for a fake made with
    /// [`with_streams`](Self::with_streams); `None` otherwise or if unknown.
    pub fn stream(&self, project: &ProjectName, path: &StreamPath) -> Option<Arc<LogStreamState>> {
        let state = self.shared.state.lock();
        state
            .streams
            .as_ref()?
            .get(&(project.clone(), path.clone()))
            .cloned()
    }

    /// Stores `stream` as if it had been registered (for example already
    /// terminated, archived or purged), turning on per-stream state if it was off.
    pub fn insert_stream(&self, stream: LogStreamState) -> Arc<LogStreamState> {
        let stream = Arc::new(stream);
        let key = (stream.project.clone(), stream.path.clone());
        self.shared
            .state
            .lock()
            .streams
            .get_or_insert_with(HashMap::new)
            .insert(key, Arc::clone(&stream));
        stream
    }

    // ----- The calls -----

    /// Counts, records and scripts a call that starts now.
    fn begin(
        &self,
        op: Operation,
        project: &ProjectName,
        path: &StreamPath,
        record: impl FnOnce(&mut State),
    ) -> Call<'_> {
        let mut state = self.shared.state.lock();
        let counts = &mut state.counts[op.index()];
        counts.started += 1;
        let serial = counts.started as u64;
        record(&mut state);
        let fault = state
            .faults
            .iter_mut()
            .find(|f| f.matches(op, project, path))
            .map(|f| {
                if let Some(n) = &mut f.remaining {
                    *n -= 1;
                }
                f.error.clone()
            });
        let hold = match state.hold {
            Hold::Off => false,
            Hold::All => true,
            Hold::Next(n) => {
                state.hold = if n > 1 { Hold::Next(n - 1) } else { Hold::Off };
                true
            }
        };
        let ticket = hold.then(|| {
            let t = state.next_ticket;
            state.next_ticket += 1;
            state.held.insert(t);
            t
        });
        let latency = state.latency;
        let mark = state.mark_states;
        drop(state);
        self.shared.changed.notify_waiters();
        Call {
            fake: self,
            op,
            serial,
            fault,
            ticket,
            latency,
            mark,
            finished: false,
        }
    }

    fn answer_register(
        &self,
        req: &RegisterRequest,
        serial: u64,
        mark: bool,
    ) -> Result<Arc<LogStreamState>, Error> {
        let fresh = || {
            let mut state = LogStreamState::from_request(req, StreamId::for_path(&req.path));
            if mark {
                state.proto_version = Cow::Owned(format!("{}{MARK}{serial}", req.proto_version));
            }
            Arc::new(state)
        };
        let mut state = self.shared.state.lock();
        let Some(streams) = &mut state.streams else {
            return Ok(fresh());
        };
        let key = (req.project.clone(), req.path.clone());
        if let Some(stored) = streams.get(&key) {
            if stored.secret != req.secret {
                return Err(Error::invalid_field(
                    "secret",
                    "does not match the secret the stream was registered with",
                ));
            }
            return Ok(Arc::clone(stored));
        }
        let stream = fresh();
        streams.insert(key, Arc::clone(&stream));
        Ok(stream)
    }

    fn answer_terminate(&self, req: &TerminateRequest) -> Result<(), Error> {
        let mut state = self.shared.state.lock();
        let Some(streams) = &mut state.streams else {
            return Ok(());
        };
        let key = (req.project.clone(), req.path.clone());
        let stored = match streams.get_mut(&key) {
            Some(stored) if stored.id == req.id => stored,
            _ => {
                return Err(Error::not_found(format!(
                    "no stream with ID {} in project {}",
                    req.id, req.project
                )));
            }
        };
        if stored.secret != req.secret {
            return Err(Error::invalid_field(
                "secret",
                "does not match the stream's secret",
            ));
        }
        match stored.terminal_index {
            Some(index) if index == req.terminal_index => Ok(()),
            Some(index) => Err(Error::failed_precondition(format!(
                "stream is already terminated at index {index}, not {}",
                req.terminal_index
            ))),
            None => {
                let mut updated = LogStreamState::clone(stored);
                updated.terminal_index = Some(req.terminal_index);
                *stored = Arc::new(updated);
                Ok(())
            }
        }
    }
}

impl fmt::Debug for FakeCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("FakeCoordinator")
            .field("register", &state.counts[0])
            .field("terminate", &state.counts[1])
            .field("held", &state.held.len())
            .field("faults", &state.faults.len())
            .field("latency", &state.latency)
            .field("streams", &state.streams.as_ref().map(HashMap::len))
            .finish()
    }
}

/// One call in progress: passes the gate and the latency, and counts itself as
/// completed or (if dropped first) cancelled.
struct Call<'f> {
    fake: &'f FakeCoordinator,
    op: Operation,
    serial: u64,
    fault: Option<Error>,
    ticket: Option<u64>,
    latency: Duration,
    mark: bool,
    finished: bool,
}

impl Call<'_> {
    async fn pass_gate_and_latency(&self) {
        if let Some(ticket) = self.ticket {
            let shared = &self.fake.shared;
            loop {
                let released = shared.released.notified();
                let mut released = std::pin::pin!(released);
                released.as_mut().enable();
                if !shared.state.lock().held.contains(&ticket) {
                    break;
                }
                released.await;
            }
        }
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    fn finish<T>(mut self, result: Result<T, Error>) -> Result<T, Error> {
        self.finished = true;
        {
            let mut state = self.fake.shared.state.lock();
            let counts = &mut state.counts[self.op.index()];
            counts.completed += 1;
            counts.failed += usize::from(result.is_err());
        }
        self.fake.shared.changed.notify_waiters();
        result
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        {
            let mut state = self.fake.shared.state.lock();
            state.counts[self.op.index()].cancelled += 1;
            if let Some(ticket) = self.ticket {
                state.held.remove(&ticket);
            }
        }
        self.fake.shared.changed.notify_waiters();
    }
}

impl Coordinator for FakeCoordinator {
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        CoordinatorFuture::new(async move {
            let call = self.begin(Operation::Register, &request.project, &request.path, |s| {
                s.registers.push(RecordedRegister {
                    request: request.clone(),
                    desc: desc.to_vec(),
                });
            });
            call.pass_gate_and_latency().await;
            let result = match &call.fault {
                Some(error) => Err(error.clone()),
                None => self.answer_register(request, call.serial, call.mark),
            };
            call.finish(result)
        })
    }

    fn terminate_stream<'a>(
        &'a self,
        request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        CoordinatorFuture::new(async move {
            let call = self.begin(Operation::Terminate, &request.project, &request.path, |s| {
                s.terminates.push(request.clone());
            });
            call.pass_gate_and_latency().await;
            let result = match &call.fault {
                Some(error) => Err(error.clone()),
                None => self.answer_terminate(request),
            };
            call.finish(result)
        })
    }
}
