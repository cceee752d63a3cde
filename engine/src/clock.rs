//! The clock seam, beside the file-system seam ([`crate::io`]): every time-driven decision of the
//! engine (when a memtable is old enough to flush, when retention runs, the upper bound of a rollup
//! refresh, when a rollup or an alert rule is due, the cut-off of retention) reads [`Clock`], so tests
//! drive time with [`ManualClock`] instead of sleeping. Durations that are only measured (metrics,
//! progress) read the real clock.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the engine reads the time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Wall-clock time, microseconds since the Unix epoch.
    fn now_us(&self) -> i64;
    /// Time since the clock began, never going back: for intervals (a wall clock may be set back).
    fn elapsed(&self) -> Duration;
}

/// The system's clocks: [`std::time::SystemTime`] and [`Instant`].
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock { start: Instant::now() }
    }
}

impl Clock for SystemClock {
    fn now_us(&self) -> i64 {
        wall_now_us()
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// The system's wall-clock time, microseconds since the Unix epoch (0 before it).
pub fn wall_now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// A clock that moves only when told to ([`ManualClock::advance`]), both readings together.
#[derive(Debug)]
pub struct ManualClock {
    now_us: AtomicI64,
    elapsed_us: AtomicU64,
}

impl ManualClock {
    /// A clock reading `now_us` (microseconds since the Unix epoch).
    pub fn new(now_us: i64) -> Self {
        ManualClock { now_us: AtomicI64::new(now_us), elapsed_us: AtomicU64::new(0) }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.elapsed_us.fetch_add(us, Ordering::AcqRel);
        self.now_us.fetch_add(i64::try_from(us).unwrap_or(i64::MAX), Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> i64 {
        self.now_us.load(Ordering::Acquire)
    }

    fn elapsed(&self) -> Duration {
        Duration::from_micros(self.elapsed_us.load(Ordering::Acquire))
    }
}
