//! The HTML pages: waiting room, countdown/buy page and busy page are served with their
//! security headers, echo nothing unescaped or foreign, and can be branded from `pages.dir`
//! (a broken template is refused at start-up, naming the key).

use crate::common::*;
use flashgate::config::Config;
use http::StatusCode;

const TICKET: &str = "0123456789abcdef0123456789abcdef";

fn text(a: &Answer) -> String {
    String::from_utf8(a.body.to_vec()).expect("utf-8 page")
}

#[track_caller]
fn assert_page(a: &Answer) -> String {
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(a.headers["cache-control"], "no-store");
    assert_eq!(a.headers["x-content-type-options"], "nosniff");
    let csp = a.headers["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let html = text(a);
    // Every script on the page carries the nonce the policy allows, and only that one.
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("a script nonce in the CSP");
    assert_eq!(
        html.matches("<script").count(),
        html.matches(&format!("<script nonce=\"{nonce}\">")).count(),
        "{html}"
    );
    assert!(csp.contains("default-src 'none'"), "{csp}");
    html
}

#[tokio::test]
async fn the_waiting_room_carries_the_ticket_from_the_url() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, "[[sale]]\nsku = \"phone\"\nstock = 5\n").await;
    let a = send(
        gw.public_addr,
        get(&format!("/sale/phone/wait?ticket={TICKET}")),
    )
    .await;
    let html = assert_page(&a);
    assert!(
        html.contains(&format!("data-ticket=\"{TICKET}\"")),
        "{html}"
    );
    assert!(html.contains("data-sku=\"phone\""));
    assert!(
        html.contains("/sale/tickets/"),
        "the page polls the ticket route"
    );
}

#[tokio::test]
async fn a_foreign_ticket_or_sku_is_never_echoed() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, "[[sale]]\nsku = \"phone\"\nstock = 5\n").await;
    let hostile = "%3Cscript%3Ealert(1)%3C/script%3E";
    for path in [
        format!("/sale/phone/wait?ticket={hostile}"),
        "/sale/phone/wait?ticket=%22%3E%3Cimg%20src=x%3E".to_owned(),
        format!("/sale/phone/wait?ticket={}", TICKET.to_uppercase()),
    ] {
        let a = send(gw.public_addr, get(&path)).await;
        let html = assert_page(&a);
        assert!(html.contains("data-ticket=\"\""), "{path}: {html}");
        assert!(
            !html.contains("alert(1)") && !html.contains("img src"),
            "{path}"
        );
    }
    let a = send(gw.public_addr, get(&format!("/sale/busy?sku={hostile}"))).await;
    let html = assert_page(&a);
    assert!(!html.contains("alert(1)"), "{html}");
    let a = send(gw.public_addr, get("/sale/busy?sku=phone")).await;
    assert!(assert_page(&a).contains("<b id=\"sku\">phone</b>"));
    let a = send(gw.public_addr, get("/sale/nope/wait")).await;
    assert_refused(&a, StatusCode::NOT_FOUND, "unknown_sale");
    let a = send(gw.public_addr, request("POST", "/sale/phone/wait", &[], "")).await;
    assert_refused(&a, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn before_the_opening_the_sale_page_counts_down_to_it() {
    let up = Upstream::start().await;
    let gw = sale_gateway(
        &up,
        "[[sale]]\nsku = \"phone\"\nstock = 5\nstarts_at = \"2100-01-01T00:00:00Z\"\n",
    )
    .await;
    let a = send(gw.public_addr, get("/sale/phone/wait")).await;
    let html = assert_page(&a);
    assert!(
        html.contains("data-starts-at-ms=\"4102444800000\""),
        "{html}"
    );
    assert!(html.contains("2100-01-01T00:00:00Z"), "{html}");
    let now_ms: u64 = html
        .split("data-now-ms=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|v| v.parse().ok())
        .expect("the server's clock on the page");
    assert!(now_ms > 1_700_000_000_000);
}

fn pages_dir(files: &[(&str, &str)]) -> String {
    let dir = std::env::temp_dir().join(format!(
        "flashgate-pages-{}-{}",
        std::process::id(),
        files.len()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, body) in files {
        std::fs::write(dir.join(name), body).expect("write");
    }
    dir.to_str().expect("utf-8").to_owned()
}

#[tokio::test]
async fn an_operator_brands_the_pages_from_files() {
    let dir = pages_dir(&[(
        "busy.html",
        "<h1>ACME is busy</h1><p>{{sku}} in {{ retry_after }} s</p>",
    )]);
    let up = Upstream::start().await;
    let gw = sale_gateway(
        &up,
        &format!("[pages]\ndir = \"{dir}\"\n[[sale]]\nsku = \"phone\"\nstock = 5\n"),
    )
    .await;
    let a = send(gw.public_addr, get("/sale/busy?sku=phone")).await;
    let page = text(&a);
    let seconds = page
        .strip_prefix("<h1>ACME is busy</h1><p>phone in ")
        .and_then(|r| r.strip_suffix(" s</p>"))
        .unwrap_or_else(|| panic!("the operator's page: {page}"));
    assert!(seconds.parse::<u32>().is_ok_and(|s| s >= 1), "{page}");
    // The pages not in the directory stay the built-in ones.
    let a = send(
        gw.public_addr,
        get(&format!("/sale/phone/wait?ticket={TICKET}")),
    )
    .await;
    assert!(assert_page(&a).contains(&format!("data-ticket=\"{TICKET}\"")));
}

/// Templates are read where the gateway is composed (once), not by config validation:
/// `Gateway::build`, which `check-config` and `serve` both run, refuses a broken one.
#[test]
fn a_broken_template_is_refused_naming_the_key() {
    let dir = pages_dir(&[("wait.html", "<p>{{ order }}</p>"), ("x", "")]);
    let text = format!("[upstream]\nurl = \"http://127.0.0.1:9\"\n[pages]\ndir = \"{dir}\"\n");
    let config = Config::from_toml(&text, "test", &[]).expect("valid as a config");
    let shown = match flashgate::Gateway::build(config) {
        Ok(_) => panic!("a template with an unknown variable was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        shown.contains("pages.dir") && shown.contains("order"),
        "{shown}"
    );
    let text = "[upstream]\nurl = \"http://127.0.0.1:9\"\n[pages]\ndir = \"/nonexistent/pages\"\n";
    let config = Config::from_toml(text, "test", &[]).expect("valid as a config");
    let shown = match flashgate::Gateway::build(config) {
        Ok(_) => panic!("a missing pages directory was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(shown.contains("pages.dir"), "{shown}");
}
