//! How fair the line was: of the buyers served, how many were overtaken by one admitted at
//! least a second after them, by how much at most, and how far each buyer's promised wait
//! (the 202's `eta_ms`) was from the real one.

use std::time::Duration;

/// One served buyer: when it was admitted, what it was promised, when it was served (all
/// from the start of the run).
#[derive(Debug, Clone, Copy)]
pub struct Served {
    /// When the 202 came.
    pub admitted: Duration,
    /// The wait the 202 promised.
    pub promised: Duration,
    /// When its ticket was first seen decided.
    pub served: Duration,
}

/// What the report prints of the line's fairness.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Fairness {
    /// Buyers served.
    pub buyers: usize,
    /// Share of them served after someone admitted at least [`GAP`] later.
    pub overtaken: f64,
    /// The largest admission gap by which someone was overtaken (at least [`GAP`]).
    #[serde(serialize_with = "seconds")]
    pub largest_gap: Duration,
    /// Median of |real wait − promised| / real wait, over buyers who waited at least
    /// [`ETA_MIN_WAIT`] (0 when none did).
    pub eta_error_p50: f64,
    /// 90th percentile of the same.
    pub eta_error_p90: f64,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The buyers of `journeys` who were queued and then served, timed from `start`; a request
/// dismissed because an operator ended the sale (`closed`) was not served by the line.
pub fn served(journeys: &[crate::user::Journey], start: std::time::Instant) -> Vec<Served> {
    let closed = crate::user::Outcome::Refused("closed".into());
    journeys
        .iter()
        .filter(|j| j.outcome != closed)
        .filter_map(|j| {
            let (admitted, promised) = j.admitted?;
            let served = j.served?;
            Some(Served {
                admitted: admitted.saturating_duration_since(start),
                promised,
                served: served.saturating_duration_since(start),
            })
        })
        .collect()
}

/// Shorter waits are left out of the ETA error: a service timed by polls is late by up to a
/// poll interval, which would swamp the error of a wait of a few tenths of a second.
pub const ETA_MIN_WAIT: Duration = Duration::from_secs(1);

/// An overtaking counts when the one who went first was admitted at least this much later.
pub const GAP: Duration = Duration::from_secs(1);

/// The fairness of `served` buyers (`None` when there are none).
pub fn measure(served: &[Served]) -> Option<Fairness> {
    if served.is_empty() {
        return None;
    }
    let mut by_admission: Vec<Served> = served.to_vec();
    by_admission.sort_by_key(|s| s.admitted);
    // Walking from the latest admitted back, keep the earliest service among those admitted
    // at least GAP after the current buyer: it was overtaken if that came before its own.
    let mut overtaken = 0;
    let mut largest_gap = Duration::ZERO;
    let mut earliest_after: Vec<(Duration, Duration)> = Vec::new(); // (admitted, min served from here on)
    for s in by_admission.iter().rev() {
        let min_so_far = earliest_after
            .last()
            .map_or(s.served, |&(_, m)| m.min(s.served));
        earliest_after.push((s.admitted, min_so_far));
    }
    earliest_after.reverse();
    for s in &by_admission {
        let cut = s.admitted + GAP;
        let from = earliest_after.partition_point(|&(a, _)| a < cut);
        if let Some(&(_, first_served)) = earliest_after.get(from) {
            if first_served < s.served {
                overtaken += 1;
                // The latest admitted buyer served before this one.
                let latest = by_admission[from..]
                    .iter()
                    .filter(|o| o.served < s.served)
                    .map(|o| o.admitted - s.admitted)
                    .max()
                    .unwrap_or(GAP);
                largest_gap = largest_gap.max(latest);
            }
        }
    }
    let mut errors: Vec<f64> = served
        .iter()
        .filter(|s| s.served.saturating_sub(s.admitted) >= ETA_MIN_WAIT)
        .map(|s| {
            let real = s.served.saturating_sub(s.admitted).as_secs_f64();
            (real - s.promised.as_secs_f64()).abs() / real
        })
        .collect();
    errors.sort_by(f64::total_cmp);
    let at = |q: f64| match errors.len() {
        0 => 0.0,
        n => errors[((n - 1) as f64 * q).round() as usize],
    };
    Some(Fairness {
        buyers: served.len(),
        overtaken: overtaken as f64 / served.len() as f64,
        largest_gap,
        eta_error_p50: at(0.5),
        eta_error_p90: at(0.9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(admitted_ms: u64, promised_ms: u64, served_ms: u64) -> Served {
        Served {
            admitted: Duration::from_millis(admitted_ms),
            promised: Duration::from_millis(promised_ms),
            served: Duration::from_millis(served_ms),
        }
    }

    #[test]
    fn a_fair_line_with_honest_etas_scores_zero() {
        let line: Vec<Served> = (0..10).map(|i| s(i * 500, 1000, i * 500 + 1000)).collect();
        let f = measure(&line).expect("buyers");
        assert_eq!(
            (f.buyers, f.overtaken, f.largest_gap),
            (10, 0.0, Duration::ZERO)
        );
        assert!(f.eta_error_p90 < 1e-9);
    }

    #[test]
    fn overtaking_by_a_second_or_more_is_counted_with_its_gap() {
        // Admitted at 0 s, served at 5 s; one admitted at 2.5 s served at 3 s; one admitted at
        // 0.5 s served at 1 s (a gap under a second: not counted).
        let f =
            measure(&[s(0, 1000, 5000), s(2500, 1000, 3000), s(500, 1000, 1000)]).expect("buyers");
        assert!((f.overtaken - 1.0 / 3.0).abs() < 1e-9, "{f:?}");
        assert_eq!(f.largest_gap, Duration::from_millis(2500));
        // The ETA error of the one wait of a second or more, |5 - 1| / 5; the half-second
        // waits are left out.
        assert!((f.eta_error_p50 - 0.8).abs() < 1e-9);
        assert!(measure(&[]).is_none());
    }
}
