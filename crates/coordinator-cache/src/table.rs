//! The sharded table and the per-entry state machine: keys, slots, cold records,
//! and the eviction order.
//!
//! # Layout
//!
//! A shard keeps its entries in a slab (`Vec<Slot>`) and finds them through a
//! hash table of slab indexes ([`IndexTable`], hashbrown's `HashTable` of `u16` or
//! `u32`). No allocation per entry: a 64-byte slot (one cache line) and about 2.3
//! bytes of table (4.6 for shards of more than 65,536 entries). A slot holds
//! what a hit needs: the deadline, the used bit and last-use tick (below), the
//! kept state, and its key: a copy of the key's bytes when project and path
//! together take at most 40, else the path's `Arc` (one pointer away; the
//! project is then the kept state's, on the line a hit reads anyway for the
//! state's reference count, and a name the shard's states share, below) with
//! 32 bits of the key's hash (recomputed from the copy for a short key), so
//! that growing the table or evicting never reads a key elsewhere. So a hit reads the index,
//! one slot, the state's line and, for a long key, the path: never the chain
//! from the slot through the state to its strings. Equal pointers only skip a
//! comparison, so lookups with requests that share nothing with the kept
//! state cost about the same. Everything else an entry may hold, which most
//! entries do not once registered, lives in a per-shard map of *cold records*
//! by slab index: the key while there is no state, the attempt in flight, a kept
//! permanent error, the terminal index known before the state is. The slot's flag
//! bits say whether a cold record exists and whether it holds the key.
//!
//! A kept state's project name is swapped, when the cache holds the state's
//! only reference, for the one the shard's other states carry: each request
//! decodes its own strings, and a collector serves a handful of projects, so
//! this saves an allocation per entry.
//!
//! # Eviction
//!
//! Least recently used first, with one adaptive twist. The cache counts
//! ticks ([`Shards::tick`]: one per new or reset entry in any shard, one per
//! collection below); a hit writes the current tick into its slot, only if it
//! changed (so hits between two insertions write nothing after the first, and
//! a workload of hits alone never writes), and sets the slot's used bit once.
//! An entry's age is the ticks since its last use; entries used between the
//! same two insertions tie.
//!
//! To make room, a shard takes the next of its *candidates*: an eighth of its
//! entries, collected by one scan of the slab (a bounded heap) when the list
//! runs out, ranked expired first and then oldest first, each valid while its
//! slot still has the tick it had when collected. The collection advances the
//! counter, so an entry used since is skipped (stale). Entries that were not
//! candidates were younger than every candidate then, and only grew younger,
//! so the first valid candidate is the shard's least recently used entry: the
//! order is exact LRU at tick resolution, at a scan's cost of a few slot reads
//! per eviction. [`Shard::invalidate`] pushes the entry as the next candidate.
//!
//! The twist: an entry never used since it was made (one request so far)
//! counts as older by a *bonus* of ticks, which the cache learns from its
//! mistakes. Each shard remembers its recently evicted keys ("ghosts") in a direct-mapped
//! table of hashes (one 4-byte bucket per 4 entries of capacity, made at the
//! first eviction, with a bit saying whether the key had been used). A key that
//! comes back while still a ghost is made used: it has a history, so it is
//! not a one-request entry. And the eviction was a mistake: if the ghost had
//! been used, LRU order dropped an entry with a history too early, and the
//! bonus grows by 1/64 of the cache's size (at most the size); if not, it
//! shrinks by as much (at least zero). The bonus is one for the whole cache,
//! so that victims compare across shards. It starts at zero, and when LRU
//! makes no mistakes no ghost ever returns, so the order stays plain LRU. On a
//! collector's trace (new streams arriving over time, most seen a few times,
//! some at long intervals) a small cache learns to drop one-request streams
//! quickly and keep the ones that came back.
//!
//! Across shards ([`Shards`]): each shard has an equal share of the size and
//! holds from half of it (its floor) to twice it. Past its floor a new entry
//! takes a unit of the cache's room (the size less the floors) while some is
//! left; then an entry goes for each new one. Each shard publishes its next
//! victim's tick (less the bonus if unused) in a shared array; a shard making
//! room compares its own next victim with the oldest published one, and if
//! that is older by more than 1/256 of the size in ticks, takes it instead,
//! having locked that shard with `try_lock` (never waiting while it holds its
//! own lock, so no two shards deadlock) and compared the two victims as they
//! are. So the size bound is exact across the cache, a shard that gets more
//! than its share of the keys in use keeps them, and the shards together
//! approximate one order.
//!
//! The victim's index is reused for the new entry. An entry taken by another
//! shard leaves its slot vacant, reused by the shard's next new entry; slots
//! are never freed otherwise, so the slab stays dense.
//!
//! # The state machine
//!
//! [`Shard::begin_register`] / [`Shard::begin_terminate`] decide, under the shard
//! lock, whether a caller gets a kept answer, joins the attempt in flight, or
//! starts one; [`Shard::complete_register`] / [`Shard::complete_terminate`] record
//! an attempt's outcome if the entry still holds that attempt (the generation
//! check: attempt ids are unique per shard, and a slot reused by another key, or
//! reset on expiry, holds another attempt or none).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use coordinator_api::{Code, Error, LogStreamState, MessageIndex, ProjectName, StreamPath};
use hashbrown::HashTable;
use parking_lot::Mutex;

use crate::clock::{MAX_NANOS, Time};
use crate::flight::Flight;
use crate::interleave;
use crate::stats::Counters;

/// What a register call answers.
pub(crate) type RegisterResult = Result<Arc<LogStreamState>, Error>;
/// What a terminate call answers.
pub(crate) type TerminateResult = Result<(), Error>;

/// The hasher for keys and shard selection (fast, seeded per process).
pub(crate) type KeyHasher = foldhash::fast::RandomState;

/// A slot's index in its shard's slab.
pub(crate) type Index = u32;

/// An attempt's identity: unique within its shard (a counter), so a completing
/// call can tell whether the entry still holds its attempt (the generation check).
pub(crate) type AttemptId = u64;

/// The hash of `(project, path)` under `state`. The `0xff` separator cannot occur
/// in UTF-8 text, so the pair is hashed unambiguously.
#[inline]
pub(crate) fn hash_key(state: &KeyHasher, project: &str, path: &str) -> u64 {
    hash_parts(state, project.as_bytes(), path.as_bytes())
}

/// [`hash_key`] of the key's bytes.
#[inline]
fn hash_parts(state: &KeyHasher, project: &[u8], path: &[u8]) -> u64 {
    let mut hasher = state.build_hasher();
    hasher.write(project);
    hasher.write_u8(0xff);
    hasher.write(path);
    hasher.finish()
}

/// The hash a shard's index table files a key under, made from the 32 bits of
/// the key's hash that the shard keeps per entry (so that growing the table or
/// evicting an entry never reads a key): multiplying by an odd constant keeps the
/// low bits (the bucket) as uniform as the input's and spreads all 32 bits into
/// the top ones (hashbrown's tag).
#[inline]
fn table_hash(short: u32) -> u64 {
    u64::from(short).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The 32 bits of a key's hash that a shard keeps (the low ones: the shard is
/// picked from high ones).
#[inline]
fn short_hash(hash: u64) -> u32 {
    hash as u32
}

/// Text equality ([`bytes_eq`]), skipping the comparison when both are the
/// same string.
#[inline]
fn same(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || bytes_eq(a.as_bytes(), b.as_bytes())
}

/// A cache key: `(project, path)`, holding the first request's `Arc`s.
pub(crate) struct Key {
    project: ProjectName,
    path: StreamPath,
}

impl Key {
    fn new(project: &ProjectName, path: &StreamPath) -> Self {
        Key {
            project: project.clone(),
            path: path.clone(),
        }
    }

    fn is(&self, project: &str, path: &str) -> bool {
        same(self.path.as_str(), path) && same(self.project.as_str(), project)
    }
}

/// Bits 0..=60 of [`Slot::meta`]: the deadline.
const DEADLINE: u64 = MAX_NANOS;
/// Set if the slot's key is in its cold record (else it is its state's).
const KEYED: u64 = 1 << 61;
/// Set if the slot has a cold record.
const COLD: u64 = 1 << 62;
/// Set once the entry has been used (found live) since it was made: an entry
/// without it is one request old (see the module docs on eviction).
const USED: u64 = 1 << 63;

/// `a == b`: whole words, the last one overlapping the one before, with no
/// early exit and no call (a call to `memcmp` costs more than the comparison
/// at the lengths of keys, a few words).
#[inline(always)]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0;
    }
    let word = |s: &[u8], i: usize| {
        s.get(i..i + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_ne_bytes)
    };
    let mut diff = word(a, n - 8) ^ word(b, n - 8);
    let mut i = 0;
    while i + 8 < n {
        diff |= word(a, i) ^ word(b, i);
        i += 8;
    }
    diff == 0
}

/// The most key bytes (project and path together) a slot holds a copy of.
const INLINE: usize = 40;

/// The cache's use counter ([`Shards::tick`]) when an entry was last used
/// (see the module docs on eviction).
type Tick = u32;

/// A slot's hold on its key: a copy of a short key's bytes, compared on the
/// slot's own cache line; for a longer key, its path's `Arc` (one pointer
/// away; the project is the kept state's or the cold record's) and the key's
/// short hash. Each form also carries the entry's last-use [`Tick`], in what
/// would otherwise be padding. 48 bytes.
enum SlotKey {
    /// A placeholder slot.
    None { tick: Tick },
    /// Project and path, at most [`INLINE`] bytes together.
    Inline {
        tick: Tick,
        project_len: u8,
        path_len: u8,
        bytes: [u8; INLINE],
    },
    /// A longer key: its path (the first request's `Arc`, or the kept state's
    /// once it carries an equal one) and [`short_hash`] of the key.
    Shared {
        tick: Tick,
        hash: u32,
        path: StreamPath,
    },
}

impl SlotKey {
    fn new(project: &str, path: &StreamPath, hash: u32, tick: Tick) -> Self {
        let (p, s) = (project.as_bytes(), path.as_str().as_bytes());
        let total = p.len() + s.len();
        match (u8::try_from(p.len()), u8::try_from(s.len())) {
            (Ok(project_len), Ok(path_len)) if total <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..p.len()].copy_from_slice(p);
                bytes[p.len()..total].copy_from_slice(s);
                SlotKey::Inline {
                    tick,
                    project_len,
                    path_len,
                    bytes,
                }
            }
            _ => SlotKey::Shared {
                tick,
                hash,
                path: path.clone(),
            },
        }
    }

    /// The entry's last-use tick.
    #[inline]
    fn tick(&self) -> Tick {
        match self {
            SlotKey::None { tick }
            | SlotKey::Inline { tick, .. }
            | SlotKey::Shared { tick, .. } => *tick,
        }
    }

    /// Records a use at `now`. Writes only if the tick changes, so hits between
    /// two insertions leave the slot's memory untouched after the first (no
    /// cache-line traffic between threads).
    #[inline]
    fn use_at(&mut self, now: Tick) {
        match self {
            SlotKey::None { tick }
            | SlotKey::Inline { tick, .. }
            | SlotKey::Shared { tick, .. } => {
                if *tick != now {
                    *tick = now;
                }
            }
        }
    }

    /// A copied key's project and path bytes.
    #[inline]
    fn inline_parts(project_len: u8, path_len: u8, bytes: &[u8; INLINE]) -> (&[u8], &[u8]) {
        let (lp, ls) = (usize::from(project_len), usize::from(path_len));
        (
            bytes.get(..lp).unwrap_or_default(),
            bytes.get(lp..lp + ls).unwrap_or_default(),
        )
    }

    /// [`short_hash`] of the key (recomputed from a copied key's bytes, which
    /// are on the slot's line).
    fn short_hash(&self, hasher: &KeyHasher) -> u32 {
        match self {
            SlotKey::None { .. } => 0,
            SlotKey::Inline {
                project_len,
                path_len,
                bytes,
                ..
            } => {
                let (p, s) = Self::inline_parts(*project_len, *path_len, bytes);
                short_hash(hash_parts(hasher, p, s))
            }
            SlotKey::Shared { hash, .. } => *hash,
        }
    }
}

