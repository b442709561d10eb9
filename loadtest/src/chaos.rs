//! Chaos: a random schedule of faults drawn from a seed, and its execution against the
//! run's stack. The same seed draws the same schedule (kinds, targets, times, durations),
//! so a run that broke a promise can be replayed with `--seed`; the crowd's own timing is
//! the machine's, so a replay hits the same faults at the same moments, not the same bytes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::fault_proxy::Fault;
use crate::scenario::{Chaos, FaultKind};
use crate::stack::Stack;

/// One fault of a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// When it starts, from the crowd's start.
    pub at: Duration,
    /// What kind.
    pub kind: FaultKind,
    /// The gateway instance it hits (link and gateway faults).
    pub instance: usize,
    /// What a link fault does to the bytes.
    pub link: Fault,
    /// How long it lasts.
    pub lasts: Duration,
}

impl Planned {
    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        let what = match self.kind {
            FaultKind::RedisPause => "redis-server SIGSTOP".to_owned(),
            FaultKind::RedisRestart => "redis-server SIGKILL and restart".to_owned(),
            FaultKind::RedisLink => {
                format!("gateway {} -> redis: {}", self.instance, self.link.name())
            }
            FaultKind::BackendLink => {
                format!("gateway {} -> backend: {}", self.instance, self.link.name())
            }
            FaultKind::BackendErrors => "backend answers 503".to_owned(),
            FaultKind::BackendSlow => "backend 2 s slower per order".to_owned(),
            FaultKind::GatewayRestart => format!("gateway {} SIGKILL and restart", self.instance),
        };
        format!(
            "{:>6}ms +{:>5}ms  {what}",
            self.at.as_millis(),
            self.lasts.as_millis()
        )
    }

    /// What the fault occupies: two faults on one thing never overlap (the second would end
    /// the first early), faults on different things do.
    fn resource(&self) -> (u8, usize) {
        match self.kind {
            FaultKind::RedisPause | FaultKind::RedisRestart => (0, 0),
            FaultKind::RedisLink => (1, self.instance),
            FaultKind::BackendLink => (2, self.instance),
            FaultKind::BackendErrors => (3, 0),
            FaultKind::BackendSlow => (4, 0),
            FaultKind::GatewayRestart => (5, self.instance),
        }
    }
}

/// Draws `chaos.faults` faults from `seed` for a run of `instances` gateways.
pub fn schedule(chaos: &Chaos, seed: u64, instances: usize) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let window = chaos.window.as_millis().max(1) as u64;
    let (short, long) = (
        chaos.shortest.as_millis() as u64,
        chaos.longest.as_millis().max(chaos.shortest.as_millis()) as u64,
    );
    let mut drawn: Vec<Planned> = (0..chaos.faults)
        .map(|_| {
            let kind = chaos.kinds[rng.random_range(0..chaos.kinds.len())];
            let link = match rng.random_range(0..5u8) {
                0 => Fault::Delay(Duration::from_millis(rng.random_range(20..=400))),
                1 => Fault::Pause,
                2 => Fault::HoldReplies,
                3 => Fault::Reset,
                _ => Fault::Blackhole,
            };
            Planned {
                at: Duration::from_millis(rng.random_range(0..window)),
                kind,
                instance: rng.random_range(0..instances.max(1)),
                link,
                lasts: Duration::from_millis(rng.random_range(short..=long)),
            }
        })
        .collect();
    drawn.sort_by_key(|p| p.at);
    // Faults on one thing are moved to start after the previous one ended.
    let mut busy: HashMap<(u8, usize), Duration> = HashMap::new();
    for p in &mut drawn {
        let free = busy.get(&p.resource()).copied().unwrap_or_default();
        if p.at < free {
            p.at = free + Duration::from_millis(50);
        }
        busy.insert(p.resource(), p.at + p.lasts);
    }
    drawn.sort_by_key(|p| p.at);
    drawn
}

/// Injects every fault of `plan` at its time, each ending by itself; returns how many were
/// injected and the errors of those that could not be.
pub async fn inject(
    plan: &[Planned],
    stack: &Stack,
    start: Instant,
    stop: &CancellationToken,
) -> (u32, Vec<String>) {
    let all = plan.iter().map(|p| async move {
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep_until((start + p.at).into()) => {}
        }
        eprintln!("fault: {}", p.describe());
        Some(
            one(p, stack)
                .await
                .map_err(|e| format!("{}: {e}", p.describe())),
        )
    });
    let done = futures_util::future::join_all(all).await;
    let injected = done.iter().filter(|d| d.is_some()).count() as u32;
    let errors = done.into_iter().flatten().filter_map(Result::err).collect();
    (injected, errors)
}

/// Puts one fault on and takes it off again after its time.
async fn one(p: &Planned, stack: &Stack) -> Result<(), String> {
    let inst = stack.instances.get(p.instance);
    let link = |on_redis: bool| {
        inst.and_then(|i| match on_redis {
            true => i.redis_link.as_ref(),
            false => i.backend_link.as_ref(),
        })
        .ok_or_else(|| "no such link".to_owned())
    };
    match p.kind {
        FaultKind::RedisPause => stack.pause_redis(p.lasts).await,
        FaultKind::RedisRestart => stack.restart_redis(p.lasts).await,
        FaultKind::RedisLink | FaultKind::BackendLink => {
            let proxy = link(p.kind == FaultKind::RedisLink)?;
            proxy.set(p.link);
            tokio::time::sleep(p.lasts).await;
            proxy.set(Fault::Pass);
            Ok(())
        }
        FaultKind::BackendErrors => {
            stack.demo.set_failing(true);
            tokio::time::sleep(p.lasts).await;
            stack.demo.set_failing(false);
            Ok(())
        }
        FaultKind::BackendSlow => {
            stack.demo.set_slow(Duration::from_secs(2));
            tokio::time::sleep(p.lasts).await;
            stack.demo.set_slow(Duration::ZERO);
            Ok(())
        }
        FaultKind::GatewayRestart => stack.restart_gateway(p.instance, p.lasts).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chaos() -> Chaos {
        Chaos {
            seed: 0,
            faults: 40,
            window: Duration::from_secs(5),
            shortest: Duration::from_millis(100),
            longest: Duration::from_millis(900),
            kinds: vec![
                FaultKind::RedisPause,
                FaultKind::RedisLink,
                FaultKind::BackendLink,
                FaultKind::GatewayRestart,
            ],
        }
    }

    #[test]
    fn a_seed_draws_the_same_schedule_and_faults_on_one_thing_never_overlap() {
        let a = schedule(&chaos(), 7, 2);
        assert_eq!(a, schedule(&chaos(), 7, 2), "same seed, same schedule");
        assert_ne!(
            a,
            schedule(&chaos(), 8, 2),
            "another seed, another schedule"
        );
        assert_eq!(a.len(), 40);
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at), "in time order");
        for (i, p) in a.iter().enumerate() {
            assert!(p.instance < 2);
            assert!(p.lasts >= Duration::from_millis(100) && p.lasts <= Duration::from_millis(900));
            for q in &a[i + 1..] {
                if q.resource() == p.resource() {
                    assert!(
                        q.at >= p.at + p.lasts,
                        "{} overlaps {}",
                        p.describe(),
                        q.describe()
                    );
                }
            }
        }
    }
}
