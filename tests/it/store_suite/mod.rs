//! The store contract, written once and run against every store implementation.
//! Each check takes a fresh store and uses its own sku.

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
            concurrent_crowd_never_oversells,
            a_lost_sale_is_never_loaded_again,
            largest_stock_figures_are_exact,
            add_stock_is_atomic_and_bounded,
            replays_answer_the_orders_state_now,
            a_confirm_after_compensation_is_a_conflict,
            members_come_and_go,
            the_drain_rate_is_one_budget,
            a_token_is_held_by_one_queued_request,
            instances_share_their_pending_counts,
            operator_settings_are_kept_with_the_sale
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

use flashgate::store::{
    Compensation, Confirmation, Member, OrderState, Reservation, ReserveRequest, StockLoad, Store,
    StoreError, TicketRecord, TokenHold, Unspent,
};
use flashgate::token::TokenSigner;
use flashgate::types::{unix_millis, Epoch, OrderId, Sku, TicketId, Token, UserId, MAX_STOCK};

const TTL: Duration = Duration::from_secs(300);

/// A token for `u` in `sku` expiring `ttl_ms` from now (negative: already expired), signed
/// as the gateway signs them (the store never sees the signature checked).
pub fn token_expiring(sku: &Sku, u: &UserId, ttl_ms: i64) -> Token {
    let now = unix_millis(std::time::SystemTime::now()) as i64;
    TokenSigner::new("store-suite-secret").issue(sku, u, (now + ttl_ms) as u64)
}

/// A token for `u` in `sku`, good for five minutes.
pub fn token_for(sku: &Sku, u: &UserId) -> Token {
    token_expiring(sku, u, TTL.as_millis() as i64)
}

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
    let StockLoad::Created { units: 10, epoch } =
        store.init_stock(&sku, 10, None).await.expect("init")
    else {
        panic!("a first load creates the stock");
    };
    assert!(!epoch.by_operator());
    assert_eq!(
        store.init_stock(&sku, 99, None).await.expect("init"),
        StockLoad::Held {
            units: 10,
            epoch: epoch.clone()
        },
        "the store's figure wins"
    );
    let loaded = store.set_stock(&sku, 7).await.expect("set");
    assert!(loaded.by_operator() && loaded != epoch);
    let now = store.stock(&sku).await.expect("stock");
    assert_eq!((now.units, now.epoch), (7, Some(loaded)));
    assert!(store.stock(&Sku::new("never-loaded")).await.is_err());
}

/// A sale this instance loaded before and the store no longer has is not loaded again.
pub async fn a_lost_sale_is_never_loaded_again(store: Arc<dyn Store>) {
    let sku = Sku::new("lost");
    let remembered = Epoch::initial();
    assert_eq!(
        store
            .init_stock(&sku, 2, Some(&remembered))
            .await
            .expect("init"),
        StockLoad::Lost
    );
    assert!(
        matches!(store.stock(&sku).await, Err(StoreError::UnknownSale(_))),
        "nothing was written"
    );
    // An operator loads it; now it is held, whatever the instance remembered.
    let loaded = store.set_stock(&sku, 1).await.expect("set");
    assert_eq!(
        store
            .init_stock(&sku, 2, Some(&remembered))
            .await
            .expect("init"),
        StockLoad::Held {
            units: 1,
            epoch: loaded
        }
    );
}

/// Stock up to 2^53 - 1 is carried exactly through every step; beyond is refused.
pub async fn largest_stock_figures_are_exact(store: Arc<dyn Store>) {
    let sku = Sku::new("huge");
    store.init_stock(&sku, 1, None).await.expect("init");
    store.set_stock(&sku, MAX_STOCK).await.expect("set");
    let alice = user("alice");
    let t = token_for(&sku, &alice);
    let reply = store
        .reserve(&req(&sku, &alice, t, 1))
        .await
        .expect("reserve");
    assert!(
        matches!(reply.outcome, Reservation::Reserved { remaining, .. } if remaining == MAX_STOCK - 1),
        "{reply:?}"
    );
    let again = store
        .reserve(&req(&sku, &alice, t, 1))
        .await
        .expect("replay");
    assert_eq!(again.outcome, reply.outcome);
    assert_eq!(store.stock(&sku).await.expect("stock").units, MAX_STOCK - 1);
    assert!(matches!(
        store.set_stock(&sku, MAX_STOCK + 1).await,
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.add_stock(&sku, 2).await,
        Err(StoreError::OutOfRange { .. })
    ));
}

