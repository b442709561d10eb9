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

/// Shows `path` in Chromium at desktop and phone widths; `selector` must appear (the state
/// the page is in). Screenshots: `state-{name}-{width}.png` among the artifacts.
async fn page_state(gw: &flashgate::gateway::Gateway, path: &str, selector: &str, name: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/pages.mjs");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(&script)
            .arg("page-state")
            .env("GATEWAY", format!("http://{}", gw.public_addr))
            .env("PAGE", path)
            .env("SELECTOR", selector)
            .env("NAME", name)
            .env("ARTIFACTS", artifacts())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run ends")
    .expect("node runs (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "{name} in chromium failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Queues one order of `sku` as `user` (async mode): its ticket and, once decided, order.
async fn queued(gw: &flashgate::gateway::Gateway, sku: &str, user: &str) -> String {
    let token = token_for(gw.public_addr, sku, user).await;
    let a = order(gw.public_addr, sku, user, &token).await;
    assert_eq!(a.status, http::StatusCode::ACCEPTED, "{:?}", a.json());
    a.json()["ticket"].as_str().expect("ticket").to_owned()
}

async fn status_of(
    gw: &flashgate::gateway::Gateway,
    ticket: &str,
    want: &str,
) -> serde_json::Value {
    guarded(&format!("ticket to be {want}"), async {
        loop {
            let now = poll_ticket(gw.public_addr, ticket).await;
            if now["status"] == want {
                return now;
            }

            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

async fn call(gw: &flashgate::gateway::Gateway, method: &str, path: &str) -> Answer {
    let none = serde_json::Value::Null;
    admin_call(gw.admin_addr, ADMIN_TOKEN, method, path, None, none).await
}

/// Every state of the sale page and the waiting room, in Chromium at a desktop's width and
/// a 360-px phone's, with screenshots: the sale open with its units left, sold out and
/// closed; a ticket queued (its place, the progress bar and the wait in words), reserved,
/// failed, confirmed, cancelled, sold out and closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_state_shows_at_desktop_and_phone_widths() {
    use std::sync::atomic::Ordering;
    let up = Upstream::start().await;
    let text = base(
        &up,
        "response = \"async\"\nadmit_factor = 10.0",
        "sku = \"shoes\"\nstock = 2\n[[sale]]\nsku = \"hats\"\nstock = 5\n\
         [[sale]]\nsku = \"one\"\nstock = 1\n[delivery]\nretry_base = \"10ms\"\nretry_max = \"50ms\"\n\
         breaker_cooldown = \"50ms\"",
    );
    let gw = gateway(&text).await;
    let room = |sku: &str, t: &str| format!("/sale/{sku}/wait?ticket={t}");
    page_state(
        &gw,
        "/sale/shoes/wait",
        "#status[data-state=open]",
        "sale-open",
    )
    .await;

    // Queued third behind a held drain.
    assert_eq!(
        call(&gw, "POST", "/admin/sales/hats/hold").await.status,
        http::StatusCode::OK
    );
    for u in ["h1", "h2"] {
        queued(&gw, "hats", u).await;
    }
    let third = queued(&gw, "hats", "h3").await;
    page_state(
        &gw,
        &room("hats", &third),
        "#state[data-state=queued] progress",
        "queued",
    )
    .await;

    // Reserved while the backend says "not now"; failed once it refuses for good.
    up.orders_status.store(503, Ordering::SeqCst);
    let r = queued(&gw, "shoes", "r1").await;
    status_of(&gw, &r, "reserved").await;
    page_state(
        &gw,
        &room("shoes", &r),
        "#outcome[data-outcome=reserved]",
        "reserved",
    )
    .await;
    up.orders_status.store(400, Ordering::SeqCst);
    status_of(&gw, &r, "failed").await;
    page_state(
        &gw,
        &room("shoes", &r),
        "#outcome[data-outcome=failed]",
        "failed",
    )
    .await;

    // Confirmed, then cancelled by the backend (unpaid).
    up.orders_status.store(0, Ordering::SeqCst);
    let c = queued(&gw, "shoes", "c1").await;
    let confirmed = status_of(&gw, &c, "confirmed").await;
    page_state(
        &gw,
        &room("shoes", &c),
        "#outcome[data-outcome=confirmed]",
        "confirmed",
    )
    .await;
    let order = confirmed["order_id"].as_str().expect("order").to_owned();
    let cancel = call(&gw, "POST", &format!("/admin/orders/{order}/cancel")).await;
    assert_eq!(cancel.status, http::StatusCode::OK, "{:?}", cancel.json());
    page_state(
        &gw,
        &room("shoes", &c),
        "#outcome[data-outcome=cancelled]",
        "cancelled",
    )
    .await;

    // Sold out: two queued for the last unit.
    assert_eq!(
        call(&gw, "POST", "/admin/sales/one/hold").await.status,
        http::StatusCode::OK
    );
    let first = queued(&gw, "one", "x1").await;
    let second = queued(&gw, "one", "x2").await;
    assert_eq!(
        call(&gw, "POST", "/admin/sales/one/release").await.status,
        http::StatusCode::OK
    );
    // Released in order, but the workers may run the two steps either way round.
    let lost = guarded("one of the two to sell out", async {
        loop {
            for t in [&first, &second] {
                if poll_ticket(gw.public_addr, t).await["status"] == "sold_out" {
                    return t.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    page_state(
        &gw,
        &room("one", &lost),
        "#outcome[data-outcome=sold_out]",
        "sold-out",
    )
    .await;
    page_state(
        &gw,
        "/sale/one/wait",
        "#status[data-state=sold_out]",
        "sale-sold-out",
    )
    .await;

    // Closed by an operator while queued.
    assert_eq!(
        call(&gw, "DELETE", "/admin/sales/hats").await.status,
        http::StatusCode::OK
    );
    status_of(&gw, &third, "closed").await;
    page_state(
        &gw,
        &room("hats", &third),
        "#outcome[data-outcome=closed]",
        "closed",
    )
    .await;
    page_state(
        &gw,
        "/sale/hats/wait",
        "#status[data-state=closed]",
        "sale-closed",
    )
    .await;
}