/// One entry's hot part: everything a hit reads, on one cache line (outside
/// unit tests).
#[repr(align(64))]
struct Slot {
    /// The deadline (when the entry expires, in [`Clock`](crate::clock::Clock)
    /// nanoseconds, fixed at creation) and the flag bits above.
    meta: u64,
    /// The kept register answer.
    state: Option<Arc<LogStreamState>>,
    /// The key, or for a long one its path and hash (so that growing the
    /// table or evicting never reads a key elsewhere).
    key: SlotKey,
    /// A ghost identity, new for every entry made, that the model checker tracks
    /// attempts by.
    #[cfg(test)]
    generation: u64,
}

impl Slot {
    #[inline]
    fn deadline(&self) -> u64 {
        self.meta & DEADLINE
    }

    /// True for a slot that holds no entry: outside a shard's lock, one whose
    /// entry was taken by another shard ([`Shard::vacant`]).
    #[inline]
    fn is_vacant(&self) -> bool {
        matches!(self.key, SlotKey::None { .. })
    }

    /// Records a hit at `now`: sets the used bit and the last-use tick, each
    /// written only if it changes (so repeated hits leave the slot's memory
    /// untouched: no cache-line traffic between threads).
    #[inline]
    fn use_at(&mut self, now: Tick) {
        if self.meta & USED == 0 {
            self.meta |= USED;
        }
        self.key.use_at(now);
    }

    /// A fresh entry expiring at `deadline`, its key in its cold record (and
    /// `key` here).
    fn fresh(deadline: u64, used: bool, key: SlotKey) -> Self {
        Slot {
            meta: (deadline & DEADLINE) | COLD | KEYED | if used { USED } else { 0 },
            state: None,
            key,
            #[cfg(test)]
            generation: crate::model_check::seams::next_generation(),
        }
    }
}

/// A shard collects this fraction of its entries as eviction candidates at a
/// time (so a collection's scan costs a few slot reads per eviction).
const CANDIDATE_FRACTION: usize = 8;
/// A shard remembers about this fraction of its capacity in recently evicted
/// keys ("ghosts"): one 4-byte bucket per 4 entries.
const GHOST_FRACTION: usize = 4;
/// A returning ghost moves the bonus ([`Shards::bonus`]) by this fraction of the size.
const BONUS_STEP_FRACTION: usize = 64;

/// A shard's eviction order (see the module docs): the candidates collected
/// for the next evictions, and the adaptive bonus with the ghosts that steer
/// it. (The use counter is the cache's: [`Shards::tick`].)
#[derive(Default)]
struct Order {
    /// Candidates ([`candidate`]: index, tick and unused bit), the next
    /// victim last.
    candidates: Vec<u64>,
    /// The last victim as a published head ([`Shard::publish`]), or zero.
    last_victim: u64,
    /// Recently evicted keys, one per bucket (made at the first eviction):
    /// the key's short hash with bit 1 set, and bit 0 set if it was never used.
    ghosts: Vec<u32>,
}

/// An eviction candidate: slot `i`, valid while the slot's tick is the one
/// it has now, and whether the entry was unused then (so that a shard can
/// publish its next victim without reading the slot). `i < 2^31` (see
/// `Shard::new`).
fn candidate(i: Index, slot: &Slot) -> u64 {
    let unused = u64::from(slot.meta & USED == 0);
    (u64::from(i) << 33) | (unused << 32) | u64::from(slot.key.tick())
}

/// A candidate's slot index.
fn candidate_index(c: u64) -> Index {
    (c >> 33) as Index
}

/// A candidate's tick.
fn candidate_tick(c: u64) -> Tick {
    c as Tick
}

/// Whether a candidate's entry was unused when it was collected.
fn candidate_unused(c: u64) -> bool {
    c & (1 << 32) != 0
}

/// The rank of `slot` for eviction at tick `epoch` (higher goes first):
/// `u32::MAX` if it expired by `now`, else its age in ticks, plus `bonus`
/// ([`Shards::bonus`]) if it was never used.
fn rank(slot: &Slot, epoch: Tick, now: u64, bonus: u32) -> u32 {
    if slot.deadline() <= now {
        u32::MAX
    } else {
        let age = epoch.wrapping_sub(slot.key.tick());
        let bonus = if slot.meta & USED == 0 { bonus } else { 0 };
        age.saturating_add(bonus).min(u32::MAX - 1)
    }
}

impl Order {
    /// Collects the next candidates: the [`CANDIDATE_FRACTION`] of `slots`
    /// ranked first for eviction (expired ones, then by age in ticks, the
    /// `bonus` added for entries never used), the first last. `epoch` is a
    /// tick just taken from the counter, so that any later use makes a
    /// candidate stale. Vacant slots are never candidates.
    fn collect(&mut self, slots: &[Slot], now: u64, epoch: Tick, bonus: u32) {
        let k = (slots.len() / CANDIDATE_FRACTION).max(1);
        let spare: Vec<Reverse<u64>> = std::mem::take(&mut self.candidates)
            .into_iter()
            .map(Reverse)
            .collect();
        let mut heap = BinaryHeap::from(spare);
        for (i, slot) in slots.iter().enumerate() {
            if slot.is_vacant() {
                continue;
            }
            let rank = rank(slot, epoch, now, bonus);
            // `i < 2^31` (see `Shard::new`).
            let ranked = (u64::from(rank) << 32) | i as u64;
            if heap.len() < k {
                heap.push(Reverse(ranked));
            } else if let Some(mut least) = heap.peek_mut()
                && ranked > least.0
            {
                *least = Reverse(ranked);
            }
        }
        let mut ranked: Vec<u64> = heap.into_vec().into_iter().map(|r| r.0).collect();
        ranked.sort_unstable();
        self.candidates = ranked
            .into_iter()
            .filter_map(|r| {
                let i = r as Index;
                slots.get(i as usize).map(|slot| candidate(i, slot))
            })
            .collect();
    }

    /// The ghost bucket of `short` (the ghosts made on first use, sized for a
    /// shard of `capacity`).
    fn ghost(&mut self, short: u32, capacity: usize) -> Option<&mut u32> {
        if self.ghosts.is_empty() {
            let buckets = (capacity / GHOST_FRACTION).max(1).next_power_of_two();
            self.ghosts = vec![0; buckets];
        }
        let mask = self.ghosts.len() - 1;
        self.ghosts.get_mut(short.rotate_left(16) as usize & mask)
    }

    /// Remembers an evicted key, and whether it was ever used.
    fn forget(&mut self, short: u32, unused: bool, capacity: usize) {
        if let Some(ghost) = self.ghost(short, capacity) {
            *ghost = (short | 2) & !1 | u32::from(unused);
        }
    }

    /// A new entry for `short` (ghosts sized for a shard of `capacity`): if
    /// it is a ghost, returns whether the evicted entry was never used. Its
    /// eviction was a mistake: the caller makes the new entry used (it has a
    /// history) and steers the bonus ([`Shards::steer`]).
    fn returned(&mut self, short: u32, capacity: usize) -> Option<bool> {
        if self.ghosts.is_empty() {
            return None; // nothing evicted yet
        }
        let ghost = self.ghost(short, capacity)?;
        if *ghost | 1 != short | 3 {
            return None;
        }
        let unused = *ghost & 1 == 1;
        *ghost = 0;
        Some(unused)
    }
}

/// `bonus` after a ghost returns in a cache of `size` entries: a never-used
/// one lowers it by [`BONUS_STEP_FRACTION`] of the size (LRU order was
/// right), a used one raises it by as much (one-request entries should have
/// gone first); it stays between zero and the size.
fn steer(bonus: u32, unused: bool, size: usize) -> u32 {
    let max = u32::try_from(size).unwrap_or(u32::MAX);
    let step = u32::try_from(size / BONUS_STEP_FRACTION)
        .unwrap_or(u32::MAX)
        .max(1);
    if unused {
        bonus.saturating_sub(step)
    } else {
        bonus.saturating_add(step).min(max)
    }
}

/// The register side of a cold record (a slot without a state).
enum RegisterCold {
    /// No call made yet, or the last one failed transiently.
    Empty,
    /// This attempt is in flight (its waiters, if any, wait on its flight in
    /// [`ShardState::register_waits`]).
    Pending(AttemptId),
    /// A permanent error, kept until the entry expires or until the deadline
    /// beside it, whichever comes first.
    Failed(Error, u64),
}

/// The terminate side of a cold record.
enum TerminateCold {
    /// No call made yet, or the last one failed transiently (or the state's own
    /// terminal index is the known one).
    Empty,
    /// This attempt is in flight (waiters in [`ShardState::terminate_waits`]).
    Pending(AttemptId),
    /// A permanent error, kept until the entry expires or until the deadline
    /// beside it, whichever comes first.
    Failed(Error, u64),
    /// The terminal index recorded remotely, when it is not the state's own (no
    /// state yet, or a state that carries a different one).
    Known(MessageIndex),
}

/// What a slot holds beyond its state (see the module docs). A record exists only
/// while one of its fields is not empty.
struct Cold {
    key: Option<Key>,
    register: RegisterCold,
    terminate: TerminateCold,
}

/// Which side of an entry a caller uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Register,
    Terminate,
}

/// How [`Shard::find_or_insert`] found its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// A live entry.
    Live,
    /// An expired entry, now reset to a fresh one in place, holding `attempt` if
    /// one was started.
    Expired { attempt: Option<AttemptId> },
    /// A new entry, holding `attempt` if one was started; `evicted` if another was
    /// evicted to make room.
    New {
        evicted: bool,
        attempt: Option<AttemptId>,
    },
}

impl Found {
    /// The attempt a fresh entry was made with.
    #[inline]
    pub(crate) fn attempt(self) -> Option<AttemptId> {
        match self {
            Found::Live => None,
            Found::Expired { attempt } | Found::New { attempt, .. } => attempt,
        }
    }
}

/// What a caller does, decided under the shard lock.
pub(crate) enum Begin<T> {
    /// Answer now (a kept result).
    Answer(T),
    /// Wait for this attempt, in flight.
    Join(AttemptId),
    /// Start this attempt: the entry now holds it.
    Start(AttemptId),
}

/// The error for a broken table invariant (a bug): transient, so nothing keeps it.
fn corrupted() -> Error {
    Error::new(
        Code::Internal,
        "coordinator-cache: an entry's record is missing (a bug in the cache)",
    )
}