/// Units are added and taken away atomically, never below 0 nor above the largest figure.
pub async fn add_stock_is_atomic_and_bounded(store: Arc<dyn Store>) {
    let sku = Sku::new("add");
    assert!(matches!(
        store.add_stock(&sku, 1).await,
        Err(StoreError::UnknownSale(_))
    ));
    store.init_stock(&sku, 3, None).await.expect("init");
    assert_eq!(store.add_stock(&sku, 5).await.expect("add"), 8);
    assert_eq!(store.add_stock(&sku, -6).await.expect("take"), 2);
    assert!(matches!(
        store.add_stock(&sku, -3).await,
        Err(StoreError::OutOfRange { units: 2 })
    ));
    // Concurrent additions and reservations lose nothing.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        let sku = sku.clone();
        set.spawn(async move {
            if i % 2 == 0 {
                store.add_stock(&sku, 1).await.expect("add");
                0
            } else {
                let u = user(&format!("u{i}"));
                let t = token_for(&sku, &u);
                match store
                    .reserve(&req(&sku, &u, t, 1))
                    .await
                    .expect("reserve")
                    .outcome
                {
                    Reservation::Reserved { .. } => 1,
                    _ => 0,
                }
            }
        });
    }
    let mut sold = 0;
    while let Some(n) = set.join_next().await {
        sold += n.expect("task");
    }
    assert_eq!(store.stock(&sku).await.expect("stock").units, 2 + 10 - sold);
}

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
    let read = store
        .replay(&sku, &t, &alice, Unspent::Leave)
        .await
        .expect("replay");
    assert_eq!(
        read.map(|r| (r.outcome, r.state)),
        Some((first.outcome.clone(), Some(OrderState::Reserved)))
    );
    assert_eq!(
        store
            .replay(&sku, &t, &bob, Unspent::SpendAsSoldOut)
            .await
            .expect("replay"),
        None,
        "not bob's"
    );
    assert_eq!(
        store
            .replay(&sku, &unspent, &alice, Unspent::Leave)
            .await
            .expect("replay"),
        None,
        "not spent"
    );
    // Spent as sold out: a request for it still on its way replays that, reserves nothing.
    let burned = store
        .replay(&sku, &unspent, &alice, Unspent::SpendAsSoldOut)
        .await
        .expect("replay");
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
    let read = store
        .replay(&sku, &t, &alice, Unspent::Leave)
        .await
        .expect("replay");
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
    assert!(store
        .replay(&sku, &token, &bob, Unspent::SpendAsSoldOut)
        .await
        .expect("replay")
        .is_none());
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
    let out: Vec<OrderId> = store
        .outbox(&sku, 10)
        .await
        .expect("outbox")
        .into_iter()
        .map(|o| o.order_id)
        .collect();
    assert_eq!(out, ids, "oldest first");
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

