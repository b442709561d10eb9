//! One drain rate for many instances: 1, 2 and 4 gateway instances on one Redis drain one
//! sale configured at `RATE` per second; prints the total achieved, each instance's share,
//! and the store calls per second the drain made (moving the line's cursor, or leases). Then the token route with
//! the memory store beside the Redis store: tokens are signed, so the two should be level.
//!
//!   bash bench/global_drain.sh                        # starts redis-server itself
//!   RATE=5000 WINDOW=10 bash bench/global_drain.sh    # 5,000/s, 10 s windows
//!
//! Under `cargo test` (no `--bench` argument) it does nothing: it needs a Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flashgate::config::Config;
use flashgate::gateway::Gateway;
use flashgate::sale::context::SaleContext;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

#[path = "env.rs"]
mod env;
#[path = "fill.rs"]
mod fill;
use env::env_or;

fn config(redis: Option<&str>, prefix: &str, rate: u64, queued: u64) -> Config {
    let store = match redis {
        Some(url) => format!(
            "[store]\nkind = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n\
             [cluster]\nsecret = \"bench-token-secret-0123456789\"\n"
        ),
        None => String::new(),
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"\"\n\
         [upstream]\nurl = \"http://127.0.0.1:9\"\n{store}\
         [queue]\ndrain_rate = {rate}\nworkers = 32\ncapacity = {queued}\nadmit_factor = 1.0\n\
         [limits]\nper_user_rate = 0\n\
         [[sale]]\nsku = \"bench\"\nstock = {}\nper_user_limit = 1\n",
        queued * 8
    );
    Config::from_toml(&text, "bench", &[]).expect("bench config")
}

/// A count from the metrics text (`name{labels} value`).
fn metric(ctx: &SaleContext, series: &str) -> f64 {
    String::from_utf8_lossy(&ctx.metrics.render())
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Drains with `n` instances for `seconds`; prints the figures.
async fn drain_with(n: usize, redis: &str, rate: u64, seconds: u64) {
    // Enough queued on every instance that none runs dry in the window.
    let queued = rate * (seconds + 3);
    let prefix = format!("gd{n}-{}", std::process::id());
    let mut instances = Vec::new();
    for _ in 0..n {
        let cfg = config(Some(redis), &prefix, rate, queued);
        let built = Gateway::build(cfg.clone()).expect("gateway");
        let ctx = built.context().clone();
        ctx.load_stock(&cfg.sales).await.expect("stock");
        let sale = ctx.sales.get("bench").expect("sale").clone();
        sale.set_draining(false);
        fill::fill(&ctx, &sale, queued, &format!("i{}u", instances.len())).await;
        instances.push((ctx, sale));
    }
    let shutdown = CancellationToken::new();
    let drains: Vec<_> = instances
        .iter()
        .map(|(ctx, sale)| {
            tokio::spawn(flashgate::sale::drain::run(
                ctx.clone(),
                sale.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    for (_, sale) in &instances {
        sale.set_draining(true);
    }
    // Skip the first second: it includes the budget's initial burst.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let snapshot = |instances: &[(Arc<SaleContext>, _)]| -> Vec<(f64, f64)> {
        instances
            .iter()
            .map(|(ctx, _)| {
                (
                    metric(ctx, "flashgate_drained_total{sku=\"bench\"}"),
                    // The drain's calls: the line's cursor with a shared store, leases
                    // with the memory store (or while the cursor cannot be moved).
                    metric(
                        ctx,
                        "flashgate_store_step_seconds_count{step=\"advance_line\"}",
                    ) + metric(
                        ctx,
                        "flashgate_store_step_seconds_count{step=\"lease_drain\"}",
                    ),
                )
            })
            .collect()
    };
    let before = snapshot(&instances);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = snapshot(&instances);
    let elapsed = start.elapsed().as_secs_f64();
    shutdown.cancel();
    for d in drains {
        let _ = d.await;
    }
    let shares: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.0 - b.0) / elapsed)
        .collect();
    let calls: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.1 - b.1) / elapsed)
        .collect();
    let total: f64 = shares.iter().sum();
    let deviation = (total - rate as f64) / rate as f64 * 100.0;
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    println!(
        "global_drain: {n} instance(s), configured {rate}/s: total {total:.1}/s ({deviation:+.2}%, target ±2%), \
         shares {} /s, drain store calls {} /s per instance (target ≤ 100)",
        fmt(&shares),
        fmt(&calls)
    );
}

/// `POST /sale/bench/token` as fast as `clients` connections allow for `seconds`.
async fn tokens_per_second(redis: Option<&str>, clients: usize, seconds: u64) -> f64 {
    let gw = Gateway::start(config(redis, "tokens", 1000, 1000))
        .await
        .expect("gateway");
    let addr = gw.public_addr;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let user = format!("c{c}");
            while Instant::now() < stop {
                let req = http::Request::post("/sale/bench/token")
                    .header("host", "bench")
                    .header("x-user-id", &user)
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let resp = send.send_request(req).await.expect("answer");
                assert_eq!(resp.status(), 200, "token refused");
                let _ = resp.into_body().collect().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / seconds as f64;
    gw.shutdown();
    let _ = gw.wait().await;
    rate
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let redis = std::env::var("REDIS_URL").expect("REDIS_URL (bench/global_drain.sh sets it)");
    let rate = env_or::<u64>("RATE", 1000);
    let seconds = env_or::<u64>("WINDOW", 5);
    for n in [1, 2, 4] {
        drain_with(n, &redis, rate, seconds).await;
    }
    let clients = env_or::<usize>("CLIENTS", 32);
    let memory = tokens_per_second(None, clients, seconds).await;
    let shared = tokens_per_second(Some(&redis), clients, seconds).await;
    println!(
        "token route: memory store {memory:.0}/s, Redis store {shared:.0}/s: {:.2}x (target ≥ 0.95x)",
        shared / memory
    );
}