/// A shard's hash table of slab indexes, filed under [`table_hash`]: 2-byte
/// buckets when every index fits (shards of at most 65,536 entries, as with the
/// default size), else 4-byte ones.
enum IndexTable {
    Narrow(HashTable<u16>),
    Wide(HashTable<u32>),
}

impl IndexTable {
    fn for_capacity(capacity: usize) -> Self {
        if capacity <= usize::from(u16::MAX) + 1 {
            IndexTable::Narrow(HashTable::new())
        } else {
            IndexTable::Wide(HashTable::new())
        }
    }

    /// The index filed under `hash` for which `eq` holds. (Through `iter_hash`,
    /// which inlines `eq`, rather than `find`, which calls it through a `dyn`.)
    #[inline(always)]
    fn find(&self, hash: u64, mut eq: impl FnMut(Index) -> bool) -> Option<Index> {
        match self {
            IndexTable::Narrow(t) => t.iter_hash(hash).map(|&i| Index::from(i)).find(|&i| eq(i)),
            IndexTable::Wide(t) => t.iter_hash(hash).copied().find(|&i| eq(i)),
        }
    }

    /// Files `i` under `hash`; `rehash` gives the hash of any index (when the
    /// table grows).
    fn insert(&mut self, hash: u64, i: Index, rehash: impl Fn(Index) -> u64) {
        match self {
            // The capacity check in `for_capacity` makes every index fit.
            IndexTable::Narrow(t) => {
                t.insert_unique(hash, i as u16, |&j| rehash(Index::from(j)));
            }
            IndexTable::Wide(t) => {
                t.insert_unique(hash, i, |&j| rehash(j));
            }
        }
    }

    /// Removes `i`, filed under `hash`.
    fn remove(&mut self, hash: u64, i: Index) {
        match self {
            IndexTable::Narrow(t) => {
                if let Ok(entry) = t.find_entry(hash, |&j| Index::from(j) == i) {
                    entry.remove();
                }
            }
            IndexTable::Wide(t) => {
                if let Ok(entry) = t.find_entry(hash, |&j| j == i) {
                    entry.remove();
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            IndexTable::Narrow(t) => t.len(),
            IndexTable::Wide(t) => t.len(),
        }
    }

    /// How many times `i` is filed under `hash`.
    #[cfg(test)]
    fn count(&self, hash: u64, i: Index) -> usize {
        match self {
            IndexTable::Narrow(t) => t.iter_hash(hash).filter(|&&j| Index::from(j) == i).count(),
            IndexTable::Wide(t) => t.iter_hash(hash).filter(|&&j| j == i).count(),
        }
    }
}

/// What [`Shard::clear`] took out of a shard, dropped by its owner.
pub(crate) struct Cleared {
    _table: IndexTable,
    _slots: Vec<Slot>,
    _colds: HashMap<Index, Cold, KeyHasher>,
}

/// One shard: slab, index table, cold records, eviction order, and the rest.
pub(crate) struct Shard {
    table: IndexTable,
    slots: Vec<Slot>,
    colds: HashMap<Index, Cold, KeyHasher>,
    /// One `ProjectName` per project name the shard's kept states carry (at
    /// most [`MAX_PROJECTS`]), so that they share one allocation instead of
    /// each keeping the one its first request decoded.
    projects: HashTable<ProjectName>,
    /// The eviction order's state (see the module docs).
    order: Order,
    /// Slots whose entries another shard took ([`Shards`]), reused first.
    vacant: Vec<Index>,
    /// This shard's place in its cache's [`Shards`].
    me: usize,
    /// Entries this shard may hold without drawing on the cache's room ([`Shards::pool`]).
    floor: usize,
    /// The most entries this shard may hold.
    max: usize,
    pub(crate) state: ShardState,
}

/// The rest of a shard: counters and the flights of attempts in flight.
pub(crate) struct ShardState {
    /// The shard's share of the cache's size.
    pub(crate) capacity: usize,
    pub(crate) counters: Counters,
    /// `counters.hits` when hits were last published to `metrics`.
    pub(crate) published_hits: u64,
    /// The next [`AttemptId`].
    next_attempt: AttemptId,
    /// The flights of register attempts that have waiters, by attempt. A flight
    /// exists only once someone waits: an attempt that completes inline with no
    /// concurrent caller costs no allocation. The completing call removes it.
    pub(crate) register_waits: HashMap<AttemptId, Arc<Flight<RegisterResult>>, KeyHasher>,
    /// The same for terminate attempts.
    pub(crate) terminate_waits: HashMap<AttemptId, Arc<Flight<TerminateResult>>, KeyHasher>,
}

/// The most project names a shard shares between its states (a collector
/// serves a handful; past this, states keep their own).
const MAX_PROJECTS: usize = 1024;

impl ShardState {
    fn new_attempt(&mut self) -> AttemptId {
        let id = self.next_attempt;
        self.next_attempt += 1;
        id
    }

    /// The flight of register attempt `id` (made on first use), for a caller that
    /// waits.
    pub(crate) fn register_flight(&mut self, id: AttemptId) -> Arc<Flight<RegisterResult>> {
        Arc::clone(self.register_waits.entry(id).or_insert_with(Flight::new))
    }

    /// The flight of terminate attempt `id` (made on first use).
    pub(crate) fn terminate_flight(&mut self, id: AttemptId) -> Arc<Flight<TerminateResult>> {
        Arc::clone(self.terminate_waits.entry(id).or_insert_with(Flight::new))
    }
}

/// The key of slot `i`: its cold record's, or its state's.
#[cfg(test)]
fn slot_key<'s>(
    slots: &'s [Slot],
    colds: &'s HashMap<Index, Cold, KeyHasher>,
    i: Index,
) -> Option<(&'s str, &'s str)> {
    let slot = slots.get(i as usize)?;
    if slot.meta & KEYED == 0 {
        let state = slot.state.as_ref()?;
        Some((state.project.as_str(), state.path.as_str()))
    } else {
        let key = colds.get(&i)?.key.as_ref()?;
        Some((key.project.as_str(), key.path.as_str()))
    }
}

/// True if slot `i` is the entry of `(project, path)`.
#[inline(always)]
fn slot_is(
    slots: &[Slot],
    colds: &HashMap<Index, Cold, KeyHasher>,
    i: Index,
    project: &str,
    path: &str,
) -> bool {
    let Some(slot) = slots.get(i as usize) else {
        return false;
    };
    match &slot.key {
        SlotKey::None { .. } => return false,
        SlotKey::Inline {
            project_len,
            path_len,
            bytes,
            ..
        } => {
            let (p, s) = SlotKey::inline_parts(*project_len, *path_len, bytes);
            return bytes_eq(s, path.as_bytes()) && bytes_eq(p, project.as_bytes());
        }
        SlotKey::Shared { path: kept, .. } => {
            if !same(kept.as_str(), path) {
                return false;
            }
        }
    }
    if slot.meta & KEYED == 0 {
        slot.state
            .as_ref()
            .is_some_and(|s| same(s.project.as_str(), project))
    } else {
        colds
            .get(&i)
            .and_then(|c| c.key.as_ref())
            .is_some_and(|k| k.is(project, path))
    }
}

/// `state` with `index` as its terminal index (a copy).
fn with_index(state: &LogStreamState, index: MessageIndex) -> Arc<LogStreamState> {
    let mut copy = state.clone();
    copy.terminal_index = Some(index);
    Arc::new(copy)
}

impl Shard {
    /// Shard `me` of a cache, its share of the size `capacity`, holding
    /// `floor` entries at least and `max` at most (capped at 2^31, the most a
    /// [`candidate`] can address; no machine holds that many).
    fn new(me: usize, capacity: usize, floor: usize, max: usize, hasher: KeyHasher) -> Self {
        let max = max.clamp(1, 1 << 31);
        Shard {
            table: IndexTable::for_capacity(max),
            slots: Vec::new(),
            colds: HashMap::with_hasher(hasher),
            projects: HashTable::new(),
            order: Order::default(),
            vacant: Vec::new(),
            me,
            floor: floor.clamp(1, max),
            max,
            state: ShardState {
                capacity,
                counters: Counters::default(),
                published_hits: 0,
                next_attempt: 0,
                register_waits: HashMap::with_hasher(hasher),
                terminate_waits: HashMap::with_hasher(hasher),
            },
        }
    }

    /// The number of entries (live or expired but not yet replaced).
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.vacant.len()
    }

