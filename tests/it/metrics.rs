//! `/metrics` on the admin listener reflects what the gateway did.

use std::time::Duration;

use crate::common::*;
use http::StatusCode;

#[tokio::test]
async fn metrics_follow_a_sale() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, "[[sale]]\nsku = \"phone\"\nstock = 1\n").await;
    let (addr, admin) = (gw.public_addr, gw.admin_addr);
    let t = token_for(addr, "phone", "alice").await;
    let bobs = token_for(addr, "phone", "bob").await;
    assert_eq!(
        order(addr, "phone", "alice", &t).await.status,
        StatusCode::CREATED
    );
    // Sold out now: bob's order is refused at the edge.
    let a = order(addr, "phone", "bob", &bobs).await;
    assert_refused(&a, StatusCode::GONE, "sold_out");
    // A token nobody signed is refused before anything else, and counted as such.
    let forged = order(addr, "phone", "bob", &"0123456789abcdef".repeat(4)).await;
    assert_refused(&forged, StatusCode::UNPROCESSABLE_ENTITY, "invalid_token");
    assert_eq!(send(addr, get("/catalog")).await.status, StatusCode::OK);

    let text = guarded("the delivery to be counted", async {
        loop {
            let text = scrape(admin).await;
            if value(&text, "flashgate_deliveries_total{result=\"confirmed\"}") == Some(1.0) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let expect = [
        (
            "flashgate_admission_decisions_total{outcome=\"admitted\",sku=\"phone\"}",
            1.0,
        ),
        (
            "flashgate_admission_decisions_total{outcome=\"sold_out\",sku=\"phone\"}",
            1.0,
        ),
        ("flashgate_drained_total{sku=\"phone\"}", 1.0),
        (
            "flashgate_reserve_outcomes_total{outcome=\"reserved\",sku=\"phone\"}",
            1.0,
        ),
        ("flashgate_queue_capacity{sku=\"phone\"}", 10000.0),
        ("flashgate_queue_depth{sku=\"phone\"}", 0.0),
        ("flashgate_stock_remaining{sku=\"phone\"}", 0.0),
        ("flashgate_queue_wait_seconds_count{sku=\"phone\"}", 1.0),
        ("flashgate_admission_decision_seconds_count", 2.0),
        (
            "flashgate_requests_total{route=\"proxy\",status=\"2xx\"}",
            1.0,
        ),
        (
            "flashgate_requests_total{route=\"sale\",status=\"4xx\"}",
            2.0,
        ),
        (
            "flashgate_requests_total{route=\"sale\",status=\"2xx\"}",
            3.0,
        ),
        (
            "flashgate_admission_decisions_total{outcome=\"invalid_token\",sku=\"phone\"}",
            1.0,
        ),
        (
            "flashgate_upstream_response_seconds_count{status=\"2xx\"}",
            1.0,
        ),
        ("flashgate_store_step_seconds_count{step=\"reserve\"}", 1.0),
        ("flashgate_circuit_breaker_open{breaker=\"store\"}", 0.0),
        ("flashgate_circuit_breaker_open{breaker=\"backend\"}", 0.0),
        ("flashgate_compensations_total{sku=\"phone\"}", 0.0),
    ];
    for (series, want) in expect {
        assert_eq!(value(&text, series), Some(want), "{series}\n{text}");
    }
    // The token was signed at the edge: no store step issued it.
    assert!(!text.contains("issue_token"), "{text}");
}

/// Adversarial review: an order refused as sold out at the edge whose token the user still
/// held unspent (the store then records it spent as sold out) was counted in no admission
/// outcome, so the admission funnel lost most of a sold-out crowd.
#[tokio::test]
async fn a_sold_out_refusal_of_a_real_token_is_counted() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, "[[sale]]\nsku = \"phone\"\nstock = 1\n").await;
    let (addr, admin) = (gw.public_addr, gw.admin_addr);
    let alice = token_for(addr, "phone", "alice").await;
    let bob = token_for(addr, "phone", "bob").await;
    assert_eq!(
        order(addr, "phone", "alice", &alice).await.status,
        StatusCode::CREATED
    );
    let a = order(addr, "phone", "bob", &bob).await;
    assert_refused(&a, StatusCode::GONE, "sold_out");
    let text = scrape(admin).await;
    for (series, want) in [("admitted", 1.0), ("sold_out", 1.0)] {
        let series =
            format!("flashgate_admission_decisions_total{{outcome=\"{series}\",sku=\"phone\"}}");
        assert_eq!(value(&text, &series), Some(want), "{series}");
    }
}

/// Adversarial review: a resubmitted token whose ticket was forgotten was answered from the
/// store with its order (201), yet counted as a sold-out refusal.
#[tokio::test]
async fn a_replayed_order_is_not_counted_as_a_refusal() {
    let up = Upstream::start().await;
    // Tickets are forgotten a nanosecond after they finish: the resubmission is answered
    // from the store.
    let gw = sale_gateway(
        &up,
        "[queue]\nticket_ttl = \"1ns\"\n[[sale]]\nsku = \"phone\"\nstock = 1\n",
    )
    .await;
    let (addr, admin) = (gw.public_addr, gw.admin_addr);
    let alice = token_for(addr, "phone", "alice").await;
    let first = order(addr, "phone", "alice", &alice).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = order(addr, "phone", "alice", &alice).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.json()["order_id"], first.json()["order_id"]);
    let text = scrape(admin).await;
    for (outcome, want) in [("admitted", 1.0), ("sold_out", 0.0), ("invalid_token", 0.0)] {
        let series =
            format!("flashgate_admission_decisions_total{{outcome=\"{outcome}\",sku=\"phone\"}}");
        assert_eq!(value(&text, &series), Some(want), "{series}");
    }
}

/// Adversarial review: a refused order whose replay read was cut short by the rate limit
/// (or a store that did not answer) was answered but counted in no admission outcome.
#[tokio::test]
async fn every_decided_order_is_counted_once() {
    let up = Upstream::start().await;
    let gw = sale_gateway(
        &up,
        "[limits]\nper_user_rate = 1\nper_user_burst = 2\n[[sale]]\nsku = \"phone\"\nstock = 0\n",
    )
    .await;
    let (addr, admin) = (gw.public_addr, gw.admin_addr);
    // The token route refuses a sold-out sale; the gateway's own signer makes one.
    let (sku, user) = (
        flashgate::types::Sku::new("phone"),
        flashgate::types::UserId::parse("hammer").expect("user"),
    );
    let expires = flashgate::types::unix_millis(std::time::SystemTime::now()) + 60_000;
    let mut answered = 0;
    // A new token each time: a token answered once is answered again from what this
    // instance remembers, a replay counted in no admission outcome.
    for _ in 0..6 {
        let token = gw.context().tokens.issue(&sku, &user, expires).to_string();
        let a = order(addr, "phone", "hammer", &token).await;
        assert!(
            matches!(a.status.as_u16(), 410 | 429),
            "{} {:?}",
            a.status,
            a.json()
        );
        answered += 1;
    }
    let text = scrape(admin).await;
    let counted: f64 = ["sold_out", "rate_limited"]
        .iter()
        .filter_map(|o| {
            value(
                &text,
                &format!("flashgate_admission_decisions_total{{outcome=\"{o}\",sku=\"phone\"}}"),
            )
        })
        .sum();
    assert_eq!(counted, f64::from(answered));
}
