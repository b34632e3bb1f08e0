//! The cache's clock: tokio's time, so that paused test time applies, read
//! cheaply on hits.
//!
//! Every deadline is in nanoseconds since the cache's epoch, on tokio's clock
//! ([`tokio::time::Instant`]). Reading that clock exactly is a `clock_gettime`
//! through the vDSO, 30 to 40 ns: a third of a hit. But a hit only needs to
//! know that its entry's deadline is still ahead, and an *upper bound* on the
//! time answers that for all but an entry's last moments.
//!
//! # The bound
//!
//! On Linux, the coarse monotonic clock is the same timeline as `Instant` (the
//! monotonic clock), stored by the kernel at each scheduler tick and read in a
//! few nanoseconds. It lags the exact time by at most a tick (1 to 10 ms), so
//! its reading plus [`MARGIN`] (100 ms) is above the time now. A deadline
//! beyond that bound is surely ahead; only a deadline within the margin, an
//! entry's last 100 ms, takes an exact read. Every deadline is still made from
//! an exact read, so no entry lives a nanosecond longer or shorter than before.
//!
//! # Paused time
//!
//! The bound follows the OS's clock, and tokio's clock is the OS's except
//! when it is paused (`tokio::time::pause`, `start_paused`, `advance`), which
//! tokio allows only in a current-thread runtime. So the clock picks its mode
//! from where the cache is first built or used:
//!
//! - inside a multi-thread runtime, or outside any runtime: the bound;
//! - inside a current-thread runtime (`#[tokio::test]` runs its body in one):
//!   an exact read on every call, as tokio's time may be paused there;
//! - with [`CacheBuilder::exact_clock`](crate::CacheBuilder::exact_clock), or
//!   off Linux: always exact.
//!
//! If an exact read ever finds tokio's time ahead of the bound (its clock was
//! paused and advanced after all, or the OS clocks disagree), the clock turns
//! exact for good.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::time::Instant;

use crate::interleave;

/// Bits 0..=60 of a slot's metadata: the deadline. The largest time or
/// duration the clock represents (73 years), so that deadlines never reach the
/// flag bits above them.
pub(crate) const MAX_NANOS: u64 = (1 << 61) - 1;

/// How far above the coarse clock's reading the bound is: far more than the
/// coarse clock ever lags (one scheduler tick).
const MARGIN: u64 = 100_000_000;

/// Hits use the bound.
const FAST: u8 = 0;
/// Every call reads the exact clock.
const EXACT: u8 = 1;
/// Built outside any runtime: the first exact read picks [`FAST`] or [`EXACT`].
const UNDECIDED: u8 = 2;

/// A duration in nanoseconds, saturating at [`MAX_NANOS`], so that deadlines
/// never reach the flag bits.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).map_or(MAX_NANOS, |n| n.min(MAX_NANOS))
}

/// Time as nanoseconds since the cache's epoch (see the module docs). The epoch
/// is a day before the cache was built, so that a clock somewhat behind the one
/// used at construction (e.g. a paused test clock) still reads as a positive
/// time; earlier times read as zero.
pub(crate) struct Clock {
    epoch: Instant,
    coarse: Option<coarse::Coarse>,
    mode: AtomicU8,
}