    /// Finds the live entry of `(project, path)` (marking it used), resets it in
    /// place if it expired, or makes a new one (evicting one first if the shard is
    /// full, so that the new entry is never the victim). A new or reset entry
    /// expires at `deadline`, and if `start` is set it holds a new attempt on that
    /// side (what [`begin_register`](Self::begin_register) or
    /// [`begin_terminate`](Self::begin_terminate) would have started).
    #[inline]
    // The hot path's inputs, passed apart rather than bundled into a struct
    // the caller would build on every call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn find_or_insert(
        &mut self,
        hash: u64,
        project: &ProjectName,
        path: &StreamPath,
        time: &mut Time<'_>,
        lifetime: u64,
        start: Option<Side>,
        shards: &Shards,
    ) -> (Index, Found) {
        let (p, s) = (project.as_str(), path.as_str());
        let Shard {
            table,
            slots,
            colds,
            state,
            ..
        } = self;
        let short = short_hash(hash);
        if let Some(i) = table.find(table_hash(short), |i| slot_is(slots, colds, i, p, s)) {
            let slot = &mut slots[i as usize];
            if time.before(slot.deadline()) {
                slot.use_at(shards.tick());
                if slot.meta & COLD != 0
                    && let Some(cold) = colds.get_mut(&i)
                    && cold.forget_expired_errors(time.exact())
                    && cold.is_empty()
                {
                    colds.remove(&i);
                    slot.meta &= !COLD;
                }
                return (i, Found::Live);
            }
            // Expired: a fresh entry in its place, marked used (as if at the back
            // of the eviction order). An attempt still in flight for the old
            // entry keeps its waiters; its completion finds another attempt or
            // none here.
            let mut key = std::mem::replace(&mut slot.key, SlotKey::None { tick: 0 });
            key.use_at(shards.advance());
            *slot = Slot::fresh(time.after(lifetime), true, key);
            let (cold, attempt) = Cold::fresh(project, path, start, state);
            colds.insert(i, cold);
            return (i, Found::Expired { attempt });
        }
        let now = time.exact();
        let deadline = time.after(lifetime);
        let returning = match self.order.returned(short, self.state.capacity) {
            Some(unused) => {
                shards.steer(unused);
                true
            }
            None => false,
        };
        let (i, evicted) = self.make_room(now, shards);
        let Shard {
            table,
            slots,
            colds,
            state,
            ..
        } = self;
        let key = SlotKey::new(p, path, short, shards.advance());
        slots[i as usize] = Slot::fresh(deadline, returning, key);
        let (cold, attempt) = Cold::fresh(project, path, start, state);
        colds.insert(i, cold);
        let hasher = *colds.hasher();
        table.insert(table_hash(short), i, |j| {
            table_hash(
                slots
                    .get(j as usize)
                    .map_or(0, |s| s.key.short_hash(&hasher)),
            )
        });
        // Its next victim changed, or it now has an entry above its floor to
        // give (else what it published stands: ages grow with the counter).
        if evicted || self.len() == self.floor + 1 {
            self.publish(shards);
        }
        (i, Found::New { evicted, attempt })
    }

    /// Expires the entry of `(project, path)` now, if there is one (returns
    /// whether there was): the next caller finds it expired and starts afresh,
    /// and the eviction hand takes it first. An attempt in flight for it keeps
    /// its waiters, and its outcome is recorded in the expired entry only, which
    /// no later caller reads.
    pub(crate) fn invalidate(&mut self, hash: u64, project: &str, path: &str) -> bool {
        let Shard {
            table,
            slots,
            colds,
            ..
        } = self;
        let found = table.find(table_hash(short_hash(hash)), |i| {
            slot_is(slots, colds, i, project, path)
        });
        let Some(i) = found else {
            return false;
        };
        let bound = slots.len() / CANDIDATE_FRACTION;
        let slot = &mut slots[i as usize];
        // Deadline zero: expired at any time (a real deadline is at least the
        // clock's one-day epoch offset plus an expiration).
        slot.meta &= !DEADLINE;
        // The next eviction takes it first (within the list's usual bound; past
        // it, the next collection ranks it first).
        if self.order.candidates.len() <= bound {
            self.order.candidates.push(candidate(i, slot));
        }
        true
    }

    /// Removes every entry and returns what the shard held (to be dropped after
    /// the lock is released) and how many entries that was. Attempts in flight
    /// keep their waiters; their completions find no entry and change nothing.
    pub(crate) fn clear(&mut self, shards: &Shards) -> (Cleared, usize) {
        let len = self.len();
        shards.give_room(len.saturating_sub(self.floor));
        let hasher = *self.colds.hasher();
        let cleared = Cleared {
            _table: std::mem::replace(&mut self.table, IndexTable::for_capacity(self.max)),
            _slots: std::mem::take(&mut self.slots),
            _colds: std::mem::replace(&mut self.colds, HashMap::with_hasher(hasher)),
        };
        self.order.candidates.clear();
        self.vacant.clear();
        self.publish(shards);
        (cleared, len)
    }

    /// A slot for a new entry (the caller fills it) when no entry has to go: a
    /// vacant one, or a new one at the end of the slab. The slab grows by
    /// doubling up to the shard's share, then by an eighth of it at a time,
    /// never past its most.
    fn vacant_slot(&mut self) -> Index {
        if let Some(i) = self.vacant.pop() {
            return i;
        }
        if self.slots.len() == self.slots.capacity() {
            let share = self.state.capacity.max(1);
            let target = if self.slots.len() < share {
                (self.slots.len() * 2).max(16).min(share)
            } else {
                self.slots.len() + (share / CANDIDATE_FRACTION).max(1)
            }
            .min(self.max);
            let more = target.saturating_sub(self.slots.len()).max(1);
            self.slots.reserve_exact(more);
        }
        let i = self.slots.len();
        self.slots
            .push(Slot::fresh(0, false, SlotKey::None { tick: 0 }));
        // `i < max <= 2^31` (see `Shard::new`).
        i as Index
    }

    /// Makes room for a new entry and returns its slot, and whether an entry
    /// was evicted for it: below its floor the shard just grows; below its
    /// most it grows if the cache has room left; else an entry goes: another
    /// shard's, if that shard's next victim is older than this one's by more
    /// than [`Shards::margin`] (and its lock is free), else this shard's own.
    fn make_room(&mut self, now: u64, shards: &Shards) -> (Index, bool) {
        let len = self.len();
        if len < self.floor || (len < self.max && shards.take_room()) {
            return (self.vacant_slot(), false);
        }
        if len < self.max
            && shards.len() > 1
            && let Some(mine) = self.next_victim(now, shards)
        {
            // Each shard that turns out not to be older republishes its true
            // next victim, so this looks at each shard at most once or twice.
            for _ in 0..shards.len() {
                let bonus = shards.bonus();
                let ours = rank(&self.slots[mine as usize], shards.tick(), now, bonus);
                let Some(j) = shards.older_than(self.me, ours) else {
                    break;
                };
                let Some(mut other) = shards.list.get(j).and_then(|o| o.0.try_lock()) else {
                    break;
                };
                if other.len() <= other.floor {
                    other.publish(shards);
                    continue;
                }
                // What it published may be stale (its victim used since):
                // compare the two victims as they are now.
                if let Some(theirs) = other.next_victim(now, shards) {
                    let epoch = shards.tick();
                    let theirs = rank(&other.slots[theirs as usize], epoch, now, bonus);
                    let ours = rank(&self.slots[mine as usize], epoch, now, bonus);
                    if theirs > ours.saturating_add(shards.margin) {
                        let victim = other.evict(now, shards);
                        other.vacant.push(victim);
                        other.publish(shards);
                        drop(other);
                        return (self.vacant_slot(), true);
                    }
                }
                other.publish(shards);
            }
        }
        (self.evict(now, shards), true)
    }

    /// The entry the eviction order takes next (see the module docs), left at
    /// the end of the candidates; `None` if the shard has no entries.
    fn next_victim(&mut self, now: u64, shards: &Shards) -> Option<Index> {
        loop {
            match self.order.candidates.last() {
                Some(&c) => {
                    let (i, tick) = (candidate_index(c), candidate_tick(c));
                    // Still the entry it was, unused since (or expired anyway).
                    if let Some(slot) = self.slots.get(i as usize)
                        && !slot.is_vacant()
                        && (slot.key.tick() == tick || slot.deadline() <= now)
                    {
                        return Some(i);
                    }
                    self.order.candidates.pop();
                }
                // The first candidate collected is valid, so this ends.
                None => {
                    let epoch = shards.advance();
                    self.order.collect(&self.slots, now, epoch, shards.bonus());
                    if self.order.candidates.is_empty() {
                        return None;
                    }
                }
            }
        }
    }

    /// Tells the other shards how old this one's next victim is, if it has
    /// entries above its floor to give ([`Shards::older_than`]). The next
    /// candidate is not checked: if it was used since, it looks older than the
    /// true next victim. Without candidates, the last victim's stands in (the
    /// next is younger), or before the first eviction the current tick (every
    /// entry is at least that old). A shard that takes another's entry
    /// compares the two victims under both locks first
    /// ([`make_room`](Self::make_room)), so an estimate never makes it take a
    /// younger one.
    fn publish(&self, shards: &Shards) {
        if shards.len() <= 1 {
            return;
        }
        let head = if self.len() <= self.floor {
            0
        } else if let Some(&c) = self.order.candidates.last() {
            // From the candidate alone: its slot is likely not in the CPU's
            // cache, and an expired victim will be found by the comparison.
            shards.head(candidate_tick(c), candidate_unused(c))
        } else if self.order.last_victim != 0 {
            self.order.last_victim
        } else {
            HEAD_VALID | u64::from(shards.tick())
        };
        if let Some(h) = shards.heads.get(self.me)
            && h.load(Relaxed) != head
        {
            h.store(head, Relaxed);
        }
    }

    /// `slot` as a published head ([`Shards::heads`]) at `now`.
    fn head_of(slot: &Slot, now: u64, shards: &Shards) -> u64 {
        let expired = if slot.deadline() <= now {
            HEAD_EXPIRED
        } else {
            0
        };
        shards.head(slot.key.tick(), slot.meta & USED == 0) | expired
    }

    /// Removes the entry the eviction order picks (see the module docs) and
    /// returns its slot's index for reuse (a new slot if the shard is empty).
    fn evict(&mut self, now: u64, shards: &Shards) -> Index {
        let Some(victim) = self.next_victim(now, shards) else {
            // An empty shard (its floor is at least 1, so never).
            return self.vacant_slot();
        };
        self.order.candidates.pop();
        let slot = &self.slots[victim as usize];
        self.order.last_victim = Self::head_of(slot, now, shards);
        let short = slot.key.short_hash(self.colds.hasher());
        if slot.deadline() > now {
            self.order
                .forget(short, slot.meta & USED == 0, self.state.capacity);
        }
        let cold = slot.meta & COLD != 0;
        self.table.remove(table_hash(short), victim);
        if cold {
            self.colds.remove(&victim);
        }
        let slot = &mut self.slots[victim as usize];
        slot.state = None;
        slot.key = SlotKey::None { tick: 0 };
        slot.meta &= !(COLD | KEYED);
        victim
    }

    /// `state` with its project name shared with the shard's other states, if
    /// the cache holds the only reference to it (so it can change in place).
    fn share_project(&mut self, mut state: Arc<LogStreamState>) -> Arc<LogStreamState> {
        let Some(unique) = Arc::get_mut(&mut state) else {
            return state;
        };
        let hasher = *self.colds.hasher();
        let name = unique.project.as_str();
        let hash = hasher.hash_one(name);
        if let Some(shared) = self.projects.find(hash, |p| p.as_str() == name) {
            unique.project = shared.clone();
        } else if self.projects.len() < MAX_PROJECTS {
            self.projects
                .insert_unique(hash, unique.project.clone(), |p| {
                    hasher.hash_one(p.as_str())
                });
        }
        state
    }

    /// The terminal index known to be recorded remotely for slot `i`.
    fn known(&self, i: Index) -> Option<MessageIndex> {
        let slot = &self.slots[i as usize];
        if slot.meta & COLD != 0
            && let Some(Cold {
                terminate: TerminateCold::Known(index),
                ..
            }) = self.colds.get(&i)
        {
            return Some(*index);
        }
        slot.state.as_ref().and_then(|s| s.terminal_index)
    }

    /// Puts slot `i`'s cold record back, without what it no longer needs to hold
    /// given the slot's state, and not at all if that leaves nothing; keeps the
    /// slot's flag bits in step.
    fn put_back(&mut self, i: Index, mut cold: Cold) {
        let slot = &mut self.slots[i as usize];
        if let Some(state) = &slot.state {
            if matches!(cold.terminate, TerminateCold::Known(index) if state.terminal_index == Some(index))
            {
                cold.terminate = TerminateCold::Empty;
            }
            if cold
                .key
                .as_ref()
                .is_some_and(|k| k.is(state.project.as_str(), state.path.as_str()))
            {
                cold.key = None;
            }
        }
        slot.meta &= !(COLD | KEYED);
        if cold.key.is_some() {
            slot.meta |= KEYED;
        }
        if cold.is_empty() {
            return;
        }
        slot.meta |= COLD;
        self.colds.insert(i, cold);
    }

    /// What a register caller of slot `i` does: take the kept answer, join the
    /// attempt in flight, or start one (which the entry then holds).
    #[inline]
    pub(crate) fn begin_register(&mut self, i: Index) -> Begin<RegisterResult> {
        if let Some(state) = &self.slots[i as usize].state {
            return Begin::Answer(Ok(Arc::clone(state)));
        }
        let Some(cold) = self.colds.get_mut(&i) else {
            return Begin::Answer(Err(corrupted()));
        };
        match &cold.register {
            RegisterCold::Failed(error, _) => Begin::Answer(Err(error.clone())),
            RegisterCold::Pending(id) => Begin::Join(*id),
            RegisterCold::Empty => {
                let id = self.state.new_attempt();
                cold.register = RegisterCold::Pending(id);
                Begin::Start(id)
            }
        }
    }

    /// Records the outcome of register attempt `id` in slot `i`, if the slot
    /// still holds that attempt (else changes nothing); a permanent error is kept
    /// until `error_until` at most. Returns what the attempt's callers get: the
    /// outcome, with the entry's known terminal index filled in.
    pub(crate) fn complete_register(
        &mut self,
        i: Index,
        id: AttemptId,
        result: RegisterResult,
        error_until: u64,
    ) -> RegisterResult {
        let Some(mut cold) = self.colds.remove(&i) else {
            return result; // the slot has a state (so no attempt) or was reset
        };
        if !matches!(cold.register, RegisterCold::Pending(p) if p == id) {
            // Replaced (expired or evicted), maybe by a newer attempt.
            self.colds.insert(i, cold);
            return result;
        }
        let value = match result {
            Ok(state) => {
                let known = match cold.terminate {
                    TerminateCold::Known(index) => Some(index),
                    _ => None,
                };
                let state = match (state.terminal_index, known) {
                    // The remote state's index is now the known one; a terminate
                    // in flight no longer matters (its callers still get its
                    // answer).
                    (Some(_), None) => {
                        cold.terminate = TerminateCold::Empty;
                        state
                    }
                    (None, Some(index)) => {
                        cold.terminate = TerminateCold::Empty;
                        with_index(&state, index)
                    }
                    _ => state,
                };
                cold.register = RegisterCold::Empty;
                let state = self.share_project(state);
                let slot = &mut self.slots[i as usize];
                // Keep one allocation of the path if the state carries its own.
                if let SlotKey::Shared { path, .. } = &mut slot.key
                    && !std::ptr::eq(path.as_str(), state.path.as_str())
                    && *path == state.path
                {
                    *path = state.path.clone();
                }
                slot.state = Some(Arc::clone(&state));
                Ok(state)
            }
            Err(error) if error.is_transient() => {
                cold.register = RegisterCold::Empty;
                Err(error)
            }
            Err(error) => {
                cold.register = RegisterCold::Failed(error.clone(), error_until);
                Err(error)
            }
        };
        self.put_back(i, cold);
        value
    }

    /// What a terminate caller of slot `i` does. With a known terminal index the
    /// answer is success, and the index is returned too (to compare with the
    /// requested one).
    pub(crate) fn begin_terminate(
        &mut self,
        i: Index,
    ) -> (Begin<TerminateResult>, Option<MessageIndex>) {
        if let Some(index) = self.known(i) {
            return (Begin::Answer(Ok(())), Some(index));
        }
        let Shard {
            slots,
            colds,
            state,
            ..
        } = self;
        slots[i as usize].meta |= COLD;
        let cold = colds.entry(i).or_insert_with(Cold::empty);
        let begin = match &cold.terminate {
            TerminateCold::Failed(error, _) => Begin::Answer(Err(error.clone())),
            TerminateCold::Pending(id) => Begin::Join(*id),
            // `known` found none, so no `Known` here.
            TerminateCold::Empty | TerminateCold::Known(_) => {
                let id = state.new_attempt();
                cold.terminate = TerminateCold::Pending(id);
                Begin::Start(id)
            }
        };
        (begin, None)
    }

    /// Records the outcome of terminate attempt `id` (which asked for `index`) in
    /// slot `i`, if the slot still holds that attempt. On success the entry knows
    /// `index`: a kept state without a terminal index is replaced by a copy with
    /// it. A permanent error is kept until `error_until` at most.
    pub(crate) fn complete_terminate(
        &mut self,
        i: Index,
        id: AttemptId,
        index: MessageIndex,
        result: &TerminateResult,
        error_until: u64,
    ) {
        let Some(mut cold) = self.colds.remove(&i) else {
            return;
        };
        if !matches!(cold.terminate, TerminateCold::Pending(p) if p == id) {
            // Replaced, or a registered state's index became the known one.
            self.colds.insert(i, cold);
            return;
        }
        cold.terminate = match result {
            Ok(()) => TerminateCold::Known(index),
            Err(error) if error.is_transient() => TerminateCold::Empty,
            Err(error) => TerminateCold::Failed(error.clone(), error_until),
        };
        let slot = &mut self.slots[i as usize];
        if let (Ok(()), Some(state)) = (result, &mut slot.state)
            && state.terminal_index.is_none()
        {
            *state = with_index(state, index);
        }
        self.put_back(i, cold);
    }
}

