//! The gateway's side of the run, sampled while it goes: queue depth, stock and the drain
//! counter, from the admin API and /metrics of every instance (the sale's drain rate is
//! their total, and each queues its own share of the crowd).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::stack::Stack;

/// One look at the gateway.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the crowd started.
    pub t: f64,
    /// Requests queued, on every instance together.
    pub queued: u64,
    /// Stock the gateway knows of (the least any instance knows of).
    pub remaining: u64,
    /// Requests released to the order workers so far, by every instance together.
    pub drained: f64,
    /// Configured drain rate (the total across instances).
    pub drain_rate: f64,
    /// The outbox lag, seconds: the age of the oldest order the backend has not taken yet
    /// (the most any instance read).
    pub lag: f64,
}

/// Samples collected so far: every sale's, and their total at each look.
#[derive(Debug, Default, Clone)]
pub struct Collected {
    /// The sales together (queued, remaining, drained and the drain rate summed).
    pub total: Vec<Sample>,
    /// Each sale's, from when every instance knew it.
    pub by_sale: BTreeMap<String, Vec<Sample>>,
}

/// Samples collected so far, shared with the progress lines.
pub type Samples = Arc<Mutex<Collected>>;

/// Samples `skus` every `every` until `stop`; a look some instance did not answer is
/// skipped (it may be busy, or restarting), and so is a sale not every instance knows yet.
pub async fn run(
    stack: &Stack,
    skus: &[String],
    start: Instant,
    every: Duration,
    samples: Samples,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let t = start.elapsed().as_secs_f64();
        let mut looks = Vec::with_capacity(stack.instances.len());
        for k in 0..stack.instances.len() {
            match stack.instance_look(k, "/admin/sales").await {
                Ok(look) => looks.push(look),
                Err(_) => break,
            }
        }
        if looks.len() < stack.instances.len() {
            continue;
        }
        let mut total: Option<Sample> = None;
        let mut collected = samples.lock().unwrap_or_else(PoisonError::into_inner);
        for sku in skus {
            let Some(sample) = look_at(&looks, sku, t) else {
                continue;
            };
            total = Some(match total {
                None => sample,
                Some(s) => Sample {
                    queued: s.queued + sample.queued,
                    remaining: s.remaining + sample.remaining,
                    drained: s.drained + sample.drained,
                    drain_rate: s.drain_rate + sample.drain_rate,
                    lag: s.lag.max(sample.lag),
                    ..s
                },
            });
            collected
                .by_sale
                .entry(sku.clone())
                .or_default()
                .push(sample);
        }
        if let Some(total) = total {
            collected.total.push(total);
        }
    }
}

/// One sale as every instance's look shows it (None: some instance does not know it).
fn look_at(looks: &[(serde_json::Value, String)], sku: &str, t: f64) -> Option<Sample> {
    let label = format!("sku=\"{sku}\"");
    let mut sample: Option<Sample> = None;
    for (sales, metrics) in looks {
        let sale = sales["sales"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["sku"] == sku))?;
        let look = Sample {
            t,
            queued: sale["queued"].as_u64().unwrap_or(0),
            remaining: sale["remaining"].as_u64().unwrap_or(0),
            drained: metric(metrics, "flashgate_drained_total", &label).unwrap_or(0.0),
            drain_rate: metric(metrics, "flashgate_drain_rate_configured", &label).unwrap_or(0.0),
            lag: sale["outbox_lag_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        };
        sample = Some(match sample {
            None => look,
            Some(s) => Sample {
                queued: s.queued + look.queued,
                remaining: s.remaining.min(look.remaining),
                drained: s.drained + look.drained,
                lag: s.lag.max(look.lag),
                ..s
            },
        });
    }
    sample
}

/// Every sample of `name` in Prometheus text: its labels (inside the braces) and value.
fn samples<'t>(text: &'t str, name: &'t str) -> impl Iterator<Item = (&'t str, f64)> + 't {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once('}')?,
            None if rest.starts_with(' ') => ("", rest),
            None => return None,
        };
        Some((labels, value.trim().parse::<f64>().ok()?))
    })
}

/// The sum of every sample of `name` whose labels contain `label` (empty: all of them).
pub fn metric(text: &str, name: &str, label: &str) -> Option<f64> {
    samples(text, name)
        .filter(|(labels, _)| labels.contains(label))
        .map(|(_, v)| v)
        .reduce(|a, b| a + b)
}

/// The samples of `name` whose labels contain `label`, keyed by the value of label `key`.
pub fn metric_by(text: &str, name: &str, label: &str, key: &str) -> BTreeMap<String, u64> {
    let prefix = format!("{key}=\"");
    samples(text, name)
        .filter(|(labels, _)| labels.contains(label))
        .filter_map(|(labels, v)| {
            let value = labels.split(prefix.as_str()).nth(1)?.split('"').next()?;
            Some((value.to_owned(), v as u64))
        })
        .collect()
}

/// The drain rate achieved while requests were waiting: the drain counter's growth between
/// the first and last samples that saw a non-empty queue. None when that window is under 1 s.
pub fn achieved_drain(samples: &[Sample]) -> Option<(f64, f64)> {
    let first = samples.iter().position(|s| s.queued > 0)?;
    let last = samples.iter().rposition(|s| s.queued > 0)?;
    let (a, b) = (samples[first], samples[last]);
    let window = b.t - a.t;
    (window >= 1.0).then(|| ((b.drained - a.drained) / window, window))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP flashgate_drained_total x\n\
        flashgate_drained_total{sku=\"a\"} 10\n\
        flashgate_drained_total{sku=\"b\"} 5\n\
        flashgate_drained_total_other{sku=\"a\"} 99\n\
        flashgate_outbox_backlog 3\n";

    #[test]
    fn metrics_are_read_by_name_and_label() {
        assert_eq!(
            metric(TEXT, "flashgate_drained_total", "sku=\"a\""),
            Some(10.0)
        );
        assert_eq!(metric(TEXT, "flashgate_drained_total", ""), Some(15.0));
        assert_eq!(metric(TEXT, "flashgate_outbox_backlog", ""), Some(3.0));
        assert_eq!(metric(TEXT, "flashgate_missing", ""), None);
        let by = metric_by(TEXT, "flashgate_drained_total", "", "sku");
        assert_eq!(by.get("a"), Some(&10));
        assert_eq!(by.get("b"), Some(&5));
    }

    #[test]
    fn the_drain_is_measured_only_while_requests_wait() {
        let s = |t, queued, drained| Sample {
            t,
            queued,
            remaining: 0,
            drained,
            drain_rate: 100.0,
            lag: 0.0,
        };
        let samples = [
            s(0.0, 0, 0.0),
            s(1.0, 50, 10.0),
            s(3.0, 20, 210.0),
            s(4.0, 0, 230.0),
        ];
        assert_eq!(achieved_drain(&samples), Some((100.0, 2.0)));
        assert_eq!(achieved_drain(&samples[..2]), None);
    }
}
