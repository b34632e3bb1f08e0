//! The sharded table: keys, entries, per-entry slots, eviction, and the clock.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use coordinator_api::{Error, LogStreamState, MessageIndex, ProjectName, StreamPath};
use hashlink::LinkedHashMap;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::flight::Flight;
use crate::stats::Counters;

/// What a register call answers.
pub(crate) type RegisterResult = Result<Arc<LogStreamState>, Error>;
/// What a terminate call answers.
pub(crate) type TerminateResult = Result<(), Error>;

/// The hasher for keys and shard selection (fast, seeded per process).
pub(crate) type KeyHasher = foldhash::fast::RandomState;

/// A cache key: `(project, path)`. Holds the first request's `Arc`s (no copy of the
/// text).
pub(crate) struct Key {
    project: ProjectName,
    path: StreamPath,
}

impl Key {
    pub(crate) fn new(project: &ProjectName, path: &StreamPath) -> Self {
        Key {
            project: project.clone(),
            path: path.clone(),
        }
    }

    /// True if this is the key of `(project, path)`; compares text, so lookups
    /// need no owned key.
    #[inline]
    pub(crate) fn is(&self, project: &str, path: &str) -> bool {
        self.path.as_str() == path && self.project.as_str() == project
    }
}

/// Feeds `(project, path)` to `hasher`. `Key`'s `Hash` and borrowed lookups both
/// use this, so a hash computed from `&str`s finds the owned key. The `0xff`
/// separator cannot occur in UTF-8 text, so the pair is hashed unambiguously.
#[inline]
fn hash_parts<H: Hasher>(hasher: &mut H, project: &str, path: &str) {
    hasher.write(project.as_bytes());
    hasher.write_u8(0xff);
    hasher.write(path.as_bytes());
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, hasher: &mut H) {
        hash_parts(hasher, self.project.as_str(), self.path.as_str());
    }
}

// Equality is only needed to satisfy `LinkedHashMap`'s bounds; lookups use
// `Key::is` through the raw entry API.
impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.is(other.project.as_str(), other.path.as_str())
    }
}

impl Eq for Key {}

/// The hash of `(project, path)` under `state`, equal to `state.hash_one(key)`.
#[inline]
pub(crate) fn hash_key(state: &KeyHasher, project: &str, path: &str) -> u64 {
    let mut hasher = state.build_hasher();
    hash_parts(&mut hasher, project, path);
    hasher.finish()
}

/// An attempt's identity: unique within its shard (a counter), so a completing
/// call can tell whether the entry still holds its attempt (the generation check).
pub(crate) type AttemptId = u64;

/// The register side of an entry.
pub(crate) enum RegisterSlot {
    /// No call made yet, or the last one failed transiently.
    Empty,
    /// Attempt `AttemptId` is in flight (its waiters, if any, wait on the flight
    /// in [`ShardState::register_waits`]).
    Pending(AttemptId),
    /// The answer, kept until the entry expires.
    Ready(Arc<LogStreamState>),
    /// A permanent error, kept until the entry expires.
    Failed(Error),
}

/// The terminate side of an entry, including the terminal index known to be
/// recorded remotely (which makes a terminate call unnecessary).
pub(crate) enum TerminateSlot {
    /// No call made yet, or the last one failed transiently.
    Empty,
    /// Attempt `AttemptId` is in flight (waiters in
    /// [`ShardState::terminate_waits`]).
    Pending(AttemptId),
    /// A permanent error, kept until the entry expires.
    Failed(Error),
    /// The terminal index recorded remotely: from a successful terminate, or
    /// from a registered state that carried one.
    Known(MessageIndex),
}

impl TerminateSlot {
    pub(crate) fn known(&self) -> Option<MessageIndex> {
        match self {
            TerminateSlot::Known(index) => Some(*index),
            _ => None,
        }
    }
}

/// The "referenced" bit of [`Entry::meta`].
const REFERENCED: u64 = 1 << 63;

/// One stream's entry.
pub(crate) struct Entry {
    /// Bits 0..=62: when the entry expires, in [`Clock`] nanoseconds, fixed at
    /// creation. Bit 63: the second-chance bit, set by a hit and cleared when the
    /// entry is spared from eviction (see [`evict_one`]).
    meta: u64,
    pub(crate) register: RegisterSlot,
    pub(crate) terminate: TerminateSlot,
}

impl Entry {
    /// A fresh entry expiring at `deadline` (not referenced).
    pub(crate) fn new(deadline: u64) -> Self {
        Entry {
            meta: deadline & !REFERENCED,
            register: RegisterSlot::Empty,
            terminate: TerminateSlot::Empty,
        }
    }