impl Cold {
    /// Forgets kept permanent errors whose own deadline (see
    /// [`CacheBuilder::error_expiration`](crate::CacheBuilder::error_expiration))
    /// has passed at `now`, so that the next caller starts a new attempt;
    /// returns whether it forgot one.
    #[inline]
    fn forget_expired_errors(&mut self, now: u64) -> bool {
        let mut forgot = false;
        if matches!(self.register, RegisterCold::Failed(_, until) if until <= now) {
            self.register = RegisterCold::Empty;
            forgot = true;
        }
        if matches!(self.terminate, TerminateCold::Failed(_, until) if until <= now) {
            self.terminate = TerminateCold::Empty;
            forgot = true;
        }
        forgot
    }

    /// Whether the record holds nothing (so it should not exist).
    fn is_empty(&self) -> bool {
        self.key.is_none()
            && matches!(self.register, RegisterCold::Empty)
            && matches!(self.terminate, TerminateCold::Empty)
    }

    /// A record holding nothing (yet).
    fn empty() -> Self {
        Cold {
            key: None,
            register: RegisterCold::Empty,
            terminate: TerminateCold::Empty,
        }
    }

    /// A fresh entry's record: its key, and a new attempt on side `start`.
    fn fresh(
        project: &ProjectName,
        path: &StreamPath,
        start: Option<Side>,
        state: &mut ShardState,
    ) -> (Self, Option<AttemptId>) {
        let attempt = start.map(|_| state.new_attempt());
        let pending = |side| match (start, attempt) {
            (Some(s), Some(id)) if s == side => Some(id),
            _ => None,
        };
        let cold = Cold {
            key: Some(Key::new(project, path)),
            register: pending(Side::Register).map_or(RegisterCold::Empty, RegisterCold::Pending),
            terminate: pending(Side::Terminate)
                .map_or(TerminateCold::Empty, TerminateCold::Pending),
        };
        (cold, attempt)
    }
}

/// A shard behind its lock, alone on its cache lines so that two threads using
/// different shards do not slow each other down.
#[repr(align(128))]
pub(crate) struct PaddedShard(pub(crate) Mutex<Shard>);

/// A value alone on its cache lines.
#[repr(align(128))]
struct Padded<T>(T);

/// Set in a published head ([`Shard::publish`]) if the shard has an entry
/// above its floor to give.
const HEAD_VALID: u64 = 1 << 32;
/// Set in a published head if the shard's next victim has expired.
const HEAD_EXPIRED: u64 = 1 << 33;
/// A shard takes another shard's next victim instead of its own only if that
/// one is older by more than this fraction of the cache's size, in ticks (so
/// that shards in balance keep to themselves).
const MARGIN_FRACTION: usize = 256;
/// Index tables of 2-byte buckets address this many slots.
const NARROW: usize = 1 << 16;

/// A cache's shards and what they share: the use counter their eviction
/// orders count in, the room left under the size bound, and each one's next
/// victim, published for the others.
///
/// Each shard has a share of the size. It may hold up to half of it (its
/// *floor*) on its own; past that, each new entry takes a unit of the cache's
/// room (the size minus the floors) while there is some, up to twice its
/// share. With no room left an entry goes for each new one. So the size bound
/// holds across the cache, while a shard that gets more than its share of the
/// live keys keeps them: the shards together approximate one least recently
/// used order, as a cache with one shard keeps exactly.
pub(crate) struct Shards {
    list: Box<[PaddedShard]>,
    /// The use counter: advanced by every new (or reset) entry and every
    /// collection, and written into an entry's slot when it is used.
    tick: Padded<AtomicU32>,
    /// Entries the shards may still add above their floors without evicting,
    /// and the bonus (see the module docs), the same for every shard so that
    /// their victims compare.
    pool: Padded<(AtomicUsize, AtomicU32)>,
    /// Per shard, its next victim ([`Shard::publish`]): its tick (less the
    /// bonus if unused) in the low 32 bits, and the flags above.
    heads: Box<[AtomicU64]>,
    /// The most entries the cache holds.
    size: usize,
    /// [`MARGIN_FRACTION`] of the size.
    margin: u32,
}

impl Shards {
    /// `count` shards splitting `size` (at least `count`) exactly.
    pub(crate) fn new(size: usize, count: usize, hasher: KeyHasher) -> Self {
        let count = count.clamp(1, size.max(1));
        let (base, extra) = (size / count, size % count);
        let mut floors = 0;
        let list: Box<[PaddedShard]> = (0..count)
            .map(|i| {
                let share = base + usize::from(i < extra);
                let (floor, max) = if count == 1 {
                    (share, share)
                } else {
                    let max = share.saturating_mul(2).min(size);
                    // Keep 2-byte indexes where the share has them.
                    let max = if share <= NARROW {
                        max.min(NARROW)
                    } else {
                        max
                    };
                    ((share / 2).max(1), max.max(share))
                };
                floors += floor;
                PaddedShard(Mutex::new(Shard::new(i, share, floor, max, hasher)))
            })
            .collect();
        Shards {
            heads: list.iter().map(|_| AtomicU64::new(0)).collect(),
            list,
            tick: Padded(AtomicU32::new(0)),
            pool: Padded((
                AtomicUsize::new(size.saturating_sub(floors)),
                AtomicU32::new(0),
            )),
            size,
            margin: u32::try_from(size / MARGIN_FRACTION).unwrap_or(u32::MAX),
        }
    }

    /// The use counter's current tick.
    #[inline]
    fn tick(&self) -> Tick {
        self.tick.0.load(Relaxed)
    }

    /// Advances the use counter; returns the new tick.
    #[inline]
    fn advance(&self) -> Tick {
        self.tick.0.fetch_add(1, Relaxed).wrapping_add(1)
    }

    /// Takes a unit of room, if there is one left.
    fn take_room(&self) -> bool {
        self.pool
            .0
            .0
            .fetch_update(Relaxed, Relaxed, |r| r.checked_sub(1))
            .is_ok()
    }

    /// Gives back `n` units of room.
    fn give_room(&self, n: usize) {
        if n > 0 {
            self.pool.0.0.fetch_add(n, Relaxed);
        }
    }

    /// How many ticks older than it is an entry without the used bit counts.
    fn bonus(&self) -> u32 {
        self.pool.0.1.load(Relaxed)
    }

    /// A published head ([`Shard::publish`]) for a victim last used at
    /// `tick`, counted older by the bonus if it was never used.
    fn head(&self, tick: Tick, unused: bool) -> u64 {
        let bonus = if unused { self.bonus() } else { 0 };
        HEAD_VALID | u64::from(tick.wrapping_sub(bonus))
    }

    /// The most entries the cache holds.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Steers the bonus after a ghost returned ([`steer`]).
    fn steer(&self, unused: bool) {
        // Never fails: the closure always returns a value.
        let _ = self
            .pool
            .0
            .1
            .fetch_update(Relaxed, Relaxed, |b| Some(steer(b, unused, self.size)));
    }

