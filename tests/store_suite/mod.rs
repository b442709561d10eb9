//! The store contract, written once and run against every store implementation.
//! Each check takes a fresh store and uses its own sku.

#![allow(dead_code)] // each test binary runs the checks for its store

/// Defines one test per check of the contract. `$make` is a closure returning
/// `(guard, Arc<dyn Store>)`; the guard (e.g. a redis-server) lives as long as the test.
macro_rules! store_suite {
    ($make:expr) => {
        store_suite!(@each $make;
            stock_init_and_set,
            token_buys_once_and_replays,
            foreign_tokens_are_invalid,
            expired_tokens_are_invalid,
            per_user_limit_holds,
            no_oversell_when_sold_out,
            outbox_holds_orders_until_confirmed,
            compensation_restores_once,
            concurrent_crowd_never_oversells
        );
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, store) = ($make)();
                store_suite::$name(store).await;
            }
        )*
    };
}

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use flashgate::store::{Compensation, OrderState, Reservation, ReserveRequest, Store};
use flashgate::types::{OrderId, Sku, Token, UserId};

const TTL: Duration = Duration::from_secs(300);

fn user(s: &str) -> UserId {
    UserId::parse(s).expect("valid user id")
}

fn req(sku: &Sku, u: &UserId, token: Token, limit: u32) -> ReserveRequest {
    ReserveRequest {
        sku: sku.clone(),
        user: u.clone(),
        token,
        quantity: 1,
        per_user_limit: limit,
    }
}

async fn reserved(store: &dyn Store, r: &ReserveRequest) -> OrderId {
    match store.reserve(r).await.expect("store answers").outcome {
        Reservation::Reserved { order_id, .. } => order_id,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

/// Stock is loaded once; a second init keeps what is there; set replaces it.
pub async fn stock_init_and_set(store: Arc<dyn Store>) {
    let sku = Sku::new("stock-init");
    assert_eq!(store.init_stock(&sku, 10).await.expect("init"), 10);
    assert_eq!(store.init_stock(&sku, 99).await.expect("init"), 10);
    store.set_stock(&sku, 7).await.expect("set");
    assert_eq!(store.stock(&sku).await.expect("stock"), 7);
    assert!(store.stock(&Sku::new("never-loaded")).await.is_err());
}

/// A token buys once; the same token again replays the first outcome and order id.
pub async fn token_buys_once_and_replays(store: Arc<dyn Store>) {
    let sku = Sku::new("replay");
    store.init_stock(&sku, 5).await.expect("init");
    let alice = user("alice");
    let token = store.issue_token(&sku, &alice, TTL).await.expect("token");
    let r = req(&sku, &alice, token, 1);
    let first = store.reserve(&r).await.expect("reserve");
    assert!(!first.replayed);
    let Reservation::Reserved {
        order_id,
        remaining,
    } = first.outcome.clone()
    else {
        panic!("not reserved: {first:?}");
    };
    assert_eq!(remaining, 4);
    let again = store.reserve(&r).await.expect("reserve");
    assert!(again.replayed);
    assert_eq!(again.outcome, first.outcome, "same outcome, same order id");
    assert_eq!(
        store.stock(&sku).await.expect("stock"),
        4,
        "replay took no stock"
    );
    assert_eq!(
        store.order_state(&sku, &order_id).await.expect("state"),
        Some(OrderState::Reserved)
    );
}

/// Unknown tokens, other users' and other sales' tokens are invalid and spend nothing.
pub async fn foreign_tokens_are_invalid(store: Arc<dyn Store>) {
    let sku = Sku::new("foreign");
    let other_sku = Sku::new("foreign-other");
    store.init_stock(&sku, 5).await.expect("init");
    store.init_stock(&other_sku, 5).await.expect("init");
    let (alice, bob) = (user("alice"), user("bob"));
    let token = store.issue_token(&sku, &alice, TTL).await.expect("token");
    for r in [
        req(&sku, &alice, Token::random(), 1),
        req(&sku, &bob, token, 1),
        req(&other_sku, &alice, token, 1),
    ] {
        let reply = store.reserve(&r).await.expect("reserve");
        assert_eq!(reply.outcome, Reservation::InvalidToken, "{r:?}");
    }
    // Alice's token is still good after the others tried it.
    reserved(&*store, &req(&sku, &alice, token, 1)).await;
    assert_eq!(store.stock(&sku).await.expect("stock"), 4);
    assert_eq!(store.stock(&other_sku).await.expect("stock"), 5);
}

/// An expired token is invalid.
pub async fn expired_tokens_are_invalid(store: Arc<dyn Store>) {
    let sku = Sku::new("expiry");
    store.init_stock(&sku, 5).await.expect("init");
    let alice = user("alice");
    let token = store
        .issue_token(&sku, &alice, Duration::ZERO)
        .await
        .expect("token");
    let reply = store
        .reserve(&req(&sku, &alice, token, 1))
        .await
        .expect("reserve");
    assert_eq!(reply.outcome, Reservation::InvalidToken);
}

/// A user never holds more than the limit, whatever tokens they bring.
pub async fn per_user_limit_holds(store: Arc<dyn Store>) {
    let sku = Sku::new("limit");
    store.init_stock(&sku, 100).await.expect("init");
    let alice = user("alice");
    for _ in 0..2 {
        let t = store.issue_token(&sku, &alice, TTL).await.expect("token");
        reserved(&*store, &req(&sku, &alice, t, 2)).await;
    }
    let t = store.issue_token(&sku, &alice, TTL).await.expect("token");
    let reply = store
        .reserve(&req(&sku, &alice, t, 2))
        .await
        .expect("reserve");
    assert_eq!(reply.outcome, Reservation::LimitReached);
    let replay = store
        .reserve(&req(&sku, &alice, t, 2))
        .await
        .expect("reserve");
    assert_eq!(replay.outcome, Reservation::LimitReached);
    assert!(replay.replayed);
    assert_eq!(store.stock(&sku).await.expect("stock"), 98);
}

/// Stock never goes below zero; once gone, reservations answer sold out.
pub async fn no_oversell_when_sold_out(store: Arc<dyn Store>) {
    let sku = Sku::new("soldout");
    store.init_stock(&sku, 1).await.expect("init");
    let (a, b) = (user("a"), user("b"));
    let ta = store.issue_token(&sku, &a, TTL).await.expect("token");
    let tb = store.issue_token(&sku, &b, TTL).await.expect("token");
    reserved(&*store, &req(&sku, &a, ta, 1)).await;
    let reply = store.reserve(&req(&sku, &b, tb, 1)).await.expect("reserve");
    assert_eq!(reply.outcome, Reservation::SoldOut { remaining: 0 });
    assert_eq!(store.stock(&sku).await.expect("stock"), 0);
}

/// Reserved orders wait in the outbox, oldest first, until confirmed.
pub async fn outbox_holds_orders_until_confirmed(store: Arc<dyn Store>) {
    let sku = Sku::new("outbox");
    store.init_stock(&sku, 10).await.expect("init");
    let mut ids = Vec::new();
    for i in 0..3 {
        let u = user(&format!("u{i}"));
        let t = store.issue_token(&sku, &u, TTL).await.expect("token");
        ids.push(reserved(&*store, &req(&sku, &u, t, 1)).await);
    }
    let out: Vec<OrderId> = store
        .outbox(&sku, 10)
        .await
        .expect("outbox")
        .into_iter()
        .map(|o| o.order_id)
        .collect();
    assert_eq!(out, ids, "oldest first");
    assert_eq!(store.outbox(&sku, 2).await.expect("outbox").len(), 2);
    assert!(store.confirm(&sku, &ids[1]).await.expect("confirm"));
    assert!(!store.confirm(&sku, &ids[1]).await.expect("confirm twice"));
    let out = store.outbox(&sku, 10).await.expect("outbox");
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.order_id != ids[1]));
    assert_eq!(
        store.order_state(&sku, &ids[1]).await.expect("state"),
        Some(OrderState::Confirmed)
    );
    let o = &out[0];
    assert_eq!(
        (o.sku.as_str(), o.user_id.as_str(), o.quantity),
        ("outbox", "u0", 1)
    );
}

