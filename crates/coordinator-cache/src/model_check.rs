//! A model check of the per-entry state machine, with [shuttle]: the real
//! [`CachedCoordinator`] (its shard locks, entry slots, attempt ids, flights and
//! completion guards) driven by a few callers under schedules that shuttle
//! chooses, with every scheduling decision and every random choice replayable.
//!
//! The cache's code has scheduling points (see [`crate::interleave`]) before every
//! shard lock and inside a flight's resolve/wait protocol, a virtual clock the
//! model advances by exactly one expiration, and a spawner that runs inner calls
//! as shuttle tasks. The inner coordinator ([`Remote`]) answers each attempt with a
//! random outcome (success, success carrying a terminal index, transient or
//! permanent error), at once or after one or two polls.
//!
//! It checks, on every execution:
//!
//! - **single flight per entry**: when an inner call starts, the entry holds it as
//!   its pending attempt, no other attempt of the same operation is in flight for
//!   the same entry (generation), and none of that entry's attempts already ended
//!   with a kept answer (success or permanent error);
//! - **no hang**: every awaited caller gets an answer (a lost wake-up is a
//!   deadlock, which shuttle reports);
//! - **answers**: every answer is the outcome of an inner call for that key, a
//!   state's terminal index is its own or one the entry learned, and callers whose
//!   whole call fell within one expiration period get one same answer;
//! - **at rest** (every call done): the table's structure holds (see
//!   `Shard::check_structure`), no slot is pending, no flight is left, each
//!   slot holds what its generation's attempts decided (the success, the
//!   permanent error, or nothing after transient errors), the known terminal index
//!   comes from that generation, and a later call is answered from the entry
//!   without an inner call.
//!
//! Callers are cancelled at any point: some drop their call before polling it,
//! some after one poll.
//!
//! Bounded for CI: PCT with depth 3 (at most two forced preemptions) and a
//! random scheduler, each for a fixed number of executions from a fixed seed
//! (`SHUTTLE_RANDOM_SEED` overrides it).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use coordinator_api::{
    Coordinator, CoordinatorFuture, Error, LogStreamState, MessageIndex, RegisterRequest, StreamId,
    TerminateRequest,
};
use shuttle::rand::{Rng, thread_rng};
use shuttle::scheduler::{PctScheduler, RandomScheduler, Scheduler};
use shuttle::{Config, Runner};

use crate::CachedCoordinator;
use crate::table::{AttemptId, RegisterView, TerminateView};

/// The seams' model side (see [`crate::interleave`]).
pub(crate) mod seams {
    use std::cell::{Cell, RefCell};
    use std::future::Future;
    use std::sync::atomic::Ordering;

    /// The model running on this thread (all of a shuttle execution's tasks run
    /// on the thread that runs it).
    pub(super) struct Running {
        pub(super) now: u64,
        pub(super) spawned: Vec<shuttle::future::JoinHandle<()>>,
    }

    thread_local! {
        pub(super) static RUNNING: RefCell<Option<Running>> = const { RefCell::new(None) };
        static GENERATION: Cell<u64> = const { Cell::new(0) };
    }

    fn active() -> bool {
        RUNNING.with(|r| r.borrow().is_some())
    }

    pub(crate) fn point() {
        if active() {
            // A shuttle atomic's load is a plain scheduling point.
            shuttle::sync::atomic::AtomicBool::new(false).load(Ordering::SeqCst);
        }
    }

    pub(crate) fn now() -> Option<u64> {
        RUNNING.with(|r| r.borrow().as_ref().map(|r| r.now))
    }