    /// When the entry expires, in [`Clock`] nanoseconds.
    #[inline]
    pub(crate) fn deadline(&self) -> u64 {
        self.meta & !REFERENCED
    }

    /// Marks the entry as used since the eviction scan last passed it. Writes only
    /// if the bit is not set yet, so repeated hits leave the entry's memory
    /// untouched (no cache-line traffic between threads).
    #[inline]
    pub(crate) fn mark_referenced(&mut self) {
        if self.meta & REFERENCED == 0 {
            self.meta |= REFERENCED;
        }
    }

    /// Clears the second-chance bit; returns whether it was set.
    fn take_referenced(&mut self) -> bool {
        let was = self.meta & REFERENCED != 0;
        self.meta &= !REFERENCED;
        was
    }
}

/// `state`, with the entry's known terminal index filled in if it has none: a new
/// `Arc` only in that case.
pub(crate) fn with_known_index(
    state: &Arc<LogStreamState>,
    known: Option<MessageIndex>,
) -> Option<Arc<LogStreamState>> {
    match (state.terminal_index, known) {
        (None, Some(index)) => {
            let mut copy = LogStreamState::clone(state);
            copy.terminal_index = Some(index);
            Some(Arc::new(copy))
        }
        _ => None,
    }
}

/// One shard: the entries in eviction order (front first) and its counters.
///
/// Eviction is second-chance ("CLOCK"), an approximation of LRU that keeps hits
/// read-only: new entries go to the back, unmarked; a hit only marks the entry
/// (its referenced bit); to make room for a new entry, the front entry is evicted
/// unless it is marked, in which case the mark is cleared and the entry moves to the
/// back. So an entry is evicted only if it was not used since it was created or
/// last spared, and among those the one that has waited longest goes first. The
/// entry being inserted is never the victim.
pub(crate) struct Shard {
    pub(crate) map: LinkedHashMap<Key, Entry, KeyHasher>,
    pub(crate) state: ShardState,
}

/// The rest of a shard, borrowed separately from its map.
pub(crate) struct ShardState {
    pub(crate) capacity: usize,
    pub(crate) counters: Counters,
    /// `counters.hits` when hits were last published to `metrics`.
    pub(crate) published_hits: u64,
    /// The next [`AttemptId`].
    pub(crate) next_attempt: AttemptId,
    /// The flights of register attempts that have waiters, by attempt. A flight
    /// exists only once someone waits: an attempt that completes inline with no
    /// concurrent caller costs no allocation. The completing call removes it.
    pub(crate) register_waits: HashMap<AttemptId, Arc<Flight<RegisterResult>>, KeyHasher>,
    /// The same for terminate attempts.
    pub(crate) terminate_waits: HashMap<AttemptId, Arc<Flight<TerminateResult>>, KeyHasher>,
}

impl ShardState {
    /// A new attempt's identity.
    pub(crate) fn new_attempt(&mut self) -> AttemptId {
        let id = self.next_attempt;
        self.next_attempt += 1;
        id
    }
}

/// Evicts one entry of a shard's map (see [`Shard`]); returns false if it is
/// empty.
pub(crate) fn evict_one(map: &mut LinkedHashMap<Key, Entry, KeyHasher>) -> bool {
    // Every pass either evicts or clears a bit, so this ends within len + 1 passes.
    while let Some((key, mut entry)) = map.pop_front() {
        if !entry.take_referenced() {
            return true;
        }
        map.insert(key, entry);
    }
    false
}

/// A shard behind its lock, alone on its cache lines so that two threads using
/// different shards do not slow each other down.
#[repr(align(128))]
pub(crate) struct PaddedShard(pub(crate) Mutex<Shard>);

impl PaddedShard {
    pub(crate) fn new(capacity: usize, hasher: KeyHasher) -> Self {
        PaddedShard(Mutex::new(Shard {
            map: LinkedHashMap::with_hasher(hasher),
            state: ShardState {
                capacity,
                counters: Counters::default(),
                published_hits: 0,
                next_attempt: 0,
                register_waits: HashMap::with_hasher(hasher),
                terminate_waits: HashMap::with_hasher(hasher),
            },
        }))
    }
}

/// Time as nanoseconds since the cache's epoch, read from `tokio::time::Instant`
/// so that paused test time applies. The epoch is a day before the cache was built,
/// so that a clock somewhat behind the one used at construction (e.g. a paused
/// test clock) still reads as a positive time; earlier times read as zero.
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Clock {
            epoch: now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now),
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }
}

/// A duration in nanoseconds, saturating at 2^62 (146 years), so that deadlines
/// never reach the referenced bit.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).map_or(MAX_NANOS, |n| n.min(MAX_NANOS))
}

/// The largest time or duration the clock represents.
pub(crate) const MAX_NANOS: u64 = 1 << 62;