/// Compensation restores stock and the user's count, once, and never undoes a confirmed order.
pub async fn compensation_restores_once(store: Arc<dyn Store>) {
    let sku = Sku::new("compensate");
    store.init_stock(&sku, 1).await.expect("init");
    let alice = user("alice");
    let t = store.issue_token(&sku, &alice, TTL).await.expect("token");
    let id = reserved(&*store, &req(&sku, &alice, t, 1)).await;
    assert_eq!(
        store.compensate(&sku, &id).await.expect("compensate"),
        Compensation::Restored { remaining: 1 }
    );
    assert_eq!(
        store.compensate(&sku, &id).await.expect("compensate"),
        Compensation::AlreadyFailed
    );
    assert_eq!(store.stock(&sku).await.expect("stock"), 1);
    assert!(store.outbox(&sku, 10).await.expect("outbox").is_empty());
    assert_eq!(
        store.order_state(&sku, &id).await.expect("state"),
        Some(OrderState::Failed)
    );
    // The user may buy again (limit 1) with a new token.
    let t2 = store.issue_token(&sku, &alice, TTL).await.expect("token");
    let id2 = reserved(&*store, &req(&sku, &alice, t2, 1)).await;
    assert!(store.confirm(&sku, &id2).await.expect("confirm"));
    assert_eq!(
        store.compensate(&sku, &id2).await.expect("compensate"),
        Compensation::Confirmed
    );
    assert_eq!(store.stock(&sku).await.expect("stock"), 0);
    assert_eq!(
        store
            .compensate(&sku, &OrderId::random())
            .await
            .expect("compensate"),
        Compensation::Unknown
    );
}

/// Many concurrent buyers, little stock: exactly the stock is reserved, nobody above the limit.
pub async fn concurrent_crowd_never_oversells(store: Arc<dyn Store>) {
    let sku = Sku::new("crowd");
    const STOCK: u64 = 100;
    const USERS: usize = 2_000;
    store.init_stock(&sku, STOCK).await.expect("init");
    let mut tasks = Vec::new();
    for i in 0..USERS {
        let store = store.clone();
        let sku = sku.clone();
        tasks.push(tokio::spawn(async move {
            // Every user tries twice with two tokens: the limit must stop the second.
            let u = user(&format!("user{}", i % (USERS / 2)));
            let t = store.issue_token(&sku, &u, TTL).await.expect("token");
            let r = req(&sku, &u, t, 1);
            (u, store.reserve(&r).await.expect("reserve").outcome)
        }));
    }
    let mut per_user: HashMap<UserId, u32> = HashMap::new();
    let mut ids = HashSet::new();
    for t in tasks {
        let (u, outcome) = t.await.expect("task");
        if let Reservation::Reserved { order_id, .. } = outcome {
            *per_user.entry(u).or_default() += 1;
            assert!(ids.insert(order_id), "order id issued twice");
        }
    }
    assert_eq!(ids.len() as u64, STOCK, "exactly the stock was reserved");
    assert!(
        per_user.values().all(|&n| n <= 1),
        "a user went over the limit"
    );
    assert_eq!(store.stock(&sku).await.expect("stock"), 0);
    assert_eq!(
        store.outbox(&sku, 1000).await.expect("outbox").len() as u64,
        STOCK
    );
}