    pub(crate) fn spawn<F>(call: F) -> Result<(), F>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if !active() {
            return Err(call);
        }
        let handle = shuttle::future::spawn(async move {
            call.await;
        });
        RUNNING.with(|r| {
            if let Some(r) = r.borrow_mut().as_mut() {
                r.spawned.push(handle);
            }
        });
        Ok(())
    }

    pub(crate) fn lock<T>(mutex: &parking_lot::Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
        if !active() {
            return mutex.lock();
        }
        point();
        // All tasks share one OS thread: blocking here would hang the model.
        mutex
            .try_lock()
            .expect("a shard lock was held across a scheduling point")
    }

    pub(crate) fn next_generation() -> u64 {
        GENERATION.with(|g| {
            g.set(g.get() + 1);
            g.get()
        })
    }
}

use seams::{RUNNING, Running};

/// The model's clock at the start of an execution (any value far from zero).
const START: u64 = 1 << 40;
/// The cache's expiration in the model; time advances by exactly this much.
const EXPIRATION: u64 = 1_000;
/// The terminal index a registered state may carry.
const REGISTERED_INDEX: u32 = 4;

fn epoch() -> u64 {
    (seams::now().expect("inside the model") - START) / EXPIRATION
}

fn advance_time() {
    seams::point();
    RUNNING.with(|r| {
        if let Some(r) = r.borrow_mut().as_mut() {
            r.now += EXPIRATION;
        }
    });
}

/// Waits for every inner call the cache spawned.
fn join_spawned() {
    while let Some(handle) = RUNNING.with(|r| r.borrow_mut().as_mut().and_then(|r| r.spawned.pop()))
    {
        shuttle::future::block_on(handle).expect("inner call task");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Register,
    Terminate,
}

/// How one attempt ended, as the inner coordinator answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Register: the state's serial and terminal index; terminate: the requested
    /// index.
    Ok {
        serial: u64,
        index: Option<MessageIndex>,
    },
    Transient {
        serial: u64,
    },
    Permanent {
        serial: u64,
    },
}

impl Outcome {
    fn is_kept(&self) -> bool {
        !matches!(self, Outcome::Transient { .. })
    }
}

/// The attempts of one entry generation for one operation.
#[derive(Debug, Default)]
struct Record {
    live: Option<AttemptId>,
    outcomes: Vec<Outcome>,
}

impl Record {
    fn oks(&self) -> impl Iterator<Item = (u64, Option<MessageIndex>)> + '_ {
        self.outcomes.iter().filter_map(|o| match o {
            Outcome::Ok { serial, index } => Some((*serial, *index)),
            _ => None,
        })
    }
}

/// What the model knows about every attempt, by entry generation.
#[derive(Debug, Default)]
struct Ghost {
    records: HashMap<(u64, Op), Record>,
    /// The path of each generation's entry.
    paths: HashMap<u64, String>,
    calls: usize,
    next_serial: u64,
}

impl Ghost {
    /// Records the start of attempt `id` of `op` for entry generation `generation`
    /// and returns its serial; panics if single flight or keeping is broken.
    fn start(&mut self, generation: u64, op: Op, id: AttemptId, path: &str) -> u64 {
        self.paths.insert(generation, path.to_owned());
        let record = self.records.entry((generation, op)).or_default();
        assert!(
            record.live.is_none(),
            "two {op:?} attempts in flight for one entry (generation {generation}): {:?} and {id}",
            record.live,
        );
        assert!(
            !record.outcomes.iter().any(Outcome::is_kept),
            "a {op:?} attempt started after the entry (generation {generation}) kept an answer: {:?}",
            record.outcomes,
        );
        record.live = Some(id);
        self.calls += 1;
        self.next_serial += 1;
        self.next_serial
    }

    fn finish(&mut self, generation: u64, op: Op, outcome: Outcome) {
        let record = self.records.entry((generation, op)).or_default();
        record.live = None;
        record.outcomes.push(outcome);
    }

    fn record(&self, generation: u64, op: Op) -> Option<&Record> {
        self.records.get(&(generation, op))
    }