    /// The shard other than `me` with an entry to give whose next victim is
    /// the oldest, if its rank beats `mine` by more than the margin.
    fn older_than(&self, me: usize, mine: u32) -> Option<usize> {
        let now = self.tick();
        let bar = mine.saturating_add(self.margin);
        let mut best: Option<(u32, usize)> = None;
        for (j, head) in self.heads.iter().enumerate() {
            let head = head.load(Relaxed);
            if j == me || head & HEAD_VALID == 0 {
                continue;
            }
            let rank = if head & HEAD_EXPIRED != 0 {
                u32::MAX
            } else {
                now.wrapping_sub(head as u32)
            };
            if rank > bar && best.is_none_or(|(r, _)| rank > r) {
                best = Some((rank, j));
            }
        }
        best.map(|(_, j)| j)
    }
}

#[cfg(test)]
impl Shards {
    /// What a cache of `size` entries would share with a lone shard made
    /// outside it (no other shards to take entries from).
    pub(crate) fn detached(size: usize) -> Self {
        Shards {
            list: Box::new([]),
            tick: Padded(AtomicU32::new(0)),
            pool: Padded((AtomicUsize::new(0), AtomicU32::new(0))),
            heads: Box::new([AtomicU64::new(0)]),
            size,
            margin: 0,
        }
    }
}

impl Deref for Shards {
    type Target = [PaddedShard];

    fn deref(&self) -> &[PaddedShard] {
        &self.list
    }
}

impl PaddedShard {
    /// Takes the shard's lock (a scheduling point for the model checker).
    #[inline]
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, Shard> {
        interleave::lock(&self.0)
    }
}

/// What an entry holds, as the model checker sees it.
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) struct EntryView {
    pub(crate) generation: u64,
    pub(crate) register: RegisterView,
    pub(crate) terminate: TerminateView,
}

/// The register side of an [`EntryView`].
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) enum RegisterView {
    Empty,
    Pending(AttemptId),
    Ready(Arc<LogStreamState>),
    Failed(Error),
}

/// The terminate side of an [`EntryView`].
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) enum TerminateView {
    Empty,
    Pending(AttemptId),
    Failed(Error),
    Known(MessageIndex),
}

#[cfg(test)]
impl Shard {
    /// The index of the entry of `(project, path)`, if any.
    pub(crate) fn find(&self, hash: u64, project: &str, path: &str) -> Option<Index> {
        self.table.find(table_hash(short_hash(hash)), |i| {
            slot_is(&self.slots, &self.colds, i, project, path)
        })
    }

    pub(crate) fn view(&self, i: Index) -> EntryView {
        let slot = &self.slots[i as usize];
        let cold = self.colds.get(&i);
        EntryView {
            generation: slot.generation,
            register: match (&slot.state, cold.map(|c| &c.register)) {
                (Some(state), _) => RegisterView::Ready(Arc::clone(state)),
                (None, Some(RegisterCold::Pending(id))) => RegisterView::Pending(*id),
                (None, Some(RegisterCold::Failed(error, _))) => RegisterView::Failed(error.clone()),
                (None, _) => RegisterView::Empty,
            },
            terminate: match (self.known(i), cold.map(|c| &c.terminate)) {
                (Some(index), _) => TerminateView::Known(index),
                (None, Some(TerminateCold::Pending(id))) => TerminateView::Pending(*id),
                (None, Some(TerminateCold::Failed(error, _))) => {
                    TerminateView::Failed(error.clone())
                }
                (None, _) => TerminateView::Empty,
            },
        }
    }

    /// Panics if the table's structure is broken: every slot is in the index table
    /// exactly once under its key's hash, the flag bits match the cold records,
    /// and no cold record holds nothing.
    pub(crate) fn check_structure(&self, hasher: &KeyHasher) {
        assert!(self.slots.len() <= self.max);
        assert!(self.floor <= self.max);
        assert_eq!(self.table.len(), self.len(), "index table vs entries");
        for (i, slot) in self.slots.iter().enumerate() {
            let i = i as Index;
            let cold = self.colds.get(&i);
            if slot.is_vacant() {
                assert!(self.vacant.contains(&i), "slot {i}: vacant but not listed");
                assert!(cold.is_none(), "slot {i}: vacant with a cold record");
                continue;
            }
            assert!(!self.vacant.contains(&i), "slot {i}: listed vacant");
            assert_eq!(slot.meta & COLD != 0, cold.is_some(), "slot {i}: COLD bit");
            assert_eq!(
                slot.meta & KEYED != 0,
                cold.is_some_and(|c| c.key.is_some()),
                "slot {i}: KEYED bit"
            );
            assert!(
                slot.state.is_some() || slot.meta & KEYED != 0,
                "slot {i}: no key"
            );
            if let Some(cold) = cold {
                assert!(
                    cold.key.is_some()
                        || !matches!(cold.register, RegisterCold::Empty)
                        || !matches!(cold.terminate, TerminateCold::Empty),
                    "slot {i}: an empty cold record"
                );
                assert!(
                    slot.state.is_none() || matches!(cold.register, RegisterCold::Empty),
                    "slot {i}: a register attempt or error beside a state"
                );
            }
            let (project, path) = slot_key(&self.slots, &self.colds, i).expect("a key");
            let short = short_hash(hash_key(hasher, project, path));
            assert_eq!(slot.key.short_hash(hasher), short, "slot {i}: kept hash");
            assert!(
                slot_is(&self.slots, &self.colds, i, project, path),
                "slot {i}: the slot's key"
            );
            assert_eq!(
                self.table.count(table_hash(short), i),
                1,
                "slot {i}: not in the index table under its key's hash"
            );
        }
        assert!(self.colds.keys().all(|&i| (i as usize) < self.slots.len()));
    }
}

// A slot is one cache line (outside unit tests, which add a ghost field).
#[cfg(not(test))]
const _: () = assert!(std::mem::size_of::<Slot>() == 64);
const _: () = assert!(std::mem::size_of::<SlotKey>() == 48);

#[cfg(test)]
mod tests {
    use coordinator_api::{RegisterRequest, StreamId};

    use super::*;

    const DAY: u64 = 86_400_000_000_000;
    /// A kept error's deadline: the entry's.
    const NEVER: u64 = MAX_NANOS;

    /// A slot key with the last-use tick `tick` (an empty key: these slots
    /// are ranked, not looked up).
    fn keyed(tick: Tick) -> SlotKey {
        SlotKey::Inline {
            tick,
            project_len: 0,
            path_len: 0,
            bytes: [0; INLINE],
        }
    }

    fn request(path: &str) -> RegisterRequest {
        RegisterRequest::parse("proj", path, &[1; 36], None).unwrap()
    }

    fn state_for(r: &RegisterRequest) -> Arc<LogStreamState> {
        Arc::new(LogStreamState::from_request(r, StreamId::for_path(&r.path)))
    }

    /// A shard and its hasher, with helpers that key by path.
    struct Fixture {
        shard: Shard,
        /// What a cache would share with the shard (no other shards).
        shards: Shards,
        hasher: KeyHasher,
    }

    impl Fixture {
        fn new(capacity: usize) -> Self {
            let hasher = KeyHasher::default();
            Fixture {
                shard: Shard::new(0, capacity, capacity, capacity, hasher),
                shards: Shards::detached(capacity),
                hasher,
            }
        }

        /// A shard of `capacity` entries, full: `p/+/s0` .. registered at time 0,
        /// in order.
        fn full(capacity: usize) -> Self {
            let mut f = Fixture::new(capacity);
            for k in 0..capacity {
                f.register(&format!("p/+/s{k}"), 0);
            }
            f
        }

        fn hash(&self, r: &RegisterRequest) -> u64 {
            hash_key(&self.hasher, r.project.as_str(), r.path.as_str())
        }

        /// [`Shard::find_or_insert`] for `r` (hashed `hash`) at time `now`,
        /// a new entry living `lifetime`, starting no attempt.
        fn insert(
            &mut self,
            r: &RegisterRequest,
            hash: u64,
            now: u64,
            lifetime: u64,
        ) -> (Index, Found) {
            self.shard.find_or_insert(
                hash,
                &r.project,
                &r.path,
                &mut Time::at(now),
                lifetime,
                None,
                &self.shards,
            )
        }

        /// Finds or inserts `path` at time `now` (entries live one day).
        fn touch(&mut self, path: &str, now: u64) -> (Index, Found) {
            let r = request(path);
            let hash = self.hash(&r);
            let found = self.insert(&r, hash, now, DAY);
            self.shard.check_structure(&self.hasher);
            found
        }

        fn contains(&self, path: &str) -> bool {
            let r = request(path);
            self.shard
                .find(self.hash(&r), r.project.as_str(), r.path.as_str())
                .is_some()
        }

        /// Registers `path` with an inner call that succeeds at once.
        fn register(&mut self, path: &str, now: u64) -> Arc<LogStreamState> {
            let (i, _) = self.touch(path, now);
            match self.shard.begin_register(i) {
                Begin::Answer(result) => result.unwrap(),
                Begin::Start(id) => {
                    let state = self
                        .shard
                        .complete_register(i, id, Ok(state_for(&request(path))), NEVER)
                        .unwrap();
                    self.shard.check_structure(&self.hasher);
                    state
                }
                Begin::Join(_) => panic!("nothing in flight"),
            }
        }
    }

    /// Inserts `path` into shard `j` of `shards` directly (as if its key
    /// were filed there) at time `now`; checks the structure of every shard.
    fn insert_into(shards: &Shards, j: usize, path: &str, now: u64, hasher: &KeyHasher) -> Found {
        let r = request(path);
        let hash = hash_key(hasher, r.project.as_str(), r.path.as_str());
        let (_, found) = shards[j].0.lock().find_or_insert(
            hash,
            &r.project,
            &r.path,
            &mut Time::at(now),
            DAY,
            None,
            shards,
        );
        for shard in shards.iter() {
            shard.0.lock().check_structure(hasher);
        }
        found
    }

    fn lens(shards: &Shards) -> Vec<usize> {
        shards.iter().map(|s| s.0.lock().len()).collect()
    }

    fn holds(shards: &Shards, j: usize, path: &str, hasher: &KeyHasher) -> bool {
        let r = request(path);
        let hash = hash_key(hasher, r.project.as_str(), r.path.as_str());
        shards[j]
            .0
            .lock()
            .find(hash, r.project.as_str(), r.path.as_str())
            .is_some()
    }

    const NEW: Found = Found::New {
        evicted: false,
        attempt: None,
    };
    const EVICTED: Found = Found::New {
        evicted: true,
        attempt: None,
    };

    #[test]
    fn a_shard_grows_past_its_share_while_the_cache_has_room() {
        let hasher = KeyHasher::default();
        // Size 8 in 2 shards: shares of 4, floors of 2, room 4.
        let shards = Shards::new(8, 2, hasher);
        for k in 0..6 {
            assert_eq!(
                insert_into(&shards, 0, &format!("p/+/a{k}"), 0, &hasher),
                NEW
            );
        }
        // No room left: shard 0 evicts (shard 1 has nothing above its floor).
        assert_eq!(insert_into(&shards, 0, "p/+/a6", 0, &hasher), EVICTED);
        assert_eq!(lens(&shards), [6, 0]);
        // Shard 1 still has its floor.
        for k in 0..2 {
            assert_eq!(
                insert_into(&shards, 1, &format!("p/+/b{k}"), 0, &hasher),
                NEW
            );
        }
        assert_eq!(lens(&shards), [6, 2]);
        // Past its floor, with no room, shard 1 takes shard 0's oldest entry.
        assert_eq!(insert_into(&shards, 1, "p/+/b2", 0, &hasher), EVICTED);
        assert_eq!(lens(&shards), [5, 3]);
        assert!(
            !holds(&shards, 0, "p/+/a1", &hasher),
            "a0 went first, then a1"
        );
        assert!(holds(&shards, 1, "p/+/b2", &hasher));
        // Clearing a shard gives its room back.
        let (_, n) = shards[0].0.lock().clear(&shards);
        assert_eq!(n, 5);
        for k in 3..6 {
            assert_eq!(
                insert_into(&shards, 1, &format!("p/+/b{k}"), 0, &hasher),
                NEW
            );
        }
        assert_eq!(lens(&shards), [0, 6]);
    }

