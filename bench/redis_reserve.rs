//! Reserve steps per second through flashgate's Redis store, CLIENTS at a time.
//! Run by `bench/redis_reserve.sh`, which starts redis-server and prints the figure beside
//! redis-benchmark's for an equivalent script. Without REDIS_URL (as under `cargo test`)
//! it says so and does nothing.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use flashgate::config::{StoreConfig, StoreKind};
use flashgate::store::{RedisStore, Reservation, ReserveRequest, StockSteps, TokenSteps};
use flashgate::token::TokenSigner;
use flashgate::types::{unix_millis, Sku, UserId};
use tokio::task::JoinSet;

#[path = "env.rs"]
mod env;
use env::env_or;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        println!("redis_reserve: REDIS_URL not set; run bench/redis_reserve.sh");
        return;
    };
    let clients = env_or::<usize>("CLIENTS", 50);
    let steps = env_or::<usize>("STEPS", 200_000);
    let cfg = StoreConfig {
        kind: StoreKind::Redis,
        url,
        pool_size: env_or::<usize>("POOL", 8),
        timeout: Duration::from_secs(5),
        ..StoreConfig::default()
    };
    let store = Arc::new(RedisStore::new(&cfg, Duration::from_secs(600)).expect("pool"));
    let sku = Sku::new("bench");
    store
        .set_stock(&sku, steps as u64 * 2)
        .await
        .expect("stock");

    // Tokens first, untimed: a reserve spends one.
    let per_client = steps / clients;
    let mut set = JoinSet::new();
    for c in 0..clients {
        let sku = sku.clone();
        set.spawn(async move {
            let mut reqs = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let user = UserId::parse(&format!("c{c}u{i}")).expect("user");
                let expires = unix_millis(SystemTime::now()) + 600_000;
                let token = TokenSigner::new("bench-secret").issue(&sku, &user, expires);
                reqs.push(ReserveRequest {
                    sku: sku.clone(),
                    user,
                    token,
                    quantity: 1,
                    per_user_limit: 1,
                });
            }
            reqs
        });
    }
    let mut batches = Vec::new();
    while let Some(b) = set.join_next().await {
        batches.push(b.expect("token task"));
    }

    let start = Instant::now();
    let mut set = JoinSet::new();
    for reqs in batches {
        let store = store.clone();
        set.spawn(async move {
            let mut reserved = 0usize;
            for r in &reqs {
                if let Reservation::Reserved { .. } =
                    store.reserve(r).await.expect("reserve").outcome
                {
                    reserved += 1;
                }
            }
            reserved
        });
    }
    let mut reserved = 0;
    while let Some(n) = set.join_next().await {
        reserved += n.expect("reserve task");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(reserved, per_client * clients, "every step reserved");
    println!(
        "flashgate RedisStore::reserve: {reserved} steps, {clients} clients, {:.0} steps/s",
        reserved as f64 / secs
    );
}
