//! Fault injection knobs and call counters of the fake server.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coordinator_api::Code;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::metrics::CallMetrics;

/// One of the seven RPCs of `logdog.Services`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RpcKind {
    /// `RegisterStream`.
    RegisterStream,
    /// `LoadStream`.
    LoadStream,
    /// `TerminateStream`.
    TerminateStream,
    /// `ArchiveStream` (answered `Unimplemented`).
    ArchiveStream,
    /// `Batch`.
    Batch,
    /// `LeaseArchiveTasks` (answered `Unimplemented`).
    LeaseArchiveTasks,
    /// `DeleteArchiveTasks` (answered `Unimplemented`).
    DeleteArchiveTasks,
}

impl RpcKind {
    /// All kinds, in service definition order.
    pub const ALL: [RpcKind; 7] = [
        RpcKind::RegisterStream,
        RpcKind::LoadStream,
        RpcKind::TerminateStream,
        RpcKind::ArchiveStream,
        RpcKind::Batch,
        RpcKind::LeaseArchiveTasks,
        RpcKind::DeleteArchiveTasks,
    ];

    /// The method's name in `logdog.Services` (`"RegisterStream"`, ...), as in
    /// a pRPC URL and the `rpc` label of the server's metrics.
    pub const fn method(self) -> &'static str {
        match self {
            RpcKind::RegisterStream => "RegisterStream",
            RpcKind::LoadStream => "LoadStream",
            RpcKind::TerminateStream => "TerminateStream",
            RpcKind::ArchiveStream => "ArchiveStream",
            RpcKind::Batch => "Batch",
            RpcKind::LeaseArchiveTasks => "LeaseArchiveTasks",
            RpcKind::DeleteArchiveTasks => "DeleteArchiveTasks",
        }
    }
}

/// A snapshot of the calls a fake server has received.
///
/// Every RPC that reached the service is counted, including the ones that failed
/// (injected faults, invalid requests). Counts survive
/// [`restart`](super::FakeServer::restart) and [`Faults::clear`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CallCounts {
    /// `RegisterStream` RPCs.
    pub register: u64,
    /// `LoadStream` RPCs.
    pub load: u64,
    /// `TerminateStream` RPCs.
    pub terminate: u64,
    /// `ArchiveStream` RPCs.
    pub archive: u64,
    /// `Batch` RPCs.
    pub batch: u64,
    /// `LeaseArchiveTasks` RPCs.
    pub lease: u64,
    /// `DeleteArchiveTasks` RPCs.
    pub delete: u64,
    /// Entries received in `Batch` RPCs, of every kind (including batches that
    /// then failed with an injected fault).
    pub batch_entries: u64,
    /// Register entries received in `Batch` RPCs.
    pub batch_register_entries: u64,
    /// Terminate entries received in `Batch` RPCs.
    pub batch_terminate_entries: u64,
    /// Connections accepted by the pRPC listener (not RPCs: a client that
    /// reuses connections makes many calls on one).
    pub prpc_connections: u64,
    /// The RPCs above that arrived over pRPC (the rest came over gRPC).
    pub prpc_rpcs: u64,
    /// Faults the [`Faults`] knobs injected: failed calls, failed and dropped
    /// batch entries, and emptied batch responses (latency and holds are not
    /// counted).
    pub faults_injected: u64,
}

impl CallCounts {
    /// The count of RPCs of `kind`.
    pub fn of(&self, kind: RpcKind) -> u64 {
        match kind {
            RpcKind::RegisterStream => self.register,
            RpcKind::LoadStream => self.load,
            RpcKind::TerminateStream => self.terminate,
            RpcKind::ArchiveStream => self.archive,
            RpcKind::Batch => self.batch,
            RpcKind::LeaseArchiveTasks => self.lease,
            RpcKind::DeleteArchiveTasks => self.delete,
        }
    }

    /// RPCs of every kind.
    pub fn total_rpcs(&self) -> u64 {
        RpcKind::ALL.iter().map(|&k| self.of(k)).sum()
    }
}

/// The live counters behind [`CallCounts`].
pub(crate) struct Counters {
    rpcs: [AtomicU64; 7],
    batch_entries: AtomicU64,
    batch_register_entries: AtomicU64,
    batch_terminate_entries: AtomicU64,
    prpc_connections: AtomicU64,
    prpc_rpcs: AtomicU64,
    faults_injected: AtomicU64,
    /// The same counts as `metrics`.
    metrics: CallMetrics,
    /// Bumped after every count, for [`Counters::wait`].
    changed: watch::Sender<()>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rpcs: Default::default(),
            batch_entries: AtomicU64::new(0),
            batch_register_entries: AtomicU64::new(0),
            batch_terminate_entries: AtomicU64::new(0),
            prpc_connections: AtomicU64::new(0),
            prpc_rpcs: AtomicU64::new(0),
            faults_injected: AtomicU64::new(0),
            metrics: CallMetrics::register(),
            changed: watch::Sender::new(()),
        }
    }
}