/// Instances announce themselves, renew, leave, and are forgotten when they stop renewing.
pub async fn members_come_and_go(store: Arc<dyn Store>) {
    let member = |id: &str, address: &str| Member {
        id: id.to_owned(),
        address: address.to_owned(),
        incarnation: format!("i-{id}"),
    };
    let ids = |m: &[Member]| m.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    let a = member("a", "127.0.0.1:1");
    let live = store.announce(&a, TTL).await.expect("announce");
    assert_eq!(live, vec![a.clone()]);
    let live = store
        .announce(&member("b", "127.0.0.1:2"), TTL)
        .await
        .expect("announce");
    assert_eq!(ids(&live), ["a", "b"]);
    // A renewal may change the address; it is still one member.
    let moved = member("a", "127.0.0.1:3");
    store.announce(&moved, TTL).await.expect("renew");
    let live = store.members().await.expect("members");
    assert_eq!(live, vec![moved, member("b", "127.0.0.1:2")]);
    // Another process announcing a live member's id neither takes over its entry nor,
    // when it stops, removes it.
    let impostor = Member {
        incarnation: "i-other".to_owned(),
        ..member("b", "127.0.0.1:9")
    };
    assert!(matches!(
        store.announce(&impostor, TTL).await,
        Err(StoreError::Rejected(_))
    ));
    store.leave(&impostor).await.expect("leave");
    assert_eq!(
        store.members().await.expect("members")[1].address,
        "127.0.0.1:2"
    );
    store
        .leave(&member("b", "127.0.0.1:2"))
        .await
        .expect("leave");
    assert_eq!(ids(&store.members().await.expect("members")), ["a"]);
    // One that stops renewing is forgotten once its announcement runs out.
    store
        .announce(&member("c", "127.0.0.1:4"), Duration::from_millis(1))
        .await
        .expect("announce");
    let forgotten = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let live = store.members().await.expect("members");
            if ids(&live) == ["a"] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(forgotten.is_ok(), "an expired member is still listed");
}

/// A sale's drain rate is one budget: leases never grant more than two leases' worth
/// plus the rate over the time they span, whoever asks; a rate set in the store wins over
/// the configured one.
pub async fn the_drain_rate_is_one_budget(store: Arc<dyn Store>) {
    let sku = Sku::new("budget");
    let started = std::time::Instant::now();
    let first = store.lease_drain(&sku, 1000, 1000).await.expect("lease");
    assert_eq!(
        (first.granted, first.rate),
        (40, 1000),
        "a fresh budget: 40 ms worth"
    );
    // Two "instances" ask as fast as they can: what they get is bounded by the clock.
    let mut total = u64::from(first.granted);
    for _ in 0..100 {
        for want in [20, 7] {
            total += u64::from(
                store
                    .lease_drain(&sku, want, 1000)
                    .await
                    .expect("lease")
                    .granted,
            );
        }
    }
    let elapsed_ms = started.elapsed().as_millis() as u64;
    assert!(
        total <= 40 + elapsed_ms + 1,
        "{total} permits in {elapsed_ms} ms at 1000/s"
    );
    // An instance asking for less than a lease takes only that.
    let small = Sku::new("budget-small");
    let l = store.lease_drain(&small, 3, 1000).await.expect("lease");
    assert_eq!((l.granted, l.next_in), (3, Duration::ZERO));
    // The operator's rate is every instance's, whatever each has configured.
    let set = Sku::new("budget-set");
    store.set_drain_rate(&set, 50).await.expect("set rate");
    let l = store.lease_drain(&set, 100, 1000).await.expect("lease");
    assert_eq!((l.granted, l.rate), (2, 50));
    assert!(l.next_in > Duration::ZERO && l.next_in <= Duration::from_millis(20));
}