impl Clock {
    /// A clock; `exact` to read tokio's clock on every call.
    pub(crate) fn new(exact: bool) -> Self {
        let now = Instant::now();
        let epoch = now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now);
        let mode = if exact {
            EXACT
        } else {
            runtime_mode().unwrap_or(UNDECIDED)
        };
        // Calibrated only where the bound may be used: tokio's time is then the
        // OS's.
        let coarse = (mode != EXACT)
            .then(|| coarse::Coarse::calibrate(|| since(epoch, Instant::now())))
            .flatten();
        Clock {
            epoch,
            mode: AtomicU8::new(if coarse.is_some() { mode } else { EXACT }),
            coarse,
        }
    }

    /// The exact time now.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        if let Some(now) = interleave::now() {
            return now;
        }
        let now = since(self.epoch, Instant::now());
        match self.mode.load(Ordering::Relaxed) {
            // Tokio's time is past the bound: its clock left the OS's.
            FAST if self.coarse.as_ref().is_some_and(|c| now > c.bound()) => {
                self.mode.store(EXACT, Ordering::Relaxed);
            }
            UNDECIDED => {
                let mode = runtime_mode().unwrap_or(FAST);
                let _ = self.mode.compare_exchange(
                    UNDECIDED,
                    mode,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            _ => {}
        }
        now
    }

    /// The time for one call: an upper bound read cheaply, or the exact time.
    #[inline]
    pub(crate) fn time(&self) -> Time<'_> {
        if self.mode.load(Ordering::Relaxed) == FAST
            && interleave::now().is_none()
            && let Some(coarse) = &self.coarse
        {
            return Time {
                clock: Some(self),
                bound: coarse.bound(),
                exact: None,
            };
        }
        Time::at(self.now())
    }

    /// Whether hits use the bound (for tests).
    #[cfg(test)]
    pub(crate) fn is_fast(&self) -> bool {
        self.mode.load(Ordering::Relaxed) == FAST
    }
}

/// The mode for the runtime the caller is in, if any: tokio's time can be
/// paused only in a current-thread runtime (any flavor other than
/// multi-thread, to be safe).
fn runtime_mode() -> Option<u8> {
    let handle = Handle::try_current().ok()?;
    Some(
        if matches!(handle.runtime_flavor(), RuntimeFlavor::MultiThread) {
            FAST
        } else {
            EXACT
        },
    )
}

/// `now` in nanoseconds since `epoch` (zero before it), at most [`MAX_NANOS`].
#[inline]
fn since(epoch: Instant, now: Instant) -> u64 {
    let since = now.saturating_duration_since(epoch);
    // Within `MAX_NANOS` for 73 years: no overflow, no 128-bit arithmetic.
    since
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(since.subsec_nanos()))
        .min(MAX_NANOS)
}

/// The time one call works with: an upper bound on the time now, and the exact
/// time once read (at most once per call).
pub(crate) struct Time<'c> {
    clock: Option<&'c Clock>,
    bound: u64,
    exact: Option<u64>,
}