/// What a batch entry is, for counting (the order of
/// [`CallMetrics::batch_entries`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Register = 0,
    Terminate = 1,
    Other = 2,
}

/// A kind of injected fault, for counting.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum InjectedFault {
    /// A call answered with an injected error.
    Call,
    /// A batch entry answered with an injected error.
    BatchEntry,
    /// A batch entry left out of its response.
    DroppedEntry,
    /// A batch response with no entries.
    EmptyBatch,
}

impl Counters {
    pub(crate) fn rpc(&self, kind: RpcKind) {
        self.rpcs[kind as usize].fetch_add(1, Ordering::SeqCst);
        self.metrics.rpcs[kind as usize].increment(1);
        self.changed.send_replace(());
    }

    /// Counts a connection accepted by the pRPC listener.
    pub(crate) fn prpc_connection(&self) {
        self.prpc_connections.fetch_add(1, Ordering::SeqCst);
        self.metrics.prpc_connections.increment(1);
        self.changed.send_replace(());
    }

    /// Counts an RPC that arrived over pRPC (besides its count by kind).
    pub(crate) fn prpc_rpc(&self) {
        self.prpc_rpcs.fetch_add(1, Ordering::SeqCst);
        self.metrics.prpc_rpcs.increment(1);
    }

    /// Counts `n` injected faults of one kind.
    pub(crate) fn faults_injected(&self, kind: InjectedFault, n: u64) {
        if n == 0 {
            return;
        }
        self.faults_injected.fetch_add(n, Ordering::SeqCst);
        let faults = &self.metrics.faults;
        match kind {
            InjectedFault::Call => &faults.call,
            InjectedFault::BatchEntry => &faults.batch_entry,
            InjectedFault::DroppedEntry => &faults.dropped_entry,
            InjectedFault::EmptyBatch => &faults.empty_batch,
        }
        .increment(n);
        self.changed.send_replace(());
    }

    pub(crate) fn prpc_connections(&self) -> u64 {
        self.prpc_connections.load(Ordering::SeqCst)
    }