    /// The terminal indexes entry generation `generation` may know: from its
    /// successful terminates and its registered states.
    fn known_candidates(&self, generation: u64) -> Vec<MessageIndex> {
        [Op::Terminate, Op::Register]
            .iter()
            .filter_map(|op| self.record(generation, *op))
            .flat_map(|r| r.oks().filter_map(|(_, index)| index))
            .collect()
    }

    /// The register outcome with `serial` for `path`, and its generation.
    fn register_outcome(&self, path: &str, serial: u64) -> Option<(u64, Outcome)> {
        self.records.iter().find_map(|((generation, op), record)| {
            if *op != Op::Register || self.paths.get(generation).map(String::as_str) != Some(path) {
                return None;
            }
            record
                .outcomes
                .iter()
                .find(|o| {
                    matches!(o, Outcome::Ok { serial: s, .. }
                        | Outcome::Transient { serial: s }
                        | Outcome::Permanent { serial: s } if *s == serial)
                })
                .map(|o| (*generation, *o))
        })
    }
}

/// A future that is pending `n` times (waking itself), then ready.
struct Pend(u8);

impl Future for Pend {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

type Cached = CachedCoordinator<Arc<Remote>>;

/// The inner coordinator: checks each attempt's start against the ghost and
/// answers it with a random outcome.
#[derive(Default)]
struct Remote {
    /// The cache in front of this remote (a cycle, broken at the end of each
    /// execution), to look at the entry an attempt starts on.
    cache: Mutex<Option<Cached>>,
    ghost: Mutex<Ghost>,
}

impl Remote {
    /// The entry an inner call is starting for. No scheduling point lies between
    /// the cache deciding to start an attempt and calling here, so the entry is
    /// as that decision left it.
    fn starting(
        &self,
        request_project: &coordinator_api::ProjectName,
        path: &coordinator_api::StreamPath,
    ) -> crate::table::EntryView {
        let cache = self.cache.lock().unwrap();
        cache
            .as_ref()
            .expect("attached")
            .view(request_project, path)
            .expect("an attempt starts on an entry in the table")
    }

    fn answer<'a, T: Send + 'a>(
        &'a self,
        generation: u64,
        op: Op,
        outcome: Outcome,
        result: T,
    ) -> CoordinatorFuture<'a, T> {
        let pends = thread_rng().gen_range(0..3u8);
        let finish = move || {
            self.ghost.lock().unwrap().finish(generation, op, outcome);
            result
        };
        if pends == 0 {
            return CoordinatorFuture::ready(finish());
        }
        CoordinatorFuture::new(async move {
            Pend(pends).await;
            finish()
        })
    }
}

fn transient(serial: u64) -> Error {
    Error::unavailable(format!("transient #{serial}"))
}

fn permanent(serial: u64) -> Error {
    Error::failed_precondition(format!("permanent #{serial}"))
}

/// The serial a [`Remote`] state or error carries.
fn serial_of_state(state: &LogStreamState) -> u64 {
    u64::from_str_radix(&state.id.as_str(), 16).expect("a model state's ID is its serial")
}

fn serial_of_error(error: &Error) -> u64 {
    let (_, serial) = error.message().split_once('#').expect("a model error");
    serial.parse().expect("a model error's serial")
}

