//! The client's address behind balancers: `X-Forwarded-For` believed only from
//! `server.trusted_proxies`, and the PROXY protocol on the public listener.

use crate::common::*;
use http::StatusCode;

const SALE: &str = "[limits]\nper_user_rate = 0\nper_ip_rate = 1\nper_ip_burst = 1\n\
                    [[sale]]\nsku = \"phone\"\nstock = 5\n";

async fn token_from(addr: std::net::SocketAddr, user: &str, xff: &str) -> Answer {
    send(
        addr,
        request(
            "POST",
            "/sale/phone/token",
            &[("x-user-id", user), ("x-forwarded-for", xff)],
            "",
        ),
    )
    .await
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let up = Upstream::start().await;
    let gw = gateway(&format!("{}{SALE}", config_text(&up.url(), ""))).await;
    let a = token_from(gw.public_addr, "u1", "203.0.113.1").await;
    assert_eq!(a.status, StatusCode::OK);
    // Another claimed address is the same peer: its per-IP allowance is spent.
    let a = token_from(gw.public_addr, "u2", "203.0.113.2").await;
    assert_refused(&a, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // And the upstream hears the peer, not the claim.
    let a = send(
        gw.public_addr,
        request("GET", "/x", &[("x-forwarded-for", "203.0.113.1")], ""),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let h = up.next_seen().await.headers;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_get_their_own_limits() {
    let up = Upstream::start().await;
    let gw = gateway(&format!(
        "{}{SALE}",
        config_text(&up.url(), "trusted_proxies = [\"127.0.0.0/8\"]")
    ))
    .await;
    // The balancer's own chain: the client, then a trusted hop.
    let a = token_from(gw.public_addr, "u1", "203.0.113.1, 127.0.0.9").await;
    assert_eq!(a.status, StatusCode::OK);
    let a = token_from(gw.public_addr, "u2", "203.0.113.2").await;
    assert_eq!(a.status, StatusCode::OK, "a second client is not the first");
    let a = token_from(gw.public_addr, "u3", "203.0.113.1").await;
    assert_refused(&a, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Upstream: the chain kept and the balancer appended; X-Real-IP is the client.
    let a = send(
        gw.public_addr,
        request(
            "GET",
            "/x",
            &[("x-forwarded-for", "6.6.6.6, 203.0.113.7")],
            "",
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let h = up.next_seen().await.headers;
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "203.0.113.7");
}

fn v2_header(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// `header` followed by a GET.
fn with_get(mut header: Vec<u8>) -> Vec<u8> {
    header.extend_from_slice(GET);
    header
}

#[tokio::test]
async fn a_proxy_protocol_header_names_the_client() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "proxy_protocol = true")).await;
    let v1 = with_get(b"PROXY TCP4 198.51.100.7 127.0.0.1 5000 80\r\n".to_vec());
    let v2 = with_get(v2_header([198, 51, 100, 8], 5001));
    for (bytes, client) in [(v1, "198.51.100.7"), (v2, "198.51.100.8")] {
        let text = raw(gw.public_addr, &bytes).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert_eq!(up.next_seen().await.headers["x-forwarded-for"], client);
    }
    // Without the header the connection is not the balancer's: closed unanswered.
    let text = raw(gw.public_addr, GET).await;
    assert_eq!(text, "", "answered a connection without a PROXY header");
    assert!(up.drain_seen().await.is_empty());
}

#[tokio::test]
async fn a_proxy_protocol_header_is_refused_where_it_is_not_configured() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(&up.url(), "")).await;
    let v1 = with_get(b"PROXY TCP4 198.51.100.7 127.0.0.1 5000 80\r\n".to_vec());
    let v2 = with_get(v2_header([198, 51, 100, 8], 5001));
    for bytes in [v1, v2] {
        let text = raw(gw.public_addr, &bytes).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    }
    assert!(up.drain_seen().await.is_empty(), "nothing was forwarded");
}

#[tokio::test]
async fn a_proxy_protocol_header_from_an_untrusted_peer_is_refused() {
    let up = Upstream::start().await;
    let gw = gateway(&config_text(
        &up.url(),
        "proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]",
    ))
    .await;
    let v1 = with_get(b"PROXY TCP4 198.51.100.7 127.0.0.1 5000 80\r\n".to_vec());
    assert_eq!(raw(gw.public_addr, &v1).await, "");
    assert!(up.drain_seen().await.is_empty());
}
