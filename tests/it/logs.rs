//! What the gateway writes to its log: an access line per request when asked, admin
//! actions with who and what, a burst of one failure as one line with its count, and no
//! terminal colour codes when the log is not a terminal.

use std::process::{Command, Stdio};

use crate::common::*;
use http::StatusCode;

const ADMIN: &str = "[admin]\ntoken = \"adm\"\n";

fn messages<'a>(lines: &'a [serde_json::Value], message: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

#[tokio::test]
async fn access_lines_admin_actions_and_repeated_failures() {
    // An upstream nobody listens on: every proxied request fails the same way.
    let dead = dead_url().await;
    let text = format!(
        "{}[[sale]]\nsku = \"phone\"\nstock = 5\n{ADMIN}[log]\naccess = true\n",
        config_text(&dead, "shutdown_grace = \"0s\"")
    );
    let (dir, cfg) = config_file("logs", &text);
    let gw = spawn_logged(&cfg);

    for i in 0..30 {
        let a = send(gw.public, get(&format!("/down/{i}?secret=x"))).await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    }
    let paused = send(
        gw.admin,
        request(
            "POST",
            "/admin/sales/phone/pause",
            &[("authorization", "Bearer adm")],
            "",
        ),
    )
    .await;
    assert_eq!(paused.status, StatusCode::OK);
    assert_eq!(
        paused.json()["scope"],
        "instance",
        "the memory store: one instance"
    );
    // The pipe is read by another thread: wait for the last line this test makes (the
    // admin request's access line, written after the action's); every earlier one is in.
    until("the admin request's access line", || async {
        gw.lines()
            .iter()
            .any(|l| l["message"] == "access" && l["path"] == "/admin/sales/phone/pause")
    })
    .await;
    let lines = gw.lines();

    let access = messages(&lines, "access");
    let down: Vec<_> = access
        .iter()
        .filter(|l| l["path"].as_str().is_some_and(|p| p.starts_with("/down/")))
        .collect();
    assert_eq!(down.len(), 30, "one line per request");
    let first = down[0];
    assert_eq!(first["listener"], "public");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["status"], 502);
    assert!(first["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1:")));
    assert!(first["duration_ms"].is_number());
    assert!(first["bytes"].is_string());
    assert!(
        !down
            .iter()
            .any(|l| l["path"].as_str().unwrap_or("").contains("secret")),
        "the query stays out of the log"
    );
    assert!(
        access
            .iter()
            .any(|l| l["listener"] == "admin" && l["path"] == "/admin/sales/phone/pause"),
        "admin requests have their line too"
    );

    let failed = messages(&lines, "upstream request failed");
    assert_eq!(
        failed.len(),
        1,
        "30 failures in a burst: one line until the minute is over"
    );

    let action = messages(&lines, "admin action");
    assert_eq!(action.len(), 1);
    let action = action[0];
    assert_eq!(action["action"], "pause");
    assert_eq!(action["sku"], "phone");
    assert_eq!(
        (action["before"].clone(), action["after"].clone()),
        ("running".into(), "paused".into())
    );
    assert!(action["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1:")));

    // Review finding: a burst that ended before the minute was over never had its count
    // written. At the latest the stop writes it.
    let log = gw.log_handle();
    gw.signal(libc::SIGTERM);
    let code = gw.exit().await;
    assert!(code.success(), "{code:?}");
    until("the burst's count at the stop", || async {
        log.lines().iter().any(|l| {
            l["message"] == "upstream request failed"
                && l["repeated"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("x29 in the last"))
        })
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A log that is not a terminal (a file, the journal, a pipe) gets no colour codes.
#[test]
fn no_colour_codes_when_the_log_is_not_a_terminal() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let (dir, cfg) = config_file(
        "colour",
        &format!(
            "[server]\nlisten = \"{addr}\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [upstream]\nurl = \"http://127.0.0.1:9\"\n[log]\nformat = \"text\"\n"
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_flashgate"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run flashgate");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the address is taken: {log}");
    assert!(log.contains("cannot listen on"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log: {log:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A log reader that goes away (a collector restarting, `| head`) must not stop the
/// gateway from working or from stopping. Before, the first line written to the closed
/// pipe panicked the task writing it (the log library reported its own write error on the
/// same stderr), and the stop task was one: SIGTERM left the process serving for ever.
#[tokio::test]
async fn a_closed_log_pipe_does_not_keep_the_gateway_from_stopping() {
    let up = Upstream::start().await;
    let (dir, cfg) = config_file(
        "closed-log",
        &config_text(&up.url(), "shutdown_grace = \"50ms\""),
    );
    let gw = spawn_then_close_log(&cfg); // the reader goes away
    assert_eq!(send(gw.public, get("/still")).await.status, StatusCode::OK);
    gw.signal(libc::SIGTERM);
    let code = gw.exit().await;
    assert!(code.success(), "{code:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