impl Coordinator for Remote {
    fn register_stream<'a>(
        &'a self,
        request: &'a RegisterRequest,
        _desc: &'a [u8],
    ) -> CoordinatorFuture<'a, Result<Arc<LogStreamState>, Error>> {
        let view = self.starting(&request.project, &request.path);
        let RegisterView::Pending(id) = view.register else {
            panic!("a register call started on an entry that does not hold it: {view:?}");
        };
        let generation = view.generation;
        let serial =
            self.ghost
                .lock()
                .unwrap()
                .start(generation, Op::Register, id, request.path.as_str());
        let (outcome, result) = match thread_rng().gen_range(0..4u8) {
            choice @ (0 | 1) => {
                let index = (choice == 1).then(|| MessageIndex::from(REGISTERED_INDEX));
                let id: StreamId = format!("{serial:032x}").parse().expect("hex ID");
                let mut state = LogStreamState::from_request(request, id);
                state.terminal_index = index;
                (Outcome::Ok { serial, index }, Ok(Arc::new(state)))
            }
            2 => (Outcome::Transient { serial }, Err(transient(serial))),
            _ => (Outcome::Permanent { serial }, Err(permanent(serial))),
        };
        self.answer(generation, Op::Register, outcome, result)
    }

    fn terminate_stream<'a>(
        &'a self,
        request: &'a TerminateRequest,
    ) -> CoordinatorFuture<'a, Result<(), Error>> {
        let view = self.starting(&request.project, &request.path);
        let TerminateView::Pending(id) = view.terminate else {
            panic!("a terminate call started on an entry that does not hold it: {view:?}");
        };
        let generation = view.generation;
        let serial =
            self.ghost
                .lock()
                .unwrap()
                .start(generation, Op::Terminate, id, request.path.as_str());
        let (outcome, result) = match thread_rng().gen_range(0..4u8) {
            0 | 1 => (
                Outcome::Ok {
                    serial,
                    index: Some(request.terminal_index),
                },
                Ok(()),
            ),
            2 => (Outcome::Transient { serial }, Err(transient(serial))),
            _ => (Outcome::Permanent { serial }, Err(permanent(serial))),
        };
        self.answer(generation, Op::Terminate, outcome, result)
    }
}

/// What a caller does.
#[derive(Debug, Clone, Copy)]
enum CallOp {
    Register,
    /// Terminate at this index.
    Terminate(u32),
}

/// How a caller treats its call's future.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Await,
    /// Polls once, lets others run, then drops the future (cancelled mid-wait,
    /// unless it was answered at once).
    PollOnceThenDrop,
    /// Drops the future without polling it.
    DropUnpolled,
}

#[derive(Debug, Clone, Copy)]
struct Call {
    key: usize,
    op: CallOp,
    mode: Mode,
}

const fn register(key: usize, mode: Mode) -> Call {
    Call {
        key,
        op: CallOp::Register,
        mode,
    }
}

const fn terminate(key: usize, index: u32, mode: Mode) -> Call {
    Call {
        key,
        op: CallOp::Terminate(index),
        mode,
    }
}

/// One test: callers (each a sequence of calls on its own thread), the cache's
/// size, and whether time advances by one expiration at some point.
#[derive(Debug, Clone)]
struct Scenario {
    keys: usize,
    size: usize,
    advance_time: bool,
    callers: Vec<Vec<Call>>,
}

/// An answer a caller got.
#[derive(Debug)]
struct Answer {
    key: usize,
    /// Epochs (expiration periods) when the call was made and when it returned.
    epochs: (u64, u64),
    result: Result<Option<(u64, Option<MessageIndex>)>, Error>,
}

/// Polls `future` per `mode`; its output if it was awaited or answered at once.
fn drive<T>(mut future: CoordinatorFuture<'_, T>, mode: Mode) -> Option<T> {
    match mode {
        Mode::Await => Some(shuttle::future::block_on(future)),
        Mode::PollOnceThenDrop => {
            let polled = Pin::new(&mut future).poll(&mut Context::from_waker(Waker::noop()));
            seams::point();
            drop(future);
            match polled {
                Poll::Ready(value) => Some(value),
                Poll::Pending => None,
            }
        }
        Mode::DropUnpolled => {
            drop(future);
            None
        }
    }
}

fn request(key: usize) -> RegisterRequest {
    RegisterRequest::parse("model", &format!("p/+/k{key}"), &[9; 36], None).expect("valid")
}

fn terminate_request(key: usize, index: u32) -> TerminateRequest {
    let r = request(key);
    let state = LogStreamState::from_request(&r, StreamId::for_path(&r.path));
    TerminateRequest::for_state(&state, MessageIndex::from(index))
}

