//! `flashgate demo` runs a whole sale: backend, gateway, store, one sale.

use std::process::Command;

use crate::common::*;
use http::StatusCode;

#[tokio::test]
async fn demo_sells_through_its_own_backend_and_stops_on_sigterm() {
    let mut demo = spawn_demo(&["--stock", "3", "--drain-rate", "1000"]);
    let (gw, backend) = (demo.gateway, demo.backend);

    let status = send(gw, get("/sale/demo-phone")).await;
    assert_eq!(status.json()["remaining"], 3);
    for user in ["alice", "bob", "carol"] {
        let t = token_for(gw, "demo-phone", user).await;
        let a = order(gw, "demo-phone", user, &t).await;
        assert_eq!(a.status, StatusCode::CREATED, "{user}");
    }
    // Sold out: the next buyer is refused at the edge, before any token is issued.
    let a = send(
        gw,
        request(
            "POST",
            "/sale/demo-phone/token",
            &[("x-user-id", "dave")],
            "",
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::GONE);
    let stats = guarded("the backend to record the orders", async {
        loop {
            let s = send(backend, get("/orders/stats")).await.json();
            if s["orders"] == 3 {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(stats["duplicates"], 0);
    assert_eq!(stats["by_sku"]["demo-phone"], 3);
    assert_eq!(
        send(gw, get("/")).await.status,
        StatusCode::OK,
        "passthrough to the backend"
    );

    demo.signal(libc::SIGTERM);
    let code = demo.exit().await;
    let rest: Vec<String> = demo.rest.by_ref().map_while(Result::ok).collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("the backend recorded 3 orders")),
        "{rest:?}"
    );
    assert!(code.success());
}

#[test]
fn demo_flags_are_validated_like_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_flashgate"))
        .args(["demo", "--capacity", "0", "--backend-listen", "127.0.0.1:0"])
        .output()
        .expect("run demo");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`queue.capacity`"));
}