    #[test]
    fn a_shard_takes_an_older_entry_from_another_not_its_own() {
        let hasher = KeyHasher::default();
        let shards = Shards::new(8, 2, hasher);
        // a0..a3 in shard 0, then b0..b3 in shard 1: the cache is full, and
        // a0 is the least recently used.
        for k in 0..4 {
            insert_into(&shards, 0, &format!("p/+/a{k}"), 0, &hasher);
        }
        for k in 0..4 {
            insert_into(&shards, 1, &format!("p/+/b{k}"), 0, &hasher);
        }
        assert_eq!(insert_into(&shards, 1, "p/+/c0", 0, &hasher), EVICTED);
        assert!(!holds(&shards, 0, "p/+/a0", &hasher));
        assert!((0..4).all(|k| holds(&shards, 1, &format!("p/+/b{k}"), &hasher)));
        assert_eq!(lens(&shards), [3, 5]);
        // Once shard 0's entries are used, shard 1's own oldest goes.
        for k in 1..4 {
            assert_eq!(
                insert_into(&shards, 0, &format!("p/+/a{k}"), 0, &hasher),
                Found::Live
            );
        }
        shards.advance();
        assert_eq!(insert_into(&shards, 1, "p/+/c1", 0, &hasher), EVICTED);
        assert!((1..4).all(|k| holds(&shards, 0, &format!("p/+/a{k}"), &hasher)));
        assert!(!holds(&shards, 1, "p/+/b0", &hasher));
        assert_eq!(lens(&shards), [3, 5]);
    }

    #[test]
    fn shards_never_hold_more_than_the_size_together() {
        let hasher = KeyHasher::default();
        let shards = Shards::new(64, 4, hasher);
        let mut x: u64 = 7;
        let mut next = |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        let mut seen = 0;
        for step in 0..3000 {
            // Skewed: shard 0 gets half the keys.
            let j = if next(2) == 0 { 0 } else { next(4) as usize };
            insert_into(&shards, j, &format!("p/+/k{}", next(200)), step, &hasher);
            if step % 500 == 499 {
                let j = next(4) as usize;
                shards[j].0.lock().clear(&shards);
            }
            let total: usize = lens(&shards).iter().sum();
            assert!(total <= 64, "step {step}: {total} entries");
            seen = seen.max(total);
        }
        assert_eq!(seen, 64, "the cache fills up");
        assert!(
            lens(&shards).iter().all(|&n| n <= 32),
            "at most twice a share"
        );
    }

    #[test]
    fn a_registered_entry_is_a_slot_alone() {
        let mut f = Fixture::new(8);
        let state = f.register("p/+/a", 0);
        let (i, found) = f.touch("p/+/a", 1);
        assert_eq!(found, Found::Live);
        // No cold record: the state's project and path are the key.
        assert!(f.shard.colds.is_empty());
        assert_eq!(f.shard.slots[i as usize].meta & (COLD | KEYED), 0);
        assert!(
            matches!(f.shard.begin_register(i), Begin::Answer(Ok(s)) if Arc::ptr_eq(&s, &state))
        );
    }

