//! Graceful shutdown: stop accepting, finish what is in flight, then exit.

use crate::common::*;
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

/// Behind a balancer: SIGTERM turns readiness 503 at once, but the public listener goes on
/// accepting (and answering) new connections for the whole grace, so that requests the
/// balancer still sends before it notices are served, not refused. A second SIGTERM ends
/// the grace; the gateway then closes and exits 0. SIGHUP, meanwhile, stops nothing.
#[tokio::test]
async fn sigterm_keeps_serving_through_the_grace_with_readiness_503() {
    let up = Upstream::start().await;
    // An hour: nothing in this test can race the grace's end.
    let (dir, cfg) = config_file("grace", &config_text(&up.url(), "shutdown_grace = \"1h\""));
    let gw = spawn_logged(&cfg);
    assert_eq!(send(gw.admin, get("/readyz")).await.status, StatusCode::OK);

    gw.signal(libc::SIGHUP);
    until("SIGHUP to reload the file", || async {
        gw.logged("configuration reloaded")
    })
    .await;
    assert_eq!(
        send(gw.public, get("/after-hup")).await.status,
        StatusCode::OK
    );

    gw.signal(libc::SIGTERM);
    until("readiness to turn 503", || async {
        send(gw.admin, get("/readyz")).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let a = send(gw.admin, get("/readyz")).await;
    assert_eq!(a.json()["error"], "not_ready", "{:?}", a.json());
    // A client that keeps sending, each request on a new connection: all served.
    for i in 0..20 {
        let a = send(gw.public, get(&format!("/during-grace/{i}"))).await;
        assert_eq!(a.status, StatusCode::OK, "request {i} during the grace");
    }
    assert_eq!(
        send(gw.admin, get("/healthz")).await.status,
        StatusCode::OK,
        "alive while stopping"
    );

    gw.signal(libc::SIGTERM);
    let addr = gw.public;
    guarded("listener to close after the second signal", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The line is written as the listeners close; the test's log reader may not have read it
    // yet when the port stops answering.
    until("the close to be logged", || async {
        gw.logged("closing the listeners")
    })
    .await;
    let code = gw.exit().await;
    assert!(code.success(), "exit status {code:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let up = Upstream::start().await;
    // A short grace that ends by itself: no second signal in this test.
    let (dir, cfg) = config_file(
        "sigterm",
        &config_text(&up.url(), "shutdown_grace = \"50ms\""),
    );
    let gw = spawn_logged(&cfg);
    let addr = gw.public;
    let in_flight = tokio::spawn(async move { send(addr, get("/hold")).await });
    assert_eq!(up.arrival().await, "/hold");
    gw.signal(libc::SIGTERM);
    guarded("listener to close", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;

    up.release();
    let a = in_flight.await.expect("client task");
    assert_eq!(a.status, StatusCode::OK);
    let code = gw.exit().await;
    assert!(code.success(), "exit status {code:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
