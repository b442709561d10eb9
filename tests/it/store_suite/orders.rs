//! The store contract: tokens spent once, replays, the per-user limit, the outbox and
//! compensation.

use super::*;

/// A replay, by reserve or by read, answers where the order is now.
pub async fn replays_answer_the_orders_state_now(store: Arc<dyn Store>) {
    let sku = Sku::new("replay-state");
    store.init_stock(&sku, 5, None).await.expect("init");
    let (alice, bob) = (user("alice"), user("bob"));
    let t = token_for(&sku, &alice);
    let unspent = token_for(&sku, &alice);
    let first = store
        .reserve(&req(&sku, &alice, t, 1))
        .await
        .expect("reserve");
    assert_eq!(first.state, Some(OrderState::Reserved));
    let Reservation::Reserved { order_id, .. } = first.outcome else {
        panic!("not reserved: {first:?}");
    };
    let read = spent(
        store
            .replay(&sku, &t, &alice, Unspent::Leave)
            .await
            .expect("replay"),
    );
    assert_eq!(
        read.map(|r| (r.outcome, r.state)),
        Some((first.outcome.clone(), Some(OrderState::Reserved)))
    );
    assert_eq!(
        store
            .replay(&sku, &t, &bob, Unspent::SpendAsSoldOut)
            .await
            .expect("replay"),
        Replay::Unknown,
        "not bob's"
    );
    assert_eq!(
        store
            .replay(&sku, &unspent, &alice, Unspent::Leave)
            .await
            .expect("replay"),
        Replay::Unknown,
        "not spent"
    );
    // Spent as sold out: a request for it still on its way replays that, reserves nothing.
    let burned = spent(
        store
            .replay(&sku, &unspent, &alice, Unspent::SpendAsSoldOut)
            .await
            .expect("replay"),
    );
    assert!(
        matches!(burned, Some(ref r) if matches!(r.outcome, Reservation::SoldOut { remaining: 4 })),
        "{burned:?}"
    );
    let late = store
        .reserve(&req(&sku, &alice, unspent, 2))
        .await
        .expect("reserve");
    assert_eq!(
        (late.replayed, late.outcome),
        (true, Reservation::SoldOut { remaining: 4 })
    );
    assert_eq!(store.stock(&sku).await.expect("stock").units, 4);
    store
        .compensate(&sku, &order_id, "")
        .await
        .expect("compensate");
    let again = store
        .reserve(&req(&sku, &alice, t, 1))
        .await
        .expect("reserve");
    assert_eq!(
        (again.replayed, again.outcome, again.state),
        (true, first.outcome.clone(), Some(OrderState::Failed))
    );
    let read = spent(
        store
            .replay(&sku, &t, &alice, Unspent::Leave)
            .await
            .expect("replay"),
    );
    assert_eq!(read.and_then(|r| r.state), Some(OrderState::Failed));
}

/// A confirm that finds the order compensated says so: a conflict, not a success.
pub async fn a_confirm_after_compensation_is_a_conflict(store: Arc<dyn Store>) {
    let sku = Sku::new("conflict");
    store.init_stock(&sku, 2, None).await.expect("init");
    let alice = user("alice");
    let t = token_for(&sku, &alice);
    let id = reserved(&*store, &req(&sku, &alice, t, 1)).await;
    store.compensate(&sku, &id, "").await.expect("compensate");
    assert_eq!(
        store.confirm(&sku, &id, "").await.expect("confirm"),
        Confirmation::Compensated
    );
    assert_eq!(
        store
            .confirm(&sku, &OrderId::random(), "")
            .await
            .expect("confirm"),
        Confirmation::Unknown
    );
}

/// A token buys once; the same token again replays the first outcome and order id.
pub async fn token_buys_once_and_replays(store: Arc<dyn Store>) {
    let sku = Sku::new("replay");
    store.init_stock(&sku, 5, None).await.expect("init");
    let alice = user("alice");
    let token = token_for(&sku, &alice);
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
        store.stock(&sku).await.expect("stock").units,
        4,
        "replay took no stock"
    );
    assert_eq!(
        store.order_state(&sku, &order_id).await.expect("state"),
        Some(OrderState::Reserved)
    );
}

/// A token spent by one user is invalid for another and spends nothing. (Who a token was
/// issued to, and for which sale, the edge checks by its signature.)
pub async fn foreign_tokens_are_invalid(store: Arc<dyn Store>) {
    let sku = Sku::new("foreign");
    store.init_stock(&sku, 5, None).await.expect("init");
    let (alice, bob) = (user("alice"), user("bob"));
    let token = token_for(&sku, &alice);
    reserved(&*store, &req(&sku, &alice, token, 1)).await;
    let reply = store
        .reserve(&req(&sku, &bob, token, 1))
        .await
        .expect("reserve");
    assert_eq!(reply.outcome, Reservation::InvalidToken);
    assert_eq!(store.stock(&sku).await.expect("stock").units, 4);
    assert_eq!(
        store
            .replay(&sku, &token, &bob, Unspent::SpendAsSoldOut)
            .await
            .expect("replay"),
        Replay::Unknown
    );
    // Alice still gets her answer.
    assert!(
        store
            .reserve(&req(&sku, &alice, token, 1))
            .await
            .expect("reserve")
            .replayed
    );
}

