//! A gateway in process, and the sale calls tests make of it.

use std::net::SocketAddr;

use flashgate::{Config, Gateway};
use http::StatusCode;

use super::client::{request, send, Answer};
use super::upstream::Upstream;

/// Config text for a gateway on free loopback ports in front of `upstream_url`, plus `extra`
/// TOML lines for the `[server]` section.
pub fn config_text(upstream_url: &str, server_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nthreads = 1\n{server_extra}\n\
         [upstream]\nurl = \"{upstream_url}\"\ntimeout = \"5s\"\n"
    )
}

/// Starts a gateway in this runtime from config text.
pub async fn gateway(text: &str) -> Gateway {
    let config = Config::from_toml(text, "test", &[]).expect("test config is valid");
    Gateway::start(config).await.expect("gateway starts")
}

/// A gateway in front of `up` with the given extra TOML (sections after `[upstream]`).
pub async fn sale_gateway(up: &Upstream, extra: &str) -> Gateway {
    gateway(&format!("{}{extra}", config_text(&up.url(), ""))).await
}

/// `POST /sale/{sku}/token` as `user`, whatever the answer.
pub async fn ask_token(addr: SocketAddr, sku: &str, user: &str) -> Answer {
    send(
        addr,
        request(
            "POST",
            &format!("/sale/{sku}/token"),
            &[("x-user-id", user)],
            "",
        ),
    )
    .await
}

/// `POST /sale/{sku}/token` as `user`; returns the token text.
pub async fn token_for(addr: SocketAddr, sku: &str, user: &str) -> String {
    let a = ask_token(addr, sku, user).await;
    assert_eq!(a.status, StatusCode::OK, "token for {user}: {:?}", a.body);
    a.json()["token"].as_str().expect("token field").to_owned()
}

/// `POST /sale/{sku}/order` as `user` with `token` in the header.
pub async fn order(addr: SocketAddr, sku: &str, user: &str, token: &str) -> Answer {
    send(
        addr,
        request(
            "POST",
            &format!("/sale/{sku}/order"),
            &[("x-user-id", user), ("x-sale-token", token)],
            "",
        ),
    )
    .await
}

/// `GET /sale/tickets/{ticket}` on `addr`, which must find it: the JSON.
pub async fn poll_ticket(addr: SocketAddr, ticket: &str) -> serde_json::Value {
    let a = send(addr, super::client::get(&format!("/sale/tickets/{ticket}"))).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    a.json()
}

/// Polls `ticket` on `addr` until it is decided (no longer queued or pre-queued): its
/// status, `confirmed` read as `reserved` (the test backend takes every order).
pub async fn settled(addr: SocketAddr, ticket: &str) -> String {
    super::client::guarded("the ticket to be decided", async {
        loop {
            match poll_ticket(addr, ticket).await["status"]
                .as_str()
                .unwrap_or("")
            {
                "queued" | "prequeued" => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                "confirmed" => return "reserved".to_owned(),
                other => return other.to_owned(),
            }
        }
    })
    .await
}

/// An admin API call on `addr` with bearer `token`, an optional `If-Match` version and a
/// JSON body (`Null`: none).
pub async fn admin_call(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    if_match: Option<u64>,
    body: serde_json::Value,
) -> Answer {
    let bearer = format!("Bearer {token}");
    let tag = if_match.map(|v| format!("\"{v}\""));
    let mut headers = vec![("authorization", bearer.as_str())];
    if let Some(t) = &tag {
        headers.push(("if-match", t.as_str()));
    }
    let text = match body.is_null() {
        true => String::new(),
        false => body.to_string(),
    };
    send(addr, request(method, path, &headers, &text)).await
}

/// An RFC 3339 stamp `secs` from now (a sale's opening).
pub fn rfc3339_in(secs: u64) -> String {
    let at = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("timestamp")
}
