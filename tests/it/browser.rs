//! The pages in a real browser: headless Debian Chromium driven by playwright-core
//! (tests/browser/pages.mjs). A buyer goes token → order → waiting room and sees its place
//! fall, survive a reload and a network blip, then its order; the busy page on overflow; the
//! countdown before the opening. Screenshots land in `target/tmp/browser-artifacts/`.
//! `tests/run.sh` installs chromium, node and playwright-core when missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

const ADMIN_TOKEN: &str = "browser-test-admin-token";

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// Runs one scenario of pages.mjs against `gw`'s sale `sku`.
async fn drive(gw: &flashgate::gateway::Gateway, sku: &str, scenario: &str) {
    drive_at(
        gw.admin_addr,
        ADMIN_TOKEN,
        &format!("http://{}", gw.public_addr),
        None,
        sku,
        scenario,
    )
    .await;
}

/// Runs one scenario against the gateway at `url`; `cert` is its certificate when `url`
/// is https.
async fn drive_at(
    admin: std::net::SocketAddr,
    admin_token: &str,
    url: &str,
    cert: Option<&Path>,
    sku: &str,
    scenario: &str,
) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/pages.mjs");
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules");
    assert!(
        modules.join("playwright-core").is_dir() && Path::new("/usr/bin/chromium").exists(),
        "the browser tests need chromium and tests/browser/node_modules: run `bash tests/run.sh`"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script)
        .arg(scenario)
        .env("GATEWAY", url)
        .env("ADMIN", format!("http://{admin}"))
        .env("ADMIN_TOKEN", admin_token)
        .env("SKU", sku)
        .env("SOON", "soon")
        .env("ARTIFACTS", artifacts())
        .kill_on_drop(true);
    if let Some(cert) = cert {
        cmd.env("CERT_PEM", cert).env("NODE_EXTRA_CA_CERTS", cert);
    }
    // The script bounds each of its waits; this bounds the whole browser run.
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("the browser run ends")
        .expect("node runs (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "{scenario} in chromium failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn base(up: &Upstream, queue: &str, sale: &str) -> String {
    format!(
        "{}[admin]\ntoken = \"{ADMIN_TOKEN}\"\n[limits]\nper_user_rate = 0\n[queue]\n{queue}\n[[sale]]\n{sale}\n",
        config_text(&up.url(), "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_waits_in_the_waiting_room_and_gets_the_order() {
    let up = Upstream::start().await;
    let text = base(
        &up,
        "response = \"async\"\ndrain_rate = 1\nworkers = 1",
        "sku = \"phone\"\nstock = 20",
    );
    let gw = gateway(&text).await;
    drive(&gw, "phone", "waiting-room").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_sends_the_browser_to_the_busy_page() {
    let up = Upstream::start().await;
    let text = base(
        &up,
        "response = \"async\"\ncapacity = 1\noverflow = \"redirect\"\nadmit_factor = 100.0",
        "sku = \"phone\"\nstock = 20",
    );
    let gw = gateway(&text).await;
    drive(&gw, "phone", "busy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sale_page_counts_down_then_sells() {
    let up = Upstream::start().await;
    let stamp = rfc3339_in(4);
    let text = base(
        &up,
        "response = \"wait\"",
        &format!(
            "sku = \"later\"\nstock = 20\nstarts_at = \"2100-01-01T00:00:00Z\"\n\
             [[sale]]\nsku = \"soon\"\nstock = 20\nstarts_at = \"{stamp}\""
        ),
    );
    let gw = gateway(&text).await;
    drive(&gw, "later", "countdown").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prequeue_page_counts_down_and_the_buyer_is_served_at_the_opening() {
    let up = Upstream::start().await;
    // Time for chromium to start and join before the opening, on a busy machine.
    let stamp = rfc3339_in(12);
    let text = base(
        &up,
        "response = \"wait\"",
        &format!("sku = \"early\"\nstock = 20\nstarts_at = \"{stamp}\"\nprequeue = \"1h\""),
    );
    let gw = gateway(&text).await;
    drive(&gw, "early", "prequeue").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_works_over_https() {
    let dir = artifacts().join("tls");
    std::fs::create_dir_all(&dir).expect("dir");
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).expect("cert");
    std::fs::write(&key, c.signing_key.serialize_pem()).expect("key");
    let up = Upstream::start().await;
    let text = base(
        &up,
        "response = \"async\"\ndrain_rate = 1\nworkers = 1",
        "sku = \"phone\"\nstock = 20",
    )
    .replace(
        "[admin]",
        &format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n[admin]",
            cert.display(),
            key.display()
        ),
    );
    let gw = gateway(&text).await;
    let url = format!("https://localhost:{}", gw.public_addr.port());
    drive_at(
        gw.admin_addr,
        ADMIN_TOKEN,
        &url,
        Some(&cert),
        "phone",
        "waiting-room",
    )
    .await;
}

/// `flashgate demo` exactly as its banner says: open the printed sale page in a browser
/// that sends no identity header, click Buy, watch the waiting room (the sale held through
/// the admin API with `--admin-token`), get the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_sells_to_a_plain_browser_as_printed() {
    let token = "demo-browser-admin-token";
    let demo = spawn_demo(&["--admin-token", token]);
    let gateway = demo.page.split("/sale/").next().expect("base").to_owned();
    drive_at(demo.admin, token, &gateway, None, "demo-phone", "demo").await;
}