fn call(cache: &Cached, call: Call, answers: &Mutex<Vec<Answer>>) {
    let before = epoch();
    let result = match call.op {
        CallOp::Register => {
            let r = request(call.key);
            drive(cache.register_stream(&r, b"desc"), call.mode).map(|result| {
                result.map(|state| Some((serial_of_state(&state), state.terminal_index)))
            })
        }
        CallOp::Terminate(index) => {
            let t = terminate_request(call.key, index);
            drive(cache.terminate_stream(&t), call.mode).map(|result| result.map(|()| None))
        }
    };
    if let Some(result) = result {
        answers.lock().unwrap().push(Answer {
            key: call.key,
            epochs: (before, epoch()),
            result,
        });
    }
}

/// One execution of `scenario`.
fn execution(scenario: &Scenario) {
    RUNNING.with(|r| {
        *r.borrow_mut() = Some(Running {
            now: START,
            spawned: Vec::new(),
        })
    });
    let remote = Arc::new(Remote::default());
    let cache = crate::CacheBuilder::new()
        .size(scenario.size)
        .shards(1)
        .expiration(Duration::from_nanos(EXPIRATION))
        .build(Arc::clone(&remote));
    *remote.cache.lock().unwrap() = Some(cache.clone());
    let answers = Arc::new(Mutex::new(Vec::new()));

    let mut threads: Vec<_> = scenario
        .callers
        .iter()
        .cloned()
        .map(|calls| {
            let (cache, answers) = (cache.clone(), Arc::clone(&answers));
            shuttle::thread::spawn(move || {
                for c in calls {
                    call(&cache, c, &answers);
                }
            })
        })
        .collect();
    if scenario.advance_time {
        threads.push(shuttle::thread::spawn(advance_time));
    }
    for t in threads {
        t.join().expect("caller thread");
    }
    join_spawned();

    check_answers(scenario, &remote, &answers.lock().unwrap());
    check_at_rest(scenario, &cache, &remote);
    // Break the cache <-> remote cycle.
    drop(remote.cache.lock().unwrap().take());
    RUNNING.with(|r| *r.borrow_mut() = None);
}

fn check_answers(scenario: &Scenario, remote: &Remote, answers: &[Answer]) {
    let ghost = remote.ghost.lock().unwrap();
    // (key, epoch) -> the kept answer's serial seen by callers within that epoch.
    let mut kept: HashMap<(usize, u64), u64> = HashMap::new();
    for answer in answers {
        let path = request(answer.key).path;
        let serial = match &answer.result {
            Ok(None) => continue, // a terminate's success
            Ok(Some((serial, _))) => *serial,
            Err(error) => serial_of_error(error),
        };
        let Some((generation, outcome)) = ghost.register_outcome(path.as_str(), serial) else {
            // A terminate's error: from a terminate attempt of that key.
            let is_terminate = ghost.records.iter().any(|((g, op), r)| {
                *op == Op::Terminate
                    && ghost.paths.get(g).map(String::as_str) == Some(path.as_str())
                    && r.outcomes.iter().any(|o| {
                        matches!(o, Outcome::Transient { serial: s } | Outcome::Permanent { serial: s } if *s == serial)
                    })
            });
            assert!(is_terminate, "{answer:?} is no inner call's answer");
            continue;
        };
        match (&answer.result, outcome) {
            (Ok(Some((_, got))), Outcome::Ok { index, .. }) => {
                // The state's own index, or one the entry learned.
                assert!(
                    *got == index
                        || (index.is_none()
                            && got
                                .is_some_and(|i| ghost.known_candidates(generation).contains(&i))),
                    "{answer:?}: terminal index not the state's ({index:?}) nor a known one"
                );
            }
            (Err(error), Outcome::Transient { .. }) => assert!(error.is_transient()),
            (Err(error), Outcome::Permanent { .. }) => assert!(!error.is_transient()),
            (result, outcome) => panic!("{result:?} does not match the inner outcome {outcome:?}"),
        }
        // Callers whose whole call fell within one expiration period used one
        // entry generation (no eviction here), so they share its kept answer.
        let (before, after) = answer.epochs;
        if before == after && scenario.size >= scenario.keys && outcome.is_kept() {
            let first = *kept.entry((answer.key, before)).or_insert(serial);
            assert_eq!(
                first, serial,
                "two kept answers for key {} within epoch {before}",
                answer.key
            );
        }
    }
}

