//! `delivery.mode = "stream"`: orders stay in the Redis outbox stream and the backend
//! consumes them with its own consumer group (the example consumer in `examples/`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use crate::redis_server::RedisServer;
use http::StatusCode;

/// `target/<profile>/examples/stream_consumer`. `cargo test --all-targets` builds examples
/// as tests; tests/run.sh builds the program first (`cargo build --all-targets`), else it is
/// built here, with the workspace's features.
fn example_consumer() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile_dir.join("examples").join("stream_consumer");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--workspace", "--example", "stream_consumer"])
            .status()
            .expect("cargo build");
        assert!(status.success());
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_consumes_orders_from_the_stream() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let cfg = format!(
        "{}[cluster]\nsecret = \"test-token-secret-0123456789\"\n[store]\nkind = \"redis\"\nurl = \"{}\"\n[delivery]\nmode = \"stream\"\n[[sale]]\nsku = \"phone\"\nstock = 10\n",
        config_text(&up.url(), ""),
        redis.url()
    );
    let gw = gateway(&cfg).await;
    let mut ids = HashSet::new();
    for u in ["a", "b", "c"] {
        let t = token_for(gw.public_addr, "phone", u).await;
        let a = order(gw.public_addr, "phone", u, &t).await;
        assert_eq!(a.status, StatusCode::CREATED);
        ids.insert(a.json()["order_id"].as_str().expect("id").to_owned());
    }
    assert_eq!(redis.command(&["XLEN", "flashgate:{phone}:outbox"]), ":3");

    let out = tokio::task::spawn_blocking({
        let url = redis.url();
        move || {
            Command::new(example_consumer())
                .args([
                    "--redis",
                    &url,
                    "--sku",
                    "phone",
                    "--max",
                    "3",
                    "--idle-exit-ms",
                    "10000",
                ])
                .output()
                .expect("run the example consumer")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let consumed: HashSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v["order_id"].as_str().expect("order id").to_owned()
        })
        .collect();
    assert_eq!(consumed, ids, "each reserved order consumed once");
    assert_eq!(redis.command(&["XLEN", "flashgate:{phone}:outbox"]), ":0");
    // The gateway itself delivered nothing over HTTP.
    assert!(up
        .drain_seen()
        .await
        .iter()
        .all(|s| s.uri.path() != "/orders"));
}

/// Adversarial review: an "auto" drain rate was refused in a stream-mode file but taken
/// through the API, where nothing steers it: it drained at its minimum for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_drain_rate_is_refused_in_stream_mode_through_the_api_too() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let cfg = format!(
        "{}[admin]\ntoken = \"stream-admin\"\n[cluster]\nsecret = \"test-token-secret-0123456789\"\n\
         [store]\nkind = \"redis\"\nurl = \"{}\"\n[delivery]\nmode = \"stream\"\n",
        config_text(&up.url(), ""),
        redis.url()
    );
    let gw = gateway(&cfg).await;
    let put = |rate: serde_json::Value| {
        let body = serde_json::json!({"stock": 5, "queue": {"drain_rate": rate}});
        admin_call(
            gw.admin_addr,
            "stream-admin",
            "PUT",
            "/admin/sales/lamp",
            None,
            body,
        )
    };
    let a = put(serde_json::json!("auto")).await;
    assert_eq!(a.status, http::StatusCode::BAD_REQUEST, "{:?}", a.json());
    assert_eq!(a.json()["error"], "invalid_sale");
    assert_eq!(a.json()["key"], "queue.drain_rate");
    let a = put(serde_json::json!(50)).await;
    assert_eq!(a.status, http::StatusCode::CREATED, "{:?}", a.json());
    gw.shutdown();
    gw.wait().await.expect("stopped");
}
