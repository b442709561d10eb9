//! The system's limits a crowd meets first. The listen backlog: what `server.backlog`
//! asks for is what the kernel queues. The open-files limit: raised to the hard limit at start and logged, a warning naming
//! the keys when the connections the config allows cannot all be open, and accepting that
//! backs off while the process is out of descriptors, then recovers once some close.

use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::*;

/// The limit the gateway runs under: a few dozen connections, then EMFILE.
const LIMIT: u64 = 64;

#[tokio::test]
async fn out_of_descriptors_accepting_backs_off_and_recovers() {
    let dead = dead_url().await;
    let text = format!(
        "{}[[sale]]\nsku = \"phone\"\nstock = 5\n",
        config_text(&dead, "max_connections_per_ip = 0")
    );
    let (dir, cfg) = config_file("open-files", &text);
    let gw = spawn_logged_with_open_files(&cfg, LIMIT);

    let lines = gw.lines();
    let limit = lines
        .iter()
        .find(|l| l["message"] == "open-files limit (RLIMIT_NOFILE)")
        .expect("the limit is logged at start");
    assert_eq!(limit["soft"], LIMIT, "raised as far as the hard limit");
    assert_eq!(limit["hard"], LIMIT);
    let warned = lines.iter().any(|l| {
        l["level"] == "WARN"
            && l["message"].as_str().is_some_and(|m| {
                m.contains("server.max_connections (10000)") && m.contains("RLIMIT_NOFILE")
            })
    });
    assert!(warned, "the keys that cannot fit are named: {lines:#?}");

    // More connections than descriptors: each sends a request and stays open.
    let mut held = Vec::new();
    for _ in 0..2 * LIMIT {
        let mut s = TcpStream::connect(gw.public).await.expect("connect");
        s.write_all(b"GET /sale/phone HTTP/1.1\r\nhost: shop.example\r\n\r\n")
            .await
            .expect("write");
        held.push(s);
    }
    until("an accept failing for want of descriptors", || async {
        gw.logged("Too many open files")
    })
    .await;
    let failed = gw
        .lines()
        .into_iter()
        .find(|l| l["message"] == "accept failed")
        .expect("logged");
    assert_eq!(
        failed["paused_ms"], 100,
        "accepting pauses instead of spinning"
    );

    // Once they close, the queued ones are taken and new ones served.
    drop(held);
    let a = send(gw.public, get("/sale/phone")).await;
    assert_eq!(a.status, StatusCode::OK);
    let metrics = scrape(gw.admin).await;
    let errors = value(
        &metrics,
        "flashgate_accept_errors_total{listener=\"public\",reason=\"open_files\"}",
    )
    .expect("counted");
    assert!(errors >= 1.0, "{errors}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The accept queue of the listener on `port`, as `ss` reports it (Send-Q of a listener).
fn accept_queue(port: u16) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2, installed by the test command)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no listener on {port}: {text}"))
}

#[tokio::test]
async fn the_listen_backlog_is_what_the_config_asks_and_by_default_the_systems_cap() {
    let dead = dead_url().await;
    let (dir, cfg) = config_file("backlog", &config_text(&dead, "backlog = 77"));
    let gw = spawn_logged(&cfg);
    assert_eq!(accept_queue(gw.public.port()), 77);
    assert_eq!(accept_queue(gw.admin.port()), 77);
    let logged = gw
        .lines()
        .into_iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("server.backlog"))
        })
        .expect("the backlog is logged at start");
    assert_eq!(logged["backlog"], 77);
    drop(gw);
    let _ = std::fs::remove_dir_all(dir);

    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("somaxconn")
        .trim()
        .parse()
        .expect("a number");
    let (dir, cfg) = config_file("backlog-default", &config_text(&dead, ""));
    let gw = spawn_logged(&cfg);
    assert_eq!(accept_queue(gw.public.port()), somaxconn);
    drop(gw);
    let _ = std::fs::remove_dir_all(dir);
}
