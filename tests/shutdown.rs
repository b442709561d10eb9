//! Graceful shutdown: stop accepting, finish what is in flight, then exit.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::*;
use http::StatusCode;
use tokio::net::TcpStream;

#[tokio::test]
async fn shutdown_finishes_the_in_flight_request() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let addr = gw.public_addr;
    let in_flight = tokio::spawn(async move { send(addr, get("/hold")).await });
    assert_eq!(up.arrival().await, "/hold");

    gw.shutdown();
    // New connections are refused once the listener has closed.
    guarded("listener to close", async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;

    up.release();
    let a = in_flight.await.expect("client task");
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body.as_ref(), b"held and released");
    guarded("gateway to stop", gw.wait())
        .await
        .expect("nothing undelivered is lost");
}

/// Starts the real binary and returns it with its public address, read from its JSON log.
fn spawn_binary(config: &std::path::Path) -> (std::process::Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashgate"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn flashgate");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("flashgate exited before listening")
            .expect("read log");
        let v: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
        if v["message"] == "flashgate listening" {
            let a = v["public_addr"].as_str().expect("public_addr field");
            break a.parse().expect("an address");
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let up = Upstream::start().await;
    let dir = std::env::temp_dir().join(format!("flashgate-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = dir.join("gw.toml");
    std::fs::write(&cfg, config_text(&up.url(), "")).expect("write config");
    let (mut child, addr) = spawn_binary(&cfg);

    let in_flight = tokio::spawn(async move { send(addr, get("/hold")).await });
    assert_eq!(up.arrival().await, "/hold");
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill failed");
    guarded("listener to close", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;

    up.release();
    let a = in_flight.await.expect("client task");
    assert_eq!(a.status, StatusCode::OK);
    let code = guarded(
        "flashgate to exit",
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("join")
    .expect("wait");
    assert!(code.success(), "exit status {code:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