impl Time<'_> {
    /// The exact time `now` (also its own bound).
    pub(crate) fn at(now: u64) -> Self {
        Time {
            clock: None,
            bound: now,
            exact: Some(now),
        }
    }

    /// Whether `deadline` is still ahead: from the bound if it is far enough,
    /// else from the exact time.
    #[inline]
    pub(crate) fn before(&mut self, deadline: u64) -> bool {
        deadline > self.bound || deadline > self.exact()
    }

    /// The exact time, read on first use.
    #[inline]
    pub(crate) fn exact(&mut self) -> u64 {
        match self.exact {
            Some(now) => now,
            None => {
                let now = self.clock.map_or(self.bound, Clock::now);
                self.exact = Some(now);
                now
            }
        }
    }

    /// `lifetime` from the exact time now, at most [`MAX_NANOS`].
    #[inline]
    pub(crate) fn after(&mut self, lifetime: u64) -> u64 {
        self.exact().saturating_add(lifetime).min(MAX_NANOS)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod coarse {
    use rustix::time::{ClockId, Timespec, clock_gettime};

    /// The coarse monotonic clock, mapped onto the cache's time.
    pub(super) struct Coarse {
        /// The monotonic clock's reading, in nanoseconds, at calibration.
        raw_base: u64,
        /// The cache's time read just after it.
        base: u64,
    }

    fn nanos(t: Timespec) -> u64 {
        let secs = u64::try_from(t.tv_sec).unwrap_or(0);
        let subsec = u64::try_from(t.tv_nsec).unwrap_or(0);
        secs.saturating_mul(1_000_000_000).saturating_add(subsec)
    }

    impl Coarse {
        /// Maps the monotonic clock onto `now`'s time. The cache's time is read
        /// after the monotonic clock, so the mapping errs high (the safe side
        /// for a bound).
        pub(super) fn calibrate(now: impl FnOnce() -> u64) -> Option<Self> {
            let raw_base = nanos(clock_gettime(ClockId::Monotonic));
            let base = now();
            (raw_base > 0).then_some(Coarse { raw_base, base })
        }

        /// An upper bound on the cache's time now.
        #[inline]
        pub(super) fn bound(&self) -> u64 {
            let raw = nanos(clock_gettime(ClockId::MonotonicCoarse));
            raw.saturating_sub(self.raw_base)
                .saturating_add(self.base)
                .saturating_add(super::MARGIN)
                .min(super::MAX_NANOS)
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod coarse {
    /// No coarse clock here: every read is exact.
    pub(super) struct Coarse;

    impl Coarse {
        pub(super) fn calibrate(_now: impl FnOnce() -> u64) -> Option<Self> {
            None
        }

        pub(super) fn bound(&self) -> u64 {
            super::MAX_NANOS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this OS has the coarse clock (so the bound can be used).
    const COARSE: bool = cfg!(any(target_os = "linux", target_os = "android"));

    #[test]
    fn outside_a_runtime_the_first_exact_read_turns_the_bound_on() {
        let clock = Clock::new(false);
        let mut time = clock.time();
        let _ = time.exact();
        assert_eq!(clock.is_fast(), COARSE);
    }

    #[test]
    fn the_bound_is_never_below_the_exact_time() {
        let clock = Clock::new(false);
        let _ = clock.now();
        for _ in 0..10_000 {
            let mut time = clock.time();
            let bound = time.bound;
            let exact = time.exact();
            assert!(bound >= exact, "bound {bound} below exact {exact}");
        }
    }

    #[test]
    fn an_entry_within_the_margin_takes_an_exact_read() {
        let clock = Clock::new(false);
        let _ = clock.now();
        let deadline = clock.now() + 50_000_000;
        let mut time = clock.time();
        assert!(time.bound >= deadline, "the deadline is within the margin");
        // Decided by the exact time, which is before the deadline now...
        assert!(time.before(deadline));
        assert!(time.exact.is_some());
        // ...and past it later.
        std::thread::sleep(Duration::from_millis(60));
        let mut later = clock.time();
        assert!(!later.before(deadline));
    }

    #[test]
    fn an_exact_clock_never_uses_the_bound() {
        let clock = Clock::new(true);
        let _ = clock.now();
        assert!(!clock.is_fast());
        let time = clock.time();
        assert!(time.exact.is_some());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn in_a_current_thread_runtime_every_read_is_exact() {
        let clock = Clock::new(false);
        assert!(!clock.is_fast());
        let before = clock.now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let mut time = clock.time();
        assert_eq!(time.exact(), before + 3_600_000_000_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_a_multi_thread_runtime_hits_use_the_bound() {
        let clock = Clock::new(false);
        assert_eq!(clock.is_fast(), COARSE);
    }

    #[test]
    fn tokio_time_ahead_of_the_bound_turns_the_clock_exact() {
        let clock = Clock::new(false);
        let _ = clock.now();
        if !clock.is_fast() {
            return; // No coarse clock on this OS.
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            tokio::time::advance(Duration::from_secs(3600)).await;
            let _ = clock.now();
        });
        assert!(!clock.is_fast());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_clock_built_outside_decides_at_its_first_read() {
        let clock = std::thread::spawn(|| Clock::new(false))
            .join()
            .expect("built");
        let before = clock.now();
        assert!(!clock.is_fast());
        tokio::time::advance(Duration::from_secs(60)).await;
        let mut time = clock.time();
        assert!(!time.before(before + 59_000_000_000));
    }
}
