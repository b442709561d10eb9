//! Drain accuracy: fills a sale's queue, lets the drain run for a measured window, and
//! prints the rate actually released against the configured `drain_rate`.
//!
//!   cargo bench --bench drain_rate                 # 1000/s over 10 s
//!   DRAIN_RATE=5000 SECONDS=10 cargo bench --bench drain_rate
//!
//! Under `cargo test` (no `--bench` argument) it runs a one-second smoke check instead.

use std::time::{Duration, Instant};

use flashgate::config::Config;
use flashgate::gateway::Gateway;
use tokio_util::sync::CancellationToken;

#[path = "env.rs"]
mod env;
#[path = "fill.rs"]
mod fill;
use env::env_or;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let rate = env_or::<u64>("DRAIN_RATE", 1000);
    let seconds = if benching {
        env_or::<u64>("SECONDS", 10)
    } else {
        1
    };
    // Enough queued work that the queue never runs dry during the window.
    let queued = rate * (seconds + 2);
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:9\"\n\
         [queue]\ndrain_rate = {rate}\nworkers = 32\ncapacity = {queued}\nadmit_factor = 1.0\n\
         [[sale]]\nsku = \"bench\"\nstock = {}\nper_user_limit = 1\n",
        queued * 2
    );
    let config = Config::from_toml(&text, "bench", &[]).expect("bench config");
    let built = Gateway::build(config.clone()).expect("bench gateway");
    let ctx = built.context().clone();
    let store = ctx.store.clone();
    ctx.load_stock(&config.sales).await.expect("stock");
    let sale = ctx.sales.get("bench").expect("sale").clone();
    sale.set_draining(false);
    fill::fill(&ctx, &sale, queued, "u").await;
    let shutdown = CancellationToken::new();
    let drain = tokio::spawn(flashgate::sale::drain::run(
        ctx.clone(),
        sale.clone(),
        shutdown.clone(),
    ));
    sale.set_draining(true);
    // Skip the first second: it includes the bucket's initial burst.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start_stock = store.stock(&sale.sku).await.expect("stock").units;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let end_stock = store.stock(&sale.sku).await.expect("stock").units;
    let elapsed = start.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = drain.await;
    let measured = (start_stock - end_stock) as f64 / elapsed;
    let deviation = (measured - rate as f64) / rate as f64 * 100.0;
    println!(
        "drain_rate: configured {rate}/s, measured {measured:.1}/s over {elapsed:.2} s, deviation {deviation:+.2}% (target within ±2%)"
    );
}