/// A call that must be answered from the entry once everything is at rest.
enum Final {
    /// Register on this key answers this (the serial and the terminal index).
    Register(usize, Result<(u64, Option<MessageIndex>), Error>),
    /// Terminate on this key succeeds.
    Terminate(usize),
}

fn check_at_rest(scenario: &Scenario, cache: &Cached, remote: &Remote) {
    assert_eq!(cache.flights(), 0, "a flight outlived its attempt");
    cache.check_structure();
    let mut finals = Vec::new();
    {
        let ghost = remote.ghost.lock().unwrap();
        for key in 0..scenario.keys {
            let r = request(key);
            let Some(view) = cache.view(&r.project, &r.path) else {
                continue; // evicted
            };
            let generation = view.generation;
            let empty = Record::default();
            let registers = ghost.record(generation, Op::Register).unwrap_or(&empty);
            let terminates = ghost.record(generation, Op::Terminate).unwrap_or(&empty);
            assert!(registers.live.is_none() && terminates.live.is_none());
            let candidates = ghost.known_candidates(generation);
            let known = match view.terminate {
                TerminateView::Pending(id) => {
                    panic!("key {key}: terminate slot still holds attempt {id} at rest")
                }
                TerminateView::Known(index) => {
                    assert!(
                        candidates.contains(&index),
                        "key {key}: known index {index} was never recorded ({candidates:?})"
                    );
                    Some(index)
                }
                TerminateView::Failed(ref error) => {
                    assert!(candidates.is_empty(), "key {key}: {candidates:?} not kept");
                    assert_eq!(
                        terminates.outcomes.last(),
                        Some(&Outcome::Permanent {
                            serial: serial_of_error(error)
                        })
                    );
                    None
                }
                TerminateView::Empty => {
                    assert!(candidates.is_empty(), "key {key}: {candidates:?} not kept");
                    assert!(terminates.outcomes.iter().all(|o| !o.is_kept()));
                    None
                }
            };
            let oks: Vec<_> = registers.oks().collect();
            match &view.register {
                RegisterView::Pending(id) => {
                    panic!("key {key}: register slot still holds attempt {id} at rest")
                }
                RegisterView::Ready(state) => {
                    assert_eq!(
                        oks.len(),
                        1,
                        "key {key}: one success per entry: {registers:?}"
                    );
                    let (serial, index) = oks[0];
                    assert_eq!(
                        serial_of_state(state),
                        serial,
                        "key {key}: the entry keeps another generation's answer"
                    );
                    assert!(state.terminal_index == index || state.terminal_index == known);
                    finals.push(Final::Register(key, Ok((serial, index.or(known)))));
                }
                RegisterView::Failed(error) => {
                    assert!(oks.is_empty());
                    assert_eq!(
                        registers.outcomes.last(),
                        Some(&Outcome::Permanent {
                            serial: serial_of_error(error)
                        }),
                        "key {key}: the entry keeps another generation's error"
                    );
                    finals.push(Final::Register(key, Err(error.clone())));
                }
                RegisterView::Empty => {
                    assert!(
                        registers.outcomes.iter().all(|o| !o.is_kept()),
                        "key {key}: a kept answer was dropped: {registers:?}"
                    );
                }
            }
            if known.is_some() {
                finals.push(Final::Terminate(key));
            }
        }
    }
    if scenario.advance_time {
        return; // the entries may have expired: later calls are misses
    }
    // Later calls are answered from the entry, at once and without an inner call.
    let calls = remote.ghost.lock().unwrap().calls;
    for expected in finals {
        match expected {
            Final::Terminate(key) => {
                // Whatever the index: known, so no call.
                let t = terminate_request(key, 9);
                let got = drive(cache.terminate_stream(&t), Mode::PollOnceThenDrop);
                assert!(matches!(got, Some(Ok(()))), "key {key}: {got:?}");
            }
            Final::Register(key, expected) => {
                let r = request(key);
                let got = drive(cache.register_stream(&r, b""), Mode::PollOnceThenDrop)
                    .expect("answered at once")
                    .map(|state| (serial_of_state(&state), state.terminal_index));
                assert_eq!(got, expected, "key {key}: the kept answer");
            }
        }
    }
    assert_eq!(
        remote.ghost.lock().unwrap().calls,
        calls,
        "a kept answer made an inner call"
    );
}