    #[test]
    fn bytes_eq_finds_a_difference_at_every_position_and_length() {
        for n in 0..=80 {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(bytes_eq(&a, &a.clone()), "length {n}");
            for k in 0..n {
                let mut b = a.clone();
                b[k] ^= 0x20;
                assert!(!bytes_eq(&a, &b), "length {n}, byte {k}");
            }
            assert!(!bytes_eq(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }

    #[test]
    fn long_paths_are_kept_by_reference_and_compared_as_text() {
        let long = |tail: &str| format!("a-prefix-long-enough-to-pass-the-inline-copy/+/{tail}");
        let mut f = Fixture::new(8);
        let (a, b) = (long("stdout"), long("stderr"));
        assert_eq!(a.len(), b.len());
        assert!(a.len() > INLINE);
        let state = f.register(&a, 0);
        let (i, found) = f.touch(&a, 1);
        assert_eq!(found, Found::Live);
        // The state came with its own copy of the path: the slot keeps that one
        // (one allocation for the entry, not the first request's as well).
        assert!(matches!(
            &f.shard.slots[i as usize].key,
            SlotKey::Shared { path, .. } if std::ptr::eq(path.as_str(), state.path.as_str())
        ));
        assert!(
            matches!(f.shard.begin_register(i), Begin::Answer(Ok(s)) if Arc::ptr_eq(&s, &state))
        );
        // Same length, same prefix, another stream.
        assert!(!f.contains(&b));
        let (j, found) = f.touch(&b, 1);
        assert_ne!(i, j);
        assert!(matches!(found, Found::New { .. }));
        // A short path is a copy.
        let (k, _) = f.touch("p/+/short", 1);
        assert!(matches!(
            f.shard.slots[k as usize].key,
            SlotKey::Inline {
                project_len: 4,
                path_len: 9,
                ..
            }
        ));
    }

    #[test]
    fn kept_states_share_one_project_name() {
        let mut f = Fixture::new(8);
        // Each request (and so each state) decodes its own project string.
        let a = f.register("p/+/a", 0);
        let b = f.register("p/+/b", 0);
        assert_eq!(a.project.as_str(), "proj");
        assert!(std::ptr::eq(a.project.as_str(), b.project.as_str()));

        // A state someone else also holds is kept as it is.
        let r = request("p/+/c");
        let hash = f.hash(&r);
        let (i, found) = f.insert(&r, hash, 0, DAY);
        let Begin::Start(id) = f.shard.begin_register(i) else {
            panic!("a new entry starts an attempt, not {found:?}")
        };
        let held = state_for(&r);
        let kept = f
            .shard
            .complete_register(i, id, Ok(Arc::clone(&held)), NEVER)
            .unwrap();
        assert!(Arc::ptr_eq(&kept, &held));
        assert!(std::ptr::eq(kept.project.as_str(), r.project.as_str()));
        assert!(!std::ptr::eq(kept.project.as_str(), a.project.as_str()));
    }

    #[test]
    fn the_least_recently_used_entry_goes() {
        let mut f = Fixture::new(4);
        for path in ["p/+/a", "p/+/b", "p/+/c", "p/+/d"] {
            f.register(path, 0);
        }
        // Last uses, oldest first: c, d, b, a (a use's tick is the counter's,
        // advanced by every insertion: here between the uses as well).
        f.shards.advance();
        assert_eq!(f.touch("p/+/b", 1).1, Found::Live);
        f.shards.advance();
        assert_eq!(f.touch("p/+/a", 1).1, Found::Live);
        assert_eq!(
            f.touch("p/+/e", 2).1,
            Found::New {
                evicted: true,
                attempt: None
            }
        );
        assert!(!f.contains("p/+/c"));
        f.touch("p/+/f", 3);
        assert!(!f.contains("p/+/d"));
        f.touch("p/+/g", 4);
        assert!(!f.contains("p/+/b"));
        assert!(
            ["p/+/a", "p/+/e", "p/+/f", "p/+/g"]
                .iter()
                .all(|p| f.contains(p))
        );
        assert_eq!(f.shard.len(), 4);
    }

    #[test]
    fn when_every_entry_was_used_the_least_recently_used_goes() {
        // Fill s0..s3, use s3, s2, s1, s0, insert s4: s3 goes (CLOCK, with one
        // bit of history, would take s0, the most recently used).
        let mut f = Fixture::full(4);
        for k in (0..4).rev() {
            // An insertion between uses, so each use has its own tick.
            assert_eq!(f.touch(&format!("p/+/s{k}"), 1).1, Found::Live);
            f.shards.advance();
        }
        f.touch("p/+/s4", 2);
        assert!(!f.contains("p/+/s3"));
        assert!(
            [0, 1, 2, 4]
                .iter()
                .all(|k| f.contains(&format!("p/+/s{k}")))
        );
    }

    #[test]
    fn a_candidate_used_after_collection_is_spared() {
        let mut f = Fixture::full(16);
        // The first eviction collects the two oldest (s0, s1) and takes s0.
        f.touch("p/+/new0", 1);
        assert!(!f.contains("p/+/s0"));
        assert_eq!(f.shard.order.candidates.len(), 1);
        // s1 is used: its candidacy is stale, and the next oldest goes.
        assert_eq!(f.touch("p/+/s1", 2).1, Found::Live);
        f.touch("p/+/new1", 3);
        assert!(f.contains("p/+/s1") && !f.contains("p/+/s2"));
    }

    #[test]
    fn an_invalidated_entry_goes_first() {
        let mut f = Fixture::full(4);
        let r = request("p/+/s3");
        assert!(f.shard.invalidate(f.hash(&r), "proj", "p/+/s3"));
        f.touch("p/+/s4", 1);
        assert!(!f.contains("p/+/s3"));
        assert!((0..3).all(|k| f.contains(&format!("p/+/s{k}"))));
    }

    #[test]
    fn invalidations_without_evictions_keep_the_candidates_bounded() {
        let mut f = Fixture::full(16);
        let r = request("p/+/s0");
        for now in 1..1000 {
            assert!(f.shard.invalidate(f.hash(&r), "proj", "p/+/s0"));
            assert!(matches!(f.touch("p/+/s0", now).1, Found::Expired { .. }));
        }
        assert!(f.shard.order.candidates.len() <= 3);
    }

    #[test]
    fn an_unused_entry_counts_older_by_the_bonus() {
        let slots = [
            Slot::fresh(NEVER, true, keyed(50)),
            Slot::fresh(NEVER, false, keyed(80)),
        ];
        let mut order = Order::default();
        // Ages 51 (used) and 21: the used one is older.
        order.collect(&slots, 0, 100, 0);
        assert_eq!(order.candidates, [candidate(0, &slots[0])]);
        // With a bonus of 40 the unused one counts as 61.
        order.candidates.clear();
        order.collect(&slots, 0, 100, 40);
        assert_eq!(order.candidates, [candidate(1, &slots[1])]);
        // An expired entry ranks first whatever its age.
        let expired = [
            Slot::fresh(NEVER, false, keyed(0)),
            Slot::fresh(5, true, keyed(101)),
        ];
        order.candidates.clear();
        order.collect(&expired, 5, 100, 40);
        assert_eq!(order.candidates, [candidate(1, &expired[1])]);
    }

    #[test]
    fn returning_ghosts_steer_the_bonus() {
        // Bonus steps of 4; small hashes all fall in ghost bucket 0 (the
        // bucket comes from the high bits).
        let capacity = 256;
        let shards = Shards::detached(capacity);
        let mut order = Order::default();
        let returned = |order: &mut Order, short| {
            let ghost = order.returned(short, capacity);
            if let Some(unused) = ghost {
                shards.steer(unused);
            }
            (ghost, shards.bonus())
        };
        assert_eq!(returned(&mut order, 7), (None, 0), "no ghosts yet");
        // A used entry evicted and asked for again: raise.
        order.forget(7 << 4, false, capacity);
        assert_eq!(returned(&mut order, 7 << 4), (Some(false), 4));
        // A ghost counts once.
        assert_eq!(returned(&mut order, 7 << 4), (None, 4));
        // Another key in the same bucket is not the ghost.
        order.forget(7 << 4, false, capacity);
        assert_eq!(returned(&mut order, 8 << 4), (None, 4));
        // A never-used entry evicted and asked for again: lower.
        order.forget(9 << 4, true, capacity);
        assert_eq!(returned(&mut order, 9 << 4), (Some(true), 0));
        order.forget(9 << 4, true, capacity);
        assert_eq!(
            returned(&mut order, 9 << 4),
            (Some(true), 0),
            "never below zero"
        );
        for _ in 0..100 {
            order.forget(3, false, capacity);
            assert_eq!(returned(&mut order, 3).0, Some(false));
        }
        assert_eq!(shards.bonus(), 256, "never above the size");
    }

    #[test]
    fn a_used_entry_evicted_and_asked_for_again_raises_the_bonus() {
        let mut f = Fixture::new(128);
        for k in 0..128 {
            f.register(&format!("p/+/s{k}"), 0);
            f.touch(&format!("p/+/s{k}"), 0);
        }
        f.touch("p/+/new", 1);
        let gone = (0..128)
            .find(|k| !f.contains(&format!("p/+/s{k}")))
            .expect("one was evicted");
        assert_eq!(f.shards.bonus(), 0);
        f.touch(&format!("p/+/s{gone}"), 2);
        assert_eq!(f.shards.bonus(), 2);
    }

    #[test]
    fn an_evicted_key_asked_for_again_comes_back_used() {
        // Capacity 4, so one ghost bucket: the last key evicted.
        let mut f = Fixture::full(4);
        f.touch("p/+/s4", 1); // evicts s0, never used
        assert!(!f.contains("p/+/s0"));
        // s0 comes back: it has a history, so it counts as used (and the
        // bonus, lowered, stays zero: the order is LRU and s1 goes).
        let (i, found) = f.touch("p/+/s0", 2);
        assert!(matches!(found, Found::New { evicted: true, .. }));
        assert!(!f.contains("p/+/s1"));
        assert_ne!(f.shard.slots[i as usize].meta & USED, 0);
        // A fresh key does not (its bucket holds s1's ghost, not its own).
        let (j, _) = f.touch("p/+/s5", 3);
        assert_eq!(f.shard.slots[j as usize].meta & USED, 0);
    }

    #[test]
    fn expired_entries_go_first_even_if_used() {
        let mut f = Fixture::new(2);
        let r = request("p/+/old");
        let hash = f.hash(&r);
        // Expires at 10.
        f.insert(&r, hash, 0, 10);
        f.register("p/+/young", 5);
        f.touch("p/+/young", 6);
        f.touch("p/+/old", 7); // used, still live
        // At 20 the old entry has expired: it goes, although used more recently.
        f.touch("p/+/new", 20);
        assert!(!f.contains("p/+/old"));
        assert!(f.contains("p/+/young") && f.contains("p/+/new"));
    }

    #[test]
    fn an_expired_entry_is_reset_in_place() {
        let mut f = Fixture::new(4);
        let r = request("p/+/a");
        let hash = f.hash(&r);
        let (i, _) = f.insert(&r, hash, 0, 10);
        let Begin::Start(id) = f.shard.begin_register(i) else {
            panic!()
        };
        let (j, found) = f.insert(&r, hash, 10, 10);
        assert_eq!((j, found), (i, Found::Expired { attempt: None }));
        // The old attempt no longer owns the slot: its answer is its callers' only.
        let Begin::Start(newer) = f.shard.begin_register(i) else {
            panic!("the reset entry has nothing in flight")
        };
        assert_ne!(newer, id);
        f.shard
            .complete_register(i, id, Ok(state_for(&r)), NEVER)
            .unwrap();
        assert!(matches!(f.shard.view(i).register, RegisterView::Pending(p) if p == newer));
        f.shard.check_structure(&f.hasher);
    }

    #[test]
    fn a_reused_slot_ignores_the_evicted_entrys_attempt() {
        let mut f = Fixture::new(1);
        let (i, _) = f.touch("p/+/a", 0);
        let Begin::Start(old) = f.shard.begin_register(i) else {
            panic!()
        };
        // b evicts a and takes its slot, and starts its own attempt.
        let (j, found) = f.touch("p/+/b", 1);
        assert_eq!(
            (j, found),
            (
                i,
                Found::New {
                    evicted: true,
                    attempt: None
                }
            )
        );
        let Begin::Start(new) = f.shard.begin_register(j) else {
            panic!()
        };
        // a's attempt completes, transiently and then (had it been retried) with
        // a state: b's attempt stays, and b's slot never gets a's state.
        let a = request("p/+/a");
        f.shard
            .complete_register(i, old, Err(Error::unavailable("a failed")), NEVER)
            .unwrap_err();
        f.shard
            .complete_register(i, old, Ok(state_for(&a)), NEVER)
            .unwrap();
        assert!(matches!(f.shard.view(j).register, RegisterView::Pending(p) if p == new));
        let b = request("p/+/b");
        let kept = f
            .shard
            .complete_register(j, new, Ok(state_for(&b)), NEVER)
            .unwrap();
        assert_eq!(kept.path, b.path);
        assert!(f.contains("p/+/b") && !f.contains("p/+/a"));
        f.shard.check_structure(&f.hasher);
    }

    #[test]
    fn a_terminate_before_the_state_is_merged_into_it() {
        let mut f = Fixture::new(4);
        let (i, _) = f.touch("p/+/a", 0);
        let (Begin::Start(t), None) = f.shard.begin_terminate(i) else {
            panic!()
        };
        f.shard
            .complete_terminate(i, t, MessageIndex::from(3), &Ok(()), NEVER);
        f.shard.check_structure(&f.hasher);
        assert!(
            matches!(f.shard.begin_terminate(i), (Begin::Answer(Ok(())), Some(k)) if k == MessageIndex::from(3))
        );
        // The state arrives without an index: kept as a copy with it, and the cold
        // record (key, known index) is gone.
        let state = f.register("p/+/a", 1);
        assert_eq!(state.terminal_index, Some(MessageIndex::from(3)));
        assert!(f.shard.colds.is_empty());
    }

    #[test]
    fn a_terminate_after_the_state_replaces_it_with_a_copy() {
        let mut f = Fixture::new(4);
        let open = f.register("p/+/a", 0);
        let (i, _) = f.touch("p/+/a", 1);
        let (Begin::Start(t), None) = f.shard.begin_terminate(i) else {
            panic!()
        };
        // In flight: a cold record holds the attempt, the key stays the state's.
        assert_eq!(f.shard.slots[i as usize].meta & (COLD | KEYED), COLD);
        assert!(matches!(f.shard.begin_terminate(i), (Begin::Join(id), None) if id == t));
        f.shard
            .complete_terminate(i, t, MessageIndex::from(9), &Ok(()), NEVER);
        f.shard.check_structure(&f.hasher);
        assert!(f.shard.colds.is_empty());
        let Begin::Answer(Ok(closed)) = f.shard.begin_register(i) else {
            panic!()
        };
        assert_eq!(closed.terminal_index, Some(MessageIndex::from(9)));
        assert_eq!(
            LogStreamState {
                terminal_index: None,
                ..(*closed).clone()
            },
            *open
        );
    }

    #[test]
    fn a_state_for_another_key_keeps_the_requested_key() {
        let mut f = Fixture::new(4);
        let (i, _) = f.touch("p/+/asked", 0);
        let Begin::Start(id) = f.shard.begin_register(i) else {
            panic!()
        };
        // The remote answers with another path: the entry is still found by the
        // requested key, and not by the answer's.
        f.shard
            .complete_register(i, id, Ok(state_for(&request("p/+/answered"))), NEVER)
            .unwrap();
        f.shard.check_structure(&f.hasher);
        assert_eq!(f.shard.slots[i as usize].meta & KEYED, KEYED);
        assert!(f.contains("p/+/asked") && !f.contains("p/+/answered"));
        assert_eq!(f.touch("p/+/asked", 1).1, Found::Live);
    }

    #[test]
    fn a_shard_of_more_than_65536_entries_files_wide_indexes() {
        let mut f = Fixture::new(70_000);
        assert!(matches!(f.shard.table, IndexTable::Wide(_)));
        for k in 0..70_000 {
            let r = request(&format!("p/+/k{k}"));
            let hash = f.hash(&r);
            f.insert(&r, hash, 0, DAY);
        }
        f.shard.check_structure(&f.hasher);
        assert!(f.contains("p/+/k0") && f.contains("p/+/k69999"));
        // Full: the next one evicts.
        assert_eq!(
            f.touch("p/+/more", 1).1,
            Found::New {
                evicted: true,
                attempt: None
            }
        );
        assert_eq!(f.shard.len(), 70_000);
        assert!(matches!(
            Fixture::new(65_536).shard.table,
            IndexTable::Narrow(_)
        ));
    }

    #[test]
    fn random_operations_keep_the_structure() {
        // A deterministic walk over insertions, evictions, expiry, attempts
        // (started, completed with every outcome, stale) on a small shard.
        let mut f = Fixture::new(8);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut in_flight: Vec<(Index, AttemptId, bool, String)> = Vec::new();
        let mut now = 0;
        for _ in 0..20_000 {
            now += next(3);
            // Half the keys too long for a slot's copy.
            let k = next(12);
            let path = if k % 2 == 0 {
                format!("p/+/k{k}")
            } else {
                format!("a-prefix-long-enough-to-pass-the-inline-copy/+/k{k}")
            };
            let r = request(&path);
            let hash = f.hash(&r);
            let (i, _) = f.insert(&r, hash, now, 1 + next(40));
            match next(4) {
                0 | 1 => {
                    if let Begin::Start(id) = f.shard.begin_register(i) {
                        in_flight.push((i, id, true, path));
                    }
                }
                _ => {
                    if let (Begin::Start(id), _) = f.shard.begin_terminate(i) {
                        in_flight.push((i, id, false, path));
                    }
                }
            }
            if !in_flight.is_empty() && next(2) == 0 {
                let (i, id, register, path) =
                    in_flight.swap_remove(next(in_flight.len() as u64) as usize);
                let outcome = next(4);
                if register {
                    let mut state = LogStreamState::clone(&state_for(&request(&path)));
                    if outcome == 3 {
                        state.terminal_index = Some(MessageIndex::from(7));
                    }
                    let result = match outcome {
                        0 => Err(Error::unavailable("t")),
                        1 => Err(Error::not_found("p")),
                        _ => Ok(Arc::new(state)),
                    };
                    let _ = f.shard.complete_register(i, id, result, NEVER);
                } else {
                    let result = match outcome {
                        0 => Err(Error::unavailable("t")),
                        1 => Err(Error::not_found("p")),
                        _ => Ok(()),
                    };
                    f.shard
                        .complete_terminate(i, id, MessageIndex::from(5), &result, NEVER);
                }
            }
            f.shard.check_structure(&f.hasher);
        }
    }
}
