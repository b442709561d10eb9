//! Keeps a warning that fires in bursts (a store outage, a dead backend, a crowd's requests
//! failing alike) to one line a minute with its count.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long a repeated warning stays quiet after it was written.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// Counts the occurrences of one warning so that a burst is written as one line per
/// [`REPEAT_WINDOW`]: the first at once, the next one a window later carrying how many
/// there were meanwhile. Lock-free; one per call site (see [`warn_repeated`]) or per
/// thing that warns (a circuit breaker).
pub struct Repeats {
    /// When the next occurrence may be written, in ms since the process's first log.
    next_ms: AtomicU64,
    /// When the last one was written.
    last_ms: AtomicU64,
    /// Occurrences not written since the last written one.
    quiet: AtomicU64,
    /// Listed for [`flush`] (a call site's, once it first stayed quiet).
    registered: AtomicBool,
    /// How long it stays quiet after a line, in ms.
    window_ms: u64,
}

/// Call sites whose warnings were counted and not written, with their message: [`flush`]
/// writes their counts once their window is over, so that a burst that ended is not lost.
static QUIET: Mutex<Vec<(&'static Repeats, &'static str)>> = Mutex::new(Vec::new());

/// A warning about to be written and what was not written before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeated {
    /// Occurrences since the last line, this one included.
    pub count: u64,
    /// Seconds since the last line.
    pub secs: u64,
}

impl std::fmt::Display for Repeated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "x{} in the last {} s", self.count, self.secs)
    }
}

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Repeats {
    /// A warning not seen yet.
    pub const fn new() -> Self {
        Self::every(REPEAT_WINDOW)
    }

    /// A warning not seen yet, written once per `window` at most.
    pub const fn every(window: Duration) -> Self {
        Self {
            next_ms: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            quiet: AtomicU64::new(0),
            registered: AtomicBool::new(false),
            window_ms: window.as_millis() as u64,
        }
    }

    /// [`admit`](Self::admit) for a call site's static: when an occurrence is only
    /// counted, the site is listed so that [`flush`] writes its count with `message`.
    pub fn admit_site(&'static self, message: &'static str) -> Option<Repeated> {
        let admitted = self.admit();
        if admitted.is_none() && !self.registered.swap(true, Ordering::AcqRel) {
            QUIET
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((self, message));
        }
        admitted
    }

    /// The occurrences counted and not written, once the window is over (`None` before,
    /// or when there were none): what [`flush`] writes.
    fn flush_at(&self, now: u64, before_the_end: bool) -> Option<Repeated> {
        let next = self.next_ms.load(Ordering::Acquire);
        if (now < next && !before_the_end) || self.quiet.load(Ordering::Acquire) == 0 {
            return None;
        }
        let window = self.window_ms;
        self.next_ms
            .compare_exchange(next, now + window, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let last = self.last_ms.swap(now, Ordering::AcqRel);
        let quiet = self.quiet.swap(0, Ordering::AcqRel);
        (quiet > 0).then(|| Repeated {
            count: quiet,
            secs: now.saturating_sub(last).div_ceil(1000),
        })
    }

    /// One occurrence now: `Some` when it is to be written (with the repeats it stands
    /// for), `None` when it is only counted.
    pub fn admit(&self) -> Option<Repeated> {
        self.admit_at(now_ms())
    }

    fn admit_at(&self, now: u64) -> Option<Repeated> {
        let next = self.next_ms.load(Ordering::Acquire);
        let window = self.window_ms;
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + window, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let last = self.last_ms.swap(now, Ordering::AcqRel);
            let quiet = self.quiet.swap(0, Ordering::AcqRel);
            return Some(Repeated {
                count: quiet + 1,
                secs: now.saturating_sub(last).div_ceil(1000),
            });
        }
        self.quiet.fetch_add(1, Ordering::AcqRel);
        None
    }
}

impl Default for Repeats {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes, for every call site whose window is over, the occurrences it counted and did
/// not write (`repeated = "x7 in the last 60 s"`, with its message): a burst that ended
/// before a next occurrence would carry its count. The gateway calls it every few seconds,
/// and with `stopping` once at its stop, when every count is written, window over or not.
pub fn flush(stopping: bool) {
    let now = now_ms();
    let sites = QUIET.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for (site, message) in sites {
        if let Some(r) = site.flush_at(now, stopping) {
            tracing::warn!(repeated = %r, "{message}");
        }
    }
}

/// `tracing::warn!("message", fields…)` for a warning that can fire in bursts: written once
/// a minute at most from this call site, with `repeated = "x227 in the last 60 s"` when it
/// stands for more than itself; a count not carried by a next line is written by [`flush`].
macro_rules! warn_repeated {
    ($message:literal $(, $($field:tt)+)?) => {{
        static REPEATS: $crate::log_throttle::Repeats = $crate::log_throttle::Repeats::new();
        match REPEATS.admit_site($message) {
            Some(r) if r.count > 1 => tracing::warn!($($($field)+,)? repeated = %r, $message),
            Some(_) => tracing::warn!($($($field)+,)? $message),
            None => {}
        }
    }};
}
pub(crate) use warn_repeated;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_line_a_window_with_its_count() {
        let r = Repeats::new();
        let first = r.admit_at(1_000).expect("the first is written");
        assert_eq!(first.count, 1);
        for t in 1_001..1_227 {
            assert_eq!(r.admit_at(t), None, "quiet within the window");
        }
        let next = r.admit_at(61_000).expect("written a window later");
        assert_eq!(next.count, 227, "226 counted + this one");
        assert_eq!(next.secs, 60);
        assert_eq!(next.to_string(), "x227 in the last 60 s");
        // Counting starts again.
        assert_eq!(r.admit_at(61_001), None);
        assert_eq!(r.admit_at(200_000).map(|r| r.count), Some(2));
    }

    #[test]
    fn a_burst_that_ended_is_flushed_with_its_count() {
        let r = Repeats::new();
        assert!(r.admit_at(1_000).is_some());
        for t in 1_001..1_008 {
            assert_eq!(r.admit_at(t), None);
        }
        assert_eq!(
            r.flush_at(30_000, false),
            None,
            "not before the window is over"
        );
        let flushed = r.flush_at(61_000, false).expect("the count is written");
        assert_eq!((flushed.count, flushed.secs), (7, 60));
        assert_eq!(r.flush_at(200_000, false), None, "written once");
        // The next occurrence starts a new window: written at once, alone.
        assert_eq!(r.admit_at(200_001).map(|r| r.count), Some(1));
        // At a stop, what was counted is written whatever the window.
        assert_eq!(r.admit_at(200_002), None);
        assert_eq!(r.flush_at(200_003, true).map(|r| r.count), Some(1));
    }
}
