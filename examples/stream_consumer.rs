//! A backend's side of `delivery.mode = "stream"`: consume a sale's outbox stream with a
//! consumer group, apply each order once (keyed by its order id), then acknowledge it.
//!
//!   cargo run --example stream_consumer -- --redis redis://127.0.0.1:6379 --sku phone
//!
//! Orders this consumer read but did not acknowledge before it died are read again first
//! on restart (its pending list), so an order is applied at least once; applying by
//! order id makes that exactly once in effect. It exits after `--max` orders, or after
//! `--idle-exit-ms` without any.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use clap::Parser;
use redis::Commands;

#[derive(Parser)]
struct Args {
    /// Redis URL (the gateway's `store.url`).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// The gateway's `store.key_prefix`.
    #[arg(long, default_value = "flashgate")]
    prefix: String,
    /// The sale whose orders to consume.
    #[arg(long)]
    sku: String,
    /// Consumer group: one per backend service.
    #[arg(long, default_value = "backend")]
    group: String,
    /// This consumer's name within the group: one per backend process.
    #[arg(long, default_value = "worker-1")]
    consumer: String,
    /// Stop after this many orders (0 = no limit).
    #[arg(long, default_value_t = 0)]
    max: usize,
    /// Stop after this long without an order (0 = never).
    #[arg(long, default_value_t = 0)]
    idle_exit_ms: u64,
}

type Entries = Vec<(String, HashMap<String, String>)>;
type Reply = Option<Vec<(String, Entries)>>;

fn main() -> redis::RedisResult<()> {
    let args = Args::parse();
    let stream = format!("{}:{{{}}}:outbox", args.prefix, args.sku);
    let mut con = redis::Client::open(args.redis.as_str())?.get_connection()?;
    // Start from the beginning of the stream the first time; BUSYGROUP means it exists.
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(&args.group)
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut con);
    if let Err(e) = created {
        if e.code() != Some("BUSYGROUP") {
            return Err(e);
        }
    }
    let mut applied: HashSet<String> = HashSet::new();
    let mut done = 0usize;
    let mut last_order = Instant::now();
    // "0" re-reads this consumer's own pending entries (a previous run's), then ">" new ones.
    let mut from = "0";
    loop {
        let reply: Reply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&args.group)
            .arg(&args.consumer)
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(200)
            .arg("STREAMS")
            .arg(&stream)
            .arg(from)
            .query(&mut con)?;
        let entries: Entries = reply
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(_, e)| e)
            .collect();
        if entries.is_empty() {
            if from == "0" {
                from = ">";
                continue;
            }
            if args.idle_exit_ms > 0
                && last_order.elapsed() > Duration::from_millis(args.idle_exit_ms)
            {
                break;
            }
            continue;
        }
        for (id, fields) in entries {
            // An entry read before and deleted since (the order was cancelled) comes back
            // without its fields: nothing to apply, only to acknowledge.
            let order_id = fields.get("order_id").cloned().unwrap_or_default();
            // Apply once per order id, whatever the number of deliveries.
            if !order_id.is_empty() && applied.insert(order_id.clone()) {
                println!(
                    "{{\"order_id\":\"{order_id}\",\"sku\":\"{}\",\"user_id\":\"{}\",\"quantity\":{}}}",
                    fields.get("sku").map(String::as_str).unwrap_or(""),
                    fields.get("user_id").map(String::as_str).unwrap_or(""),
                    fields.get("quantity").map(String::as_str).unwrap_or("0"),
                );
                done += 1;
            }
            // Acknowledge, then drop it from the stream: it has left the outbox.
            let _: i64 = con.xack(&stream, &args.group, &[&id])?;
            let _: i64 = con.xdel(&stream, &[&id])?;
            last_order = Instant::now();
        }
        if args.max > 0 && done >= args.max {
            break;
        }
    }
    eprintln!("consumed {done} orders");
    Ok(())
}
