//! The store contract's cancels: an order the backend gave up after delivery hands its
//! units and its buyer's allowance back once, and never a unit the stock was reloaded over.

use super::*;

use flashgate::store::{Cancellable, Cancellation};

/// A cancel's figures, when it cancelled: (now, restocked, remaining).
fn cancelled(c: Cancellation) -> (bool, bool, u64) {
    match c {
        Cancellation::Cancelled {
            now,
            restocked,
            remaining,
            ..
        } => (now, restocked, remaining),
        other => panic!("expected a cancel, got {other:?}"),
    }
}

async fn cancel(store: &dyn Store, sku: &Sku, id: &OrderId) -> Cancellation {
    store
        .cancel(sku, id, Cancellable::Delivered)
        .await
        .expect("store answers")
}

/// A confirmed order cancelled: its unit and the buyer's allowance back, once; a cancel
/// asked again answers the same and changes nothing; delivery steps cannot undo it.
pub async fn a_cancel_hands_back_once(store: Arc<dyn Store>) {
    let sku = Sku::new("cancel");
    store.init_stock(&sku, 2, None).await.expect("init");
    let alice = user("alice");
    let t = token_for(&sku, &alice);
    let id = reserved(&*store, &req(&sku, &alice, t, 1)).await;
    // Still in the outbox: the backend may not have it yet.
    assert_eq!(cancel(&*store, &sku, &id).await, Cancellation::NotDelivered);
    assert_eq!(
        store.confirm(&sku, &id, "").await.expect("confirm"),
        Confirmation::Confirmed
    );
    match cancel(&*store, &sku, &id).await {
        Cancellation::Cancelled {
            now: true,
            restocked: true,
            remaining: 2,
            user_id,
            quantity: 1,
        } => assert_eq!(user_id, "alice"),
        other => panic!("expected the first cancel, got {other:?}"),
    }
    assert_eq!(
        cancelled(cancel(&*store, &sku, &id).await),
        (false, true, 2)
    );
    assert_eq!(
        store.order_state(&sku, &id).await.expect("state"),
        Some(OrderState::Cancelled)
    );
    // The deliverer's steps leave a cancelled order as it is.
    assert_eq!(
        store.compensate(&sku, &id, "").await.expect("compensate"),
        Compensation::Confirmed
    );
    assert_eq!(
        store.confirm(&sku, &id, "").await.expect("confirm"),
        Confirmation::AlreadyConfirmed
    );
    assert_eq!(store.stock(&sku).await.expect("stock").units, 2);
    // The token's replay answers the order's state now.
    let reply = spent(
        store
            .replay(&sku, &t, &alice, Unspent::Leave)
            .await
            .expect("replay"),
    )
    .expect("spent");
    assert_eq!(reply.state, Some(OrderState::Cancelled));
    // The allowance is back (limit 1): alice buys again with a new token.
    let again = reserved(&*store, &req(&sku, &alice, token_for(&sku, &alice), 1)).await;
    assert_ne!(again, id);
    assert_eq!(store.stock(&sku).await.expect("stock").units, 1);
}

/// Cancels racing for one order: exactly one cancels it, and its unit comes back once.
pub async fn concurrent_cancels_restock_once(store: Arc<dyn Store>) {
    let sku = Sku::new("cancel-race");
    store.init_stock(&sku, 1, None).await.expect("init");
    let bob = user("bob");
    let id = reserved(&*store, &req(&sku, &bob, token_for(&sku, &bob), 1)).await;
    store.confirm(&sku, &id, "").await.expect("confirm");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (store, sku) = (store.clone(), sku.clone());
            tokio::spawn(async move { cancel(&*store, &sku, &id).await })
        })
        .collect();
    let mut first = 0;
    for t in tasks {
        let (now, restocked, _) = cancelled(t.await.expect("task"));
        assert!(restocked);
        first += usize::from(now);
    }
    assert_eq!(first, 1, "exactly one cancel takes effect");
    assert_eq!(store.stock(&sku).await.expect("stock").units, 1);
}

/// Stock loaded afresh after the order was reserved: the cancel gives the allowance back
/// but no unit (the operator's figure says what is for sale).
pub async fn a_cancel_after_a_stock_load_keeps_the_new_figure(store: Arc<dyn Store>) {
    let sku = Sku::new("cancel-epoch");
    store.init_stock(&sku, 1, None).await.expect("init");
    let carol = user("carol");
    let id = reserved(&*store, &req(&sku, &carol, token_for(&sku, &carol), 1)).await;
    store.confirm(&sku, &id, "").await.expect("confirm");
    store.set_stock(&sku, 5).await.expect("set stock");
    assert_eq!(
        cancelled(cancel(&*store, &sku, &id).await),
        (true, false, 5)
    );
    assert_eq!(
        cancelled(cancel(&*store, &sku, &id).await),
        (false, false, 5)
    );
    assert_eq!(store.stock(&sku).await.expect("stock").units, 5);
    reserved(&*store, &req(&sku, &carol, token_for(&sku, &carol), 1)).await;
}

/// Unknown and compensated orders are refused, and change nothing.
pub async fn a_cancel_of_an_unknown_or_compensated_order_is_refused(store: Arc<dyn Store>) {
    let sku = Sku::new("cancel-refused");
    store.init_stock(&sku, 1, None).await.expect("init");
    let dan = user("dan");
    let id = reserved(&*store, &req(&sku, &dan, token_for(&sku, &dan), 1)).await;
    store.compensate(&sku, &id, "").await.expect("compensate");
    assert_eq!(cancel(&*store, &sku, &id).await, Cancellation::Compensated);
    assert_eq!(
        cancel(&*store, &sku, &OrderId::random()).await,
        Cancellation::Unknown
    );
    assert_eq!(store.stock(&sku).await.expect("stock").units, 1);
}

/// Where the backend consumes the outbox itself (stream mode), a reserved order may be
/// cancelled: it leaves the outbox, and its unit comes back once.
pub async fn a_consumed_order_is_cancelled_out_of_the_outbox(store: Arc<dyn Store>) {
    let sku = Sku::new("cancel-stream");
    store.init_stock(&sku, 1, None).await.expect("init");
    let erin = user("erin");
    let id = reserved(&*store, &req(&sku, &erin, token_for(&sku, &erin), 1)).await;
    for now in [true, false] {
        let c = store
            .cancel(&sku, &id, Cancellable::Reserved)
            .await
            .expect("cancel");
        assert_eq!(cancelled(c), (now, true, 1));
    }
    assert!(store.outbox(&sku, 10).await.expect("outbox").is_empty());
    assert_eq!(store.stock(&sku).await.expect("stock").units, 1);
}