/// Runs `scenario` under PCT (depth 3) and under the random scheduler, each for
/// `executions` executions from a fixed seed.
fn check(scenario: Scenario, executions: usize) {
    let seed = 0x5eed_cafe;
    run(PctScheduler::new_from_seed(seed, 3, executions), &scenario);
    run(RandomScheduler::new_from_seed(seed, executions), &scenario);
}

fn run<S: Scheduler + 'static>(scheduler: S, scenario: &Scenario) {
    let scenario = scenario.clone();
    let mut config = Config::new();
    config.silence_warnings = true;
    Runner::new(scheduler, config).run(move || execution(&scenario));
}

use Mode::{Await, DropUnpolled, PollOnceThenDrop};

const EXECUTIONS: usize = 3_000;

#[test]
fn concurrent_registers_with_transient_resets_and_expiry() {
    check(
        Scenario {
            keys: 1,
            size: 16,
            advance_time: true,
            callers: vec![
                vec![register(0, Await), register(0, Await)],
                vec![register(0, Await)],
                vec![register(0, PollOnceThenDrop), register(0, Await)],
            ],
        },
        EXECUTIONS,
    );
}

#[test]
fn terminates_and_the_known_index_merge() {
    check(
        Scenario {
            keys: 1,
            size: 16,
            advance_time: false,
            callers: vec![
                vec![register(0, Await), terminate(0, 6, Await)],
                vec![terminate(0, 5, Await), register(0, Await)],
                vec![terminate(0, 5, PollOnceThenDrop), register(0, Await)],
            ],
        },
        EXECUTIONS,
    );
}

#[test]
fn terminates_and_registers_across_expiry() {
    check(
        Scenario {
            keys: 1,
            size: 16,
            advance_time: true,
            callers: vec![
                vec![terminate(0, 5, Await), register(0, Await)],
                vec![register(0, Await), terminate(0, 5, Await)],
            ],
        },
        EXECUTIONS,
    );
}

#[test]
fn cancelled_callers_never_fail_or_poison_the_call() {
    check(
        Scenario {
            keys: 1,
            size: 16,
            advance_time: false,
            callers: vec![
                vec![register(0, DropUnpolled), register(0, Await)],
                vec![register(0, PollOnceThenDrop)],
                vec![
                    register(0, PollOnceThenDrop),
                    terminate(0, 5, PollOnceThenDrop),
                ],
            ],
        },
        EXECUTIONS,
    );
}

#[test]
fn eviction_with_calls_in_flight() {
    check(
        Scenario {
            keys: 2,
            size: 1,
            advance_time: false,
            callers: vec![
                vec![register(0, Await), register(1, Await)],
                vec![register(1, Await), register(0, PollOnceThenDrop)],
                vec![register(0, Await)],
            ],
        },
        EXECUTIONS,
    );
}