/// An expired token is invalid and spends nothing; a spent one is remembered past the
/// replay TTL while it is valid, so it can never be spent twice.
pub async fn expired_tokens_are_invalid(store: Arc<dyn Store>) {
    let sku = Sku::new("expiry");
    store.init_stock(&sku, 5, None).await.expect("init");
    let alice = user("alice");
    let reply = store
        .reserve(&req(&sku, &alice, token_expiring(&sku, &alice, -1000), 1))
        .await
        .expect("reserve");
    assert_eq!(reply.outcome, Reservation::InvalidToken);
    assert_eq!(store.stock(&sku).await.expect("stock").units, 5);
}

/// A user never holds more than the limit, whatever tokens they bring.
pub async fn per_user_limit_holds(store: Arc<dyn Store>) {
    let sku = Sku::new("limit");
    store.init_stock(&sku, 100, None).await.expect("init");
    let alice = user("alice");
    for _ in 0..2 {
        let t = token_for(&sku, &alice);
        reserved(&*store, &req(&sku, &alice, t, 2)).await;
    }
    let t = token_for(&sku, &alice);
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
    assert_eq!(store.stock(&sku).await.expect("stock").units, 98);
}

/// Stock never goes below zero; once gone, reservations answer sold out.
pub async fn no_oversell_when_sold_out(store: Arc<dyn Store>) {
    let sku = Sku::new("soldout");
    store.init_stock(&sku, 1, None).await.expect("init");
    let (a, b) = (user("a"), user("b"));
    let ta = token_for(&sku, &a);
    let tb = token_for(&sku, &b);
    reserved(&*store, &req(&sku, &a, ta, 1)).await;
    let reply = store.reserve(&req(&sku, &b, tb, 1)).await.expect("reserve");
    assert_eq!(reply.outcome, Reservation::SoldOut { remaining: 0 });
    assert_eq!(store.stock(&sku).await.expect("stock").units, 0);
}

/// Reserved orders wait in the outbox, oldest first, until confirmed.
pub async fn outbox_holds_orders_until_confirmed(store: Arc<dyn Store>) {
    let sku = Sku::new("outbox");
    store.init_stock(&sku, 10, None).await.expect("init");
    let mut ids = Vec::new();
    for i in 0..3 {
        let u = user(&format!("u{i}"));
        let t = token_for(&sku, &u);
        ids.push(reserved(&*store, &req(&sku, &u, t, 1)).await);
    }
    let all = store.outbox(&sku, 10).await.expect("outbox");
    let out: Vec<OrderId> = all.iter().map(|o| o.order_id).collect();
    assert_eq!(out, ids, "oldest first");
    // How far delivery runs behind: three orders, the oldest the first reserved.
    let depth = store.outbox_depth(&sku).await.expect("depth");
    assert_eq!(depth.orders, 3);
    assert_eq!(depth.oldest_reserved_at, Some(all[0].reserved_at));
    assert_eq!(store.outbox(&sku, 2).await.expect("outbox").len(), 2);
    assert_eq!(
        store.confirm(&sku, &ids[1], "").await.expect("confirm"),
        Confirmation::Confirmed
    );
    assert_eq!(
        store
            .confirm(&sku, &ids[1], "")
            .await
            .expect("confirm twice"),
        Confirmation::AlreadyConfirmed
    );
    let out = store.outbox(&sku, 10).await.expect("outbox");
    assert_eq!(out.len(), 2);
    assert_eq!(store.outbox_depth(&sku).await.expect("depth").orders, 2);
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
    store.init_stock(&sku, 1, None).await.expect("init");
    let alice = user("alice");
    let t = token_for(&sku, &alice);
    let id = reserved(&*store, &req(&sku, &alice, t, 1)).await;
    assert_eq!(
        store.compensate(&sku, &id, "").await.expect("compensate"),
        Compensation::Restored { remaining: 1 }
    );
    assert_eq!(
        store.compensate(&sku, &id, "").await.expect("compensate"),
        Compensation::AlreadyFailed
    );
    assert_eq!(store.stock(&sku).await.expect("stock").units, 1);
    assert!(store.outbox(&sku, 10).await.expect("outbox").is_empty());
    assert_eq!(
        store.order_state(&sku, &id).await.expect("state"),
        Some(OrderState::Failed)
    );
    // The user may buy again (limit 1) with a new token.
    let t2 = token_for(&sku, &alice);
    let id2 = reserved(&*store, &req(&sku, &alice, t2, 1)).await;
    assert_eq!(
        store.confirm(&sku, &id2, "").await.expect("confirm"),
        Confirmation::Confirmed
    );
    assert_eq!(
        store.compensate(&sku, &id2, "").await.expect("compensate"),
        Compensation::Confirmed
    );
    assert_eq!(store.stock(&sku).await.expect("stock").units, 0);
    assert_eq!(
        store
            .compensate(&sku, &OrderId::random(), "")
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
    store.init_stock(&sku, STOCK, None).await.expect("init");
    let mut tasks = Vec::new();
    for i in 0..USERS {
        let store = store.clone();
        let sku = sku.clone();
        tasks.push(tokio::spawn(async move {
            // Every user tries twice with two tokens: the limit must stop the second.
            let u = user(&format!("user{}", i % (USERS / 2)));
            let t = token_for(&sku, &u);
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
    assert_eq!(store.stock(&sku).await.expect("stock").units, 0);
    assert_eq!(
        store.outbox(&sku, 1000).await.expect("outbox").len() as u64,
        STOCK
    );
}