/// A token sent to several instances is queued once: the first request holds it, later
/// ones learn its ticket, and once spent everyone learns its outcome; any instance can
/// tell what became of a ticket that held a token.
pub async fn a_token_is_held_by_one_queued_request(store: Arc<dyn Store>) {
    let sku = Sku::new("hold");
    store.init_stock(&sku, 5, None).await.expect("init");
    let alice = user("alice");
    let token = token_for(&sku, &alice);
    let until = unix_millis(std::time::SystemTime::now()) + 60_000;
    let (first, second) = (TicketId::random(), TicketId::random());
    let hold = |t: TicketId| {
        let (store, sku, alice) = (store.clone(), sku.clone(), alice.clone());
        async move {
            store
                .hold_token(&sku, &token, &alice, &t, until)
                .await
                .expect("hold")
        }
    };
    assert_eq!(hold(first).await, TokenHold::Held);
    assert_eq!(hold(second).await, TokenHold::Queued(first));
    assert_eq!(
        store.ticket_record(&sku, &first).await.expect("record"),
        Some(TicketRecord::Queued)
    );
    assert_eq!(
        store.ticket_record(&sku, &second).await.expect("record"),
        None
    );
    // Only the holder lets go.
    store
        .release_token(&sku, &token, &second)
        .await
        .expect("release");
    assert_eq!(hold(second).await, TokenHold::Queued(first));
    let reply = store
        .reserve(&req(&sku, &alice, token, 1))
        .await
        .expect("reserve");
    let Some(TicketRecord::Decided(decided)) =
        store.ticket_record(&sku, &first).await.expect("record")
    else {
        panic!("the ticket's outcome is in the store");
    };
    assert_eq!(decided.outcome, reply.outcome);
    assert!(decided.replayed);
    let TokenHold::Spent(spent) = hold(second).await else {
        panic!("a spent token answers its outcome");
    };
    assert_eq!(spent.outcome, reply.outcome);
    // A refused request lets go of its hold: the token queues again.
    let other = token_for(&sku, &alice);
    let refused = TicketId::random();
    assert_eq!(
        store
            .hold_token(&sku, &other, &alice, &refused, until)
            .await
            .expect("hold"),
        TokenHold::Held
    );
    store
        .release_token(&sku, &other, &refused)
        .await
        .expect("release");
    assert_eq!(
        store.ticket_record(&sku, &refused).await.expect("record"),
        None
    );
    assert_eq!(
        store
            .hold_token(&sku, &other, &alice, &second, until)
            .await
            .expect("hold"),
        TokenHold::Held
    );
}

/// Each instance reports what it has pending and learns the others' total; a count that
/// is not renewed runs out, and zero forgets it.
pub async fn instances_share_their_pending_counts(store: Arc<dyn Store>) {
    let sku = Sku::new("pending");
    let long = Duration::from_secs(60);
    assert_eq!(
        store
            .share_pending(&sku, "a", 5, long)
            .await
            .expect("share"),
        0
    );
    assert_eq!(
        store
            .share_pending(&sku, "b", 3, long)
            .await
            .expect("share"),
        5
    );
    assert_eq!(
        store
            .share_pending(&sku, "a", 5, long)
            .await
            .expect("share"),
        3
    );
    assert_eq!(
        store
            .share_pending(&sku, "b", 0, long)
            .await
            .expect("share"),
        5
    );
    assert_eq!(
        store
            .share_pending(&sku, "a", 4, long)
            .await
            .expect("share"),
        0
    );
    // Another sale's counts are its own.
    assert_eq!(
        store
            .share_pending(&Sku::new("pending-other"), "b", 1, long)
            .await
            .expect("share"),
        0
    );
    store
        .share_pending(&sku, "c", 7, Duration::from_millis(1))
        .await
        .expect("share");
    let forgotten = tokio::time::timeout(Duration::from_secs(10), async {
        while store
            .share_pending(&sku, "b", 0, long)
            .await
            .expect("share")
            != 4
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        forgotten.is_ok(),
        "an instance that stopped reporting still counts"
    );
}

/// Pause, hold, capacity and drain rate are stored per sale, each on its own: setting one
/// leaves the others as they were, and another sale's are untouched.
pub async fn operator_settings_are_kept_with_the_sale(store: Arc<dyn Store>) {
    use flashgate::store::{SaleControl, SaleControls};
    let (sale, other) = (Sku::new("controls"), Sku::new("controls-other"));
    assert_eq!(
        store.controls(&sale).await.expect("read"),
        SaleControls::default()
    );
    store
        .set_control(&sale, SaleControl::Paused(true))
        .await
        .expect("pause");
    store
        .set_control(&sale, SaleControl::Capacity(250))
        .await
        .expect("capacity");
    store
        .set_control(&sale, SaleControl::Draining(false))
        .await
        .expect("hold");
    store.set_drain_rate(&sale, 7).await.expect("rate");
    store
        .set_control(&sale, SaleControl::Paused(false))
        .await
        .expect("resume");
    assert_eq!(
        store.controls(&sale).await.expect("read"),
        SaleControls {
            paused: Some(false),
            draining: Some(false),
            capacity: Some(250),
            drain_rate: Some(7),
        }
    );
    assert_eq!(
        store.controls(&other).await.expect("read"),
        SaleControls::default()
    );
}