    /// Counts the entries of one batch (before the batch RPC itself).
    pub(crate) fn batch_entries(&self, kinds: impl IntoIterator<Item = EntryKind>) {
        for kind in kinds {
            self.batch_entries.fetch_add(1, Ordering::SeqCst);
            self.metrics.batch_entries[kind as usize].increment(1);
            match kind {
                EntryKind::Register => &self.batch_register_entries,
                EntryKind::Terminate => &self.batch_terminate_entries,
                EntryKind::Other => continue,
            }
            .fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits until `done` holds for a snapshot. Cancel-safe.
    pub(crate) async fn wait(&self, mut done: impl FnMut(&CallCounts) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            rx.borrow_and_update();
            if done(&self.snapshot()) {
                return;
            }
            // The sender lives in `self`: the channel cannot close while we wait.
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    pub(crate) fn snapshot(&self) -> CallCounts {
        let rpc = |k: RpcKind| self.rpcs[k as usize].load(Ordering::SeqCst);
        CallCounts {
            register: rpc(RpcKind::RegisterStream),
            load: rpc(RpcKind::LoadStream),
            terminate: rpc(RpcKind::TerminateStream),
            archive: rpc(RpcKind::ArchiveStream),
            batch: rpc(RpcKind::Batch),
            lease: rpc(RpcKind::LeaseArchiveTasks),
            delete: rpc(RpcKind::DeleteArchiveTasks),
            batch_entries: self.batch_entries.load(Ordering::SeqCst),
            batch_register_entries: self.batch_register_entries.load(Ordering::SeqCst),
            batch_terminate_entries: self.batch_terminate_entries.load(Ordering::SeqCst),
            prpc_connections: self.prpc_connections(),
            prpc_rpcs: self.prpc_rpcs.load(Ordering::SeqCst),
            faults_injected: self.faults_injected.load(Ordering::SeqCst),
        }
    }
}

/// The order of the entries of a `Batch` response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BatchOrder {
    /// Request order (the default).
    #[default]
    Request,
    /// Reverse request order.
    Reversed,
    /// A permutation drawn from a generator seeded with `seed`; each batch
    /// draws the next permutation.
    Shuffled {
        /// The generator's seed.
        seed: u64,
    },
}

/// The shared fault-injection knobs of a fake server.
///
/// Every knob is thread-safe and takes effect for calls that arrive after it is
/// set. Decisions are made when a call arrives, in arrival order, so sequential
/// calls see a deterministic pattern; random decisions come from a generator
/// seeded by the test. [`Faults::clear`] resets every knob.
///
/// What counts as a *call*: every RPC, `Batch` included (one call per batch,
/// whatever its size). Batch *entries* have their own knobs.
pub struct Faults {
    knobs: Mutex<Knobs>,
    hold: watch::Sender<bool>,
    held: watch::Sender<usize>,
    stopping: watch::Sender<bool>,
}

#[derive(Default)]
struct Knobs {
    fail_next: Vec<FailNext>,
    fail_fraction: Option<FailFraction>,
    latency: Duration,
    fail_next_entries: Option<FailNextEntries>,
    drop_next_entries: usize,
    drop_entries_where: Option<EntryPredicate>,
    empty_next_batches: usize,
    order: BatchOrder,
    order_rng: Option<SplitMix64>,
}

type EntryPredicate = Arc<dyn Fn(usize) -> bool + Send + Sync>;

struct FailNext {
    kind: Option<RpcKind>,
    remaining: usize,
    code: Code,
}

struct FailFraction {
    fraction: f64,
    code: Code,
    rng: SplitMix64,
}

struct FailNextEntries {
    remaining: usize,
    code: Code,
    transient: bool,
}

/// What happens to one call, decided on arrival.
pub(crate) struct CallPlan {
    pub(crate) latency: Duration,
    pub(crate) fail: Option<Code>,
}

/// What happens to one batch entry, decided when its batch arrives.
#[derive(Clone, Copy)]
pub(crate) struct EntryPlan {
    /// Answer this error instead of processing the entry.
    pub(crate) fail: Option<(Code, bool)>,
    /// Process the entry but leave its answer out of the response.
    pub(crate) drop: bool,
}

/// What happens to one batch's response, decided when it arrives.
pub(crate) struct BatchPlan {
    pub(crate) entries: Vec<EntryPlan>,
    pub(crate) empty: bool,
    /// A permutation of the response entries (indexes into request order).
    pub(crate) order: Vec<usize>,
}

/// The message of every injected failure.
pub(crate) const INJECTED: &str = "injected fault";

impl Default for Faults {
    fn default() -> Self {
        Faults {
            knobs: Mutex::default(),
            hold: watch::Sender::new(false),
            held: watch::Sender::new(0),
            stopping: watch::Sender::new(false),
        }
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.knobs.lock();
        f.debug_struct("Faults")
            .field("fail_next_rules", &k.fail_next.len())
            .field(
                "fail_fraction",
                &k.fail_fraction.as_ref().map(|f| f.fraction),
            )
            .field("latency", &k.latency)
            .field("drop_next_entries", &k.drop_next_entries)
            .field("empty_next_batches", &k.empty_next_batches)
            .field("order", &k.order)
            .field("holding", &*self.hold.borrow())
            .field("held", &*self.held.borrow())
            .finish_non_exhaustive()
    }
}

impl Faults {
    /// The next `n` calls of any kind fail with `code` (message `"injected
    /// fault"`), before any processing: the server's state does not change.
    ///
    /// Rules add up: `fail_next(1, A); fail_next(1, B)` fails the next call with
    /// `A` and the one after with `B`.
    pub fn fail_next(&self, n: usize, code: Code) {
        self.push_fail_next(None, n, code);
    }

    /// The next `n` calls of `kind` fail with `code`; other calls are unaffected.
    pub fn fail_next_rpc(&self, kind: RpcKind, n: usize, code: Code) {
        self.push_fail_next(Some(kind), n, code);
    }

    fn push_fail_next(&self, kind: Option<RpcKind>, n: usize, code: Code) {
        if n > 0 {
            self.knobs.lock().fail_next.push(FailNext {
                kind,
                remaining: n,
                code,
            });
        }
    }

    /// Each call (of any kind) fails with `code` with probability `fraction`
    /// (clamped to `0.0..=1.0`), drawn from a generator seeded with `seed`: the
    /// same seed fails the same calls of a sequence. Every call draws, even one
    /// failed by [`Faults::fail_next`]. Replaces an earlier fraction.
    pub fn fail_fraction(&self, fraction: f64, code: Code, seed: u64) {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self.knobs.lock().fail_fraction = Some(FailFraction {
            fraction,
            code,
            rng: SplitMix64(seed),
        });
    }

    /// Every call waits `latency` before it is processed (zero: none). A
    /// server restart cuts the wait short with `Unavailable`.
    pub fn set_latency(&self, latency: Duration) {
        self.knobs.lock().latency = latency;
    }

    /// The next `n` batch entries are answered with a per-entry error of `code`
    /// (transient per the code table) without being processed.
    pub fn fail_next_batch_entries(&self, n: usize, code: Code) {
        self.fail_next_batch_entries_flagged(n, code, code.is_transient());
    }

    /// Like [`Faults::fail_next_batch_entries`], with an explicit transient flag
    /// (the wire lets a server mark any code transient). Replaces an earlier
    /// entry-failure rule.
    pub fn fail_next_batch_entries_flagged(&self, n: usize, code: Code, transient: bool) {
        self.knobs.lock().fail_next_entries = (n > 0).then_some(FailNextEntries {
            remaining: n,
            code,
            transient,
        });
    }

    /// The next `n` batch entries (in request order, across batches) are
    /// processed, but their answers are left out of the response. Adds to an
    /// earlier count.
    pub fn drop_next_batch_entries(&self, n: usize) {
        self.knobs.lock().drop_next_entries += n;
    }

    /// From now on (until [`Faults::clear`]), every batch entry whose request
    /// index satisfies `predicate` is processed but left out of the response.
    pub fn drop_batch_entries_where(
        &self,
        predicate: impl Fn(usize) -> bool + Send + Sync + 'static,
    ) {
        self.knobs.lock().drop_entries_where = Some(Arc::new(predicate));
    }

    /// The next `n` batches are answered with no entries at all. Their entries
    /// are still processed. Adds to an earlier count.
    pub fn empty_next_batches(&self, n: usize) {
        self.knobs.lock().empty_next_batches += n;
    }

    /// The order of response entries in later batches.
    pub fn set_batch_order(&self, order: BatchOrder) {
        let mut k = self.knobs.lock();
        k.order = order;
        k.order_rng = match order {
            BatchOrder::Shuffled { seed } => Some(SplitMix64(seed)),
            _ => None,
        };
    }

    /// Holds every later unary call and every later batch entry in flight (after
    /// its latency, before it is processed) until [`Faults::release`]. Use
    /// [`Faults::wait_held`] to wait until the calls under test are held.
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Releases every held call and stops holding new ones.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// How many calls (unary calls or batch entries) are held right now.
    pub fn held(&self) -> usize {
        *self.held.borrow()
    }

    /// Waits until at least `n` calls are held at the same time. Cancel-safe.
    pub async fn wait_held(&self, n: usize) {
        let mut rx = self.held.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|&held| held >= n).await;
    }

    /// Waits until fewer than `n` calls are held (for example after a held
    /// call's client went away: the server drops the call). Cancel-safe.
    pub async fn wait_held_below(&self, n: usize) {
        let mut rx = self.held.subscribe();
        let _ = rx.wait_for(|&held| held < n).await;
    }

    /// Resets every knob (failures, fraction, latency, drops, empty batches,
    /// order) and releases held calls. Counters are kept.
    pub fn clear(&self) {
        *self.knobs.lock() = Knobs::default();
        self.release();
    }

    // ---- Used by the service. ----

    pub(crate) fn plan_call(&self, kind: RpcKind) -> CallPlan {
        let mut k = self.knobs.lock();
        let drawn_failure = k.fail_fraction.as_mut().and_then(|f| {
            let fail = f.rng.next_f64() < f.fraction;
            fail.then_some(f.code)
        });
        let mut fail = None;
        if let Some(rule) = k
            .fail_next
            .iter_mut()
            .find(|r| r.remaining > 0 && r.kind.is_none_or(|want| want == kind))
        {
            rule.remaining -= 1;
            fail = Some(rule.code);
        }
        k.fail_next.retain(|r| r.remaining > 0);
        CallPlan {
            latency: k.latency,
            fail: fail.or(drawn_failure),
        }
    }

    pub(crate) fn plan_batch(&self, len: usize) -> BatchPlan {
        let mut k = self.knobs.lock();
        let predicate = k.drop_entries_where.clone();
        let entries = (0..len)
            .map(|index| {
                let fail = match &mut k.fail_next_entries {
                    Some(rule) if rule.remaining > 0 => {
                        rule.remaining -= 1;
                        Some((rule.code, rule.transient))
                    }
                    _ => None,
                };
                let mut drop = predicate.as_ref().is_some_and(|p| p(index));
                if k.drop_next_entries > 0 {
                    k.drop_next_entries -= 1;
                    drop = true;
                }
                EntryPlan { fail, drop }
            })
            .collect();
        let empty = k.empty_next_batches > 0;
        if empty {
            k.empty_next_batches -= 1;
        }
        let mut order: Vec<usize> = (0..len).collect();
        match k.order {
            BatchOrder::Request => {}
            BatchOrder::Reversed => order.reverse(),
            BatchOrder::Shuffled { .. } => {
                if let Some(rng) = k.order_rng.as_mut() {
                    // Fisher-Yates.
                    for i in (1..len).rev() {
                        let j = rng.below(i + 1);
                        order.swap(i, j);
                    }
                }
            }
        }
        BatchPlan {
            entries,
            empty,
            order,
        }
    }

    /// Waits at the hold gate if holding. `Err(())` if the server stopped while
    /// waiting. Cancel-safe: a cancelled waiter is no longer counted as held.
    pub(crate) async fn gate(&self) -> Result<(), Stopped> {
        let mut hold = self.hold.subscribe();
        if !*hold.borrow_and_update() {
            return Ok(());
        }
        let _held = HeldGuard::new(&self.held);
        let mut stopping = self.stopping.subscribe();
        tokio::select! {
            _ = hold.wait_for(|&holding| !holding) => Ok(()),
            _ = stopping.wait_for(|&s| s) => Err(Stopped),
        }
    }

    /// Sleeps `latency`, cut short by a stop.
    pub(crate) async fn delay(&self, latency: Duration) -> Result<(), Stopped> {
        if latency.is_zero() {
            return Ok(());
        }
        let mut stopping = self.stopping.subscribe();
        tokio::select! {
            () = tokio::time::sleep(latency) => Ok(()),
            _ = stopping.wait_for(|&s| s) => Err(Stopped),
        }
    }

    pub(crate) fn set_stopping(&self, stopping: bool) {
        self.stopping.send_replace(stopping);
    }
}

/// The server stopped while a call was waiting.
pub(crate) struct Stopped;

struct HeldGuard<'a>(&'a watch::Sender<usize>);

