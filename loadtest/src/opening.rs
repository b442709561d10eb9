//! How fair a pre-queue's opening was: the buyers who joined before the opening, when they
//! joined, and which of them won. Under a uniform shuffle the winners' joining times are
//! spread like everyone's; first come, first served would put them all at the start.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::user::{Journey, Outcome};

/// Buckets the joining window is charted in.
const BUCKETS: usize = 10;

/// What the report prints of the opening.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Opening {
    /// Buyers told `prequeued`.
    pub joined: usize,
    /// Of them, those who reserved.
    pub winners: usize,
    /// Mean joining time of everyone, in seconds from the start of the run.
    pub mean_joined_s: f64,
    /// Mean joining time of the winners.
    pub mean_won_s: f64,
    /// Per bucket of the joining window: (bucket start s, bucket end s, joined, won).
    pub chart: Vec<(f64, f64, usize, usize)>,
    /// How long the slowest instance's opening took (`flashgate_prequeue_shuffle_seconds`).
    pub shuffle_s: f64,
}

impl Opening {
    /// The opening of the run's pre-queue, if any buyer joined one.
    pub fn measure(journeys: &[Journey], start: Instant) -> Option<Self> {
        let joined: Vec<(f64, bool)> = journeys
            .iter()
            .filter_map(|j| {
                let at = j.prequeued_at?.saturating_duration_since(start);
                Some((at.as_secs_f64(), j.outcome == Outcome::Reserved))
            })
            .collect();
        if joined.is_empty() {
            return None;
        }
        let mean = |xs: &mut dyn Iterator<Item = f64>| {
            let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
            if n == 0 {
                0.0
            } else {
                sum / n as f64
            }
        };
        let first = joined.iter().map(|j| j.0).fold(f64::INFINITY, f64::min);
        let last = joined.iter().map(|j| j.0).fold(0.0, f64::max);
        let width = ((last - first) / BUCKETS as f64).max(1e-3);
        let mut chart: Vec<(f64, f64, usize, usize)> = (0..BUCKETS)
            .map(|i| {
                (
                    first + i as f64 * width,
                    first + (i + 1) as f64 * width,
                    0,
                    0,
                )
            })
            .collect();
        for &(at, won) in &joined {
            let i = (((at - first) / width) as usize).min(BUCKETS - 1);
            chart[i].2 += 1;
            chart[i].3 += usize::from(won);
        }
        Some(Self {
            joined: joined.len(),
            winners: joined.iter().filter(|j| j.1).count(),
            mean_joined_s: mean(&mut joined.iter().map(|j| j.0)),
            mean_won_s: mean(&mut joined.iter().filter(|j| j.1).map(|j| j.0)),
            chart,
            shuffle_s: 0.0,
        })
    }

    /// How far the winners' mean joining time is from everyone's.
    pub fn mean_gap(&self) -> Duration {
        Duration::from_secs_f64((self.mean_won_s - self.mean_joined_s).abs())
    }

    /// The report's lines: everyone's joining times against the winners', as bars.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "\npre-queue opening\n  {} buyers joined the pre-queue, {} won; mean joining time {:.2} s, the winners' {:.2} s; the opening took {:.0} ms",
            self.joined,
            self.winners,
            self.mean_joined_s,
            self.mean_won_s,
            self.shuffle_s * 1000.0
        );
        let most = self.chart.iter().map(|b| b.2).max().unwrap_or(1).max(1);
        let share = self.winners as f64 / self.joined.max(1) as f64;
        let _ = writeln!(
            o,
            "  joined at (s)    everyone (█) and the winners (▓, scaled by 1/{:.3})",
            share
        );
        for &(from, to, all, won) in &self.chart {
            let bar = |n: f64| "█".repeat(((n / most as f64) * 40.0).round() as usize);
            let won_bar =
                "▓".repeat(((won as f64 / share.max(1e-9) / most as f64) * 40.0).round() as usize);
            let _ = writeln!(o, "  {from:5.1}–{to:5.1}  {:<40} {all:>6}", bar(all as f64));
            let _ = writeln!(
                o,
                "               {:<40} {won:>6} won ({:.2} %)",
                won_bar,
                won as f64 * 100.0 / all.max(1) as f64
            );
        }
        o
    }
}
