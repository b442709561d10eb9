//! `flashgate stock get|set|list` against a real redis-server.

use std::process::Command;

use crate::redis_server::RedisServer;

fn flashgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flashgate"))
        .args(args)
        .output()
        .expect("run flashgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(dir: &std::path::Path, store: &str) -> String {
    let path = dir.join("gw.toml");
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:9\"\n{store}\n\
         [[sale]]\nsku = \"phone\"\nstock = 5\n[[sale]]\nsku = \"tv\"\nstock = 3\n"
    );
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn stock_can_be_loaded_and_read() {
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("flashgate-stock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = config(
        &dir,
        &format!("[cluster]\nsecret = \"test-token-secret-0123456789\"\n[store]\nkind = \"redis\"\nurl = \"{}\"\n", redis.url()),
    );

    let (code, out, _) = flashgate(&["stock", "--config", &cfg, "list"]);
    assert_eq!(code, 0);
    assert_eq!(out, "phone (not loaded)\ntv (not loaded)\n");
    let (code, out, _) = flashgate(&["stock", "--config", &cfg, "set", "phone", "42"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("phone 42 (epoch load-"), "{out}");
    let (code, out, _) = flashgate(&["stock", "--config", &cfg, "get", "phone"]);
    assert_eq!((code, out.as_str()), (0, "phone 42\n"));
    assert_eq!(redis.command(&["GET", "flashgate:{phone}:stock"]), "42");
    let (code, out, _) = flashgate(&["stock", "--config", &cfg, "list"]);
    assert_eq!((code, out.as_str()), (0, "phone 42\ntv (not loaded)\n"));
    // Units are added atomically, and never below 0 nor above 2^53 - 1.
    let (code, out, _) = flashgate(&["stock", "--config", &cfg, "add", "phone", "8"]);
    assert_eq!((code, out.as_str()), (0, "phone 50\n"));
    let (code, out, _) = flashgate(&["stock", "--config", &cfg, "add", "phone", "-50"]);
    assert_eq!((code, out.as_str()), (0, "phone 0\n"));
    let (code, _, err) = flashgate(&["stock", "--config", &cfg, "add", "phone", "-1"]);
    assert_eq!(code, 1);
    assert!(err.contains("stock would leave"), "{err}");
    let (code, _, err) = flashgate(&[
        "stock",
        "--config",
        &cfg,
        "set",
        "phone",
        "9007199254740992",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("stock would leave"), "{err}");
    assert_eq!(redis.command(&["GET", "flashgate:{phone}:stock"]), "0");
    let (code, _, err) = flashgate(&["stock", "--config", &cfg, "get", "tv"]);
    assert_eq!(code, 1);
    assert!(err.contains("no sale `tv`"), "{err}");

    let memory = config(&dir, "");
    let (code, _, err) = flashgate(&["stock", "--config", &memory, "list"]);
    assert_eq!(code, 2);
    assert!(err.contains("`store.kind`"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dead_store_is_a_clear_error_not_a_hang() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let dir = std::env::temp_dir().join(format!("flashgate-stock-dead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = config(
        &dir,
        &format!("[cluster]\nsecret = \"test-token-secret-0123456789\"\n[store]\nkind = \"redis\"\nurl = \"{url}\"\n"),
    );
    let (code, _, err) = flashgate(&["stock", "--config", &cfg, "get", "phone"]);
    assert_eq!(code, 1);
    assert!(err.contains("store unavailable"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