impl<'a> HeldGuard<'a> {
    fn new(held: &'a watch::Sender<usize>) -> Self {
        held.send_modify(|n| *n += 1);
        HeldGuard(held)
    }
}

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// SplitMix64: a tiny deterministic generator (the same sequence on every
/// platform and version, which a library RNG does not promise).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`), up to a negligible modulo bias.
    fn below(&mut self, n: usize) -> usize {
        let n = n.max(1) as u64;
        usize::try_from(self.next_u64() % n).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_rules_apply_in_order_and_by_kind() {
        let f = Faults::default();
        f.fail_next_rpc(RpcKind::TerminateStream, 1, Code::NotFound);
        f.fail_next(2, Code::Unavailable);
        assert_eq!(
            f.plan_call(RpcKind::RegisterStream).fail,
            Some(Code::Unavailable)
        );
        assert_eq!(
            f.plan_call(RpcKind::TerminateStream).fail,
            Some(Code::NotFound)
        );
        assert_eq!(
            f.plan_call(RpcKind::TerminateStream).fail,
            Some(Code::Unavailable)
        );
        assert_eq!(f.plan_call(RpcKind::TerminateStream).fail, None);
    }

    #[test]
    fn fraction_is_deterministic_per_seed_and_roughly_right() {
        let pattern = |seed| {
            let f = Faults::default();
            f.fail_fraction(0.25, Code::Internal, seed);
            (0..4000)
                .map(|_| f.plan_call(RpcKind::Batch).fail.is_some())
                .collect::<Vec<_>>()
        };
        let a = pattern(7);
        assert_eq!(a, pattern(7));
        assert_ne!(a, pattern(8));
        let failed = a.iter().filter(|&&x| x).count();
        assert!((800..1200).contains(&failed), "{failed}");
    }

    #[test]
    fn shuffled_order_is_a_permutation() {
        let f = Faults::default();
        f.set_batch_order(BatchOrder::Shuffled { seed: 1 });
        let mut order = f.plan_batch(50).order;
        assert_ne!(order, (0..50).collect::<Vec<_>>());
        order.sort_unstable();
        assert_eq!(order, (0..50).collect::<Vec<_>>());
    }
}
