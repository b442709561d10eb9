//! The store contract for many instances: membership, the shared drain budget, token
//! holds, pending counts and operators' settings.

use super::*;

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
                .hold_token(&sku, &token, &alice, &t, until, Entry::Back)
                .await
                .expect("hold")
        }
    };
    assert_eq!(
        hold(first).await,
        TokenHold::Held {
            number: 1,
            cursor: 0
        }
    );
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
        .release_token(&sku, &token, &alice, &second)
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
            .hold_token(&sku, &other, &alice, &refused, until, Entry::Back)
            .await
            .expect("hold"),
        TokenHold::Held {
            number: 2,
            cursor: 0
        }
    );
    store
        .release_token(&sku, &other, &alice, &refused)
        .await
        .expect("release");
    // Its ticket still says nothing was reserved for it (a poll elsewhere answers
    // ticket_lost, not "no such ticket": review finding), until the hold would have ended.
    assert_eq!(
        store.ticket_record(&sku, &refused).await.expect("record"),
        Some(TicketRecord::Queued)
    );
    assert_eq!(
        store
            .hold_token(&sku, &other, &alice, &second, until, Entry::Back)
            .await
            .expect("hold"),
        TokenHold::Held {
            number: 3,
            cursor: 0
        }
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
    // A steering only over the rate it steered from: a rate set meanwhile stands.
    assert!(store
        .steer_drain_rate(&other, 5, 9)
        .await
        .expect("none stored yet"));
    assert!(store.steer_drain_rate(&other, 9, 12).await.expect("from 9"));
    store
        .set_drain_rate(&other, 77)
        .await
        .expect("an operator's");
    assert!(!store.steer_drain_rate(&other, 12, 15).await.expect("stale"));
    assert_eq!(
        store.controls(&other).await.expect("read").drain_rate,
        Some(77)
    );
}

/// A replay never spends a token a queued request holds, whatever it is asked: it names
/// that request's ticket, so a double click on any instance joins it (review finding: a
/// double click answered sold out elsewhere burned the token under its queued request).
pub async fn a_replay_leaves_a_held_token_to_its_request(store: Arc<dyn Store>) {
    let sku = Sku::new("held-replay");
    store.init_stock(&sku, 5, None).await.expect("init");
    let alice = user("alice");
    let token = token_for(&sku, &alice);
    let until = unix_millis(std::time::SystemTime::now()) + 60_000;
    let ticket = TicketId::random();
    let held = store
        .hold_token(&sku, &token, &alice, &ticket, until, Entry::Back)
        .await
        .expect("hold");
    assert!(matches!(held, TokenHold::Held { .. }), "{held:?}");
    for unspent in [Unspent::SpendAsSoldOut, Unspent::Leave] {
        assert_eq!(
            store
                .replay(&sku, &token, &alice, unspent)
                .await
                .expect("replay"),
            Replay::Queued(ticket),
            "{unspent:?}"
        );
    }
    // The queued request still buys with it.
    let reply = store
        .reserve(&req(&sku, &alice, token, 1))
        .await
        .expect("reserve");
    assert!(
        matches!(reply.outcome, Reservation::Reserved { .. }),
        "{reply:?}"
    );
    // Spent now: the replay answers its outcome, the hold no longer matters.
    let replayed = store
        .replay(&sku, &token, &alice, Unspent::SpendAsSoldOut)
        .await
        .expect("replay");
    assert!(
        matches!(&replayed, Replay::Spent(r) if r.outcome == reply.outcome),
        "{replayed:?}"
    );
    // Let go (its request was refused): a replay may spend it as sold out again.
    let other = token_for(&sku, &user("bob"));
    let bobs = TicketId::random();
    let bob = user("bob");
    store
        .hold_token(&sku, &other, &bob, &bobs, until, Entry::Back)
        .await
        .expect("hold");
    store
        .release_token(&sku, &other, &bob, &bobs)
        .await
        .expect("release");
    let burned = store
        .replay(&sku, &other, &bob, Unspent::SpendAsSoldOut)
        .await
        .expect("replay");
    assert!(
        matches!(&burned, Replay::Spent(r) if matches!(r.outcome, Reservation::SoldOut { .. })),
        "{burned:?}"
    );
}

/// Held tokens draw the sale's line numbers in order; the cursor passes at most a burst at
/// once, never past the last number drawn, never back, and then at the drain rate (an
/// operator's rate over the configured one).
pub async fn the_line_numbers_admissions_and_the_cursor_passes_them(store: Arc<dyn Store>) {
    let sku = Sku::new("line");
    store.init_stock(&sku, 500, None).await.expect("init");
    let until = unix_millis(std::time::SystemTime::now()) + 60_000;
    let first = store.advance_line(&sku, 1).await.expect("advance");
    assert_eq!(
        (first.cursor, first.admitted, first.rate),
        (0, 0, 1),
        "nobody in line"
    );
    for n in 1..=20u64 {
        let u = user(&format!("u{n}"));
        let held = store
            .hold_token(
                &sku,
                &token_for(&sku, &u),
                &u,
                &TicketId::random(),
                until,
                Entry::Back,
            )
            .await
            .expect("hold");
        let TokenHold::Held { number, .. } = held else {
            panic!("a fresh token is held: {held:?}");
        };
        assert_eq!(number, n, "numbers follow the order of the holds");
    }
    let started = std::time::Instant::now();
    let burst = flashgate::store::line::burst(1);
    let line = store.advance_line(&sku, 1).await.expect("advance");
    assert_eq!(line.admitted, 20);
    let elapsed = started.elapsed().as_secs_f64().ceil() as u64;
    assert!(
        line.cursor <= u64::from(burst) + elapsed,
        "at most a burst, then the rate: {line:?}"
    );
    let again = store.advance_line(&sku, 1).await.expect("advance");
    assert!(again.cursor >= line.cursor, "the cursor never goes back");
    // An operator's rate wins over the configured one, and lets the cursor catch up.
    store.set_drain_rate(&sku, 1_000_000).await.expect("rate");
    let mut last = again.cursor;
    for _ in 0..100 {
        let line = store.advance_line(&sku, 1).await.expect("advance");
        assert_eq!(line.rate, 1_000_000);
        assert!(line.cursor >= last && line.cursor <= 20, "{line:?}");
        last = line.cursor;
        if last == 20 {
            break;
        }
    }
    assert_eq!(last, 20, "caught up with the last number, never past it");
}

/// Holds that join the pre-queue draw no number, one place a user; a hold let go before
/// the seal gives the place up. The first opening (or the first number drawn after it)
/// seals it: its members take the next numbers in the order of their keys, the same for
/// every instance that asks, ahead of every later arrival; the first figure of members kept
/// stands, and the cursor passes the others' numbers at once. Tokens spent as sold out
/// then replay it, on any instance.
pub async fn the_prequeue_is_one_permutation_ahead_of_later_arrivals(store: Arc<dyn Store>) {
    let sku = Sku::new("prequeue");
    store.init_stock(&sku, 500, None).await.expect("init");
    let until = unix_millis(std::time::SystemTime::now()) + 60_000;
    let hold = |u: UserId, token: Token, entry: Entry| {
        let store = store.clone();
        let sku = sku.clone();
        async move {
            let ticket = TicketId::random();
            let held = store
                .hold_token(&sku, &token, &u, &ticket, until, entry)
                .await
                .expect("hold");
            (ticket, held)
        }
    };
    // Keys in reverse of arrival: the shuffled order is the reverse.
    let mut members = Vec::new();
    for n in 1..=10u64 {
        let u = user(&format!("u{n}"));
        let token = token_for(&sku, &u);
        let (ticket, held) = hold(u.clone(), token, Entry::Prequeue(1000 - n)).await;
        assert_eq!(held, TokenHold::Prequeued, "member {n}");
        members.push((u, ticket, token));
    }
    // One place a user: another token of u1 is told u1's place, and left unheld.
    let u1 = members[0].0.clone();
    let (_, again) = hold(u1.clone(), token_for(&sku, &u1), Entry::Prequeue(1)).await;
    assert_eq!(
        again,
        TokenHold::PlaceTaken(members[0].1),
        "one place a user"
    );
    // A hold let go before the seal gives its place up; the user may join again.
    let u11 = user("u11");
    let gone = token_for(&sku, &u11);
    let (left, _) = hold(u11.clone(), gone, Entry::Prequeue(5)).await;
    store
        .release_token(&sku, &gone, &u11, &left)
        .await
        .expect("release");
    let users: Vec<UserId> = members.iter().map(|m| m.0.clone()).collect();
    let opening = store
        .open_prequeue(&sku, &users[..5], 4)
        .await
        .expect("open");
    assert_eq!(
        (
            opening.sealed.base,
            opening.sealed.size,
            opening.sealed.kept
        ),
        (0, 10, Some(4)),
        "the place given up is not counted"
    );
    assert_eq!(opening.admitted, 10);
    assert_eq!(
        opening.places,
        [Some(10), Some(9), Some(8), Some(7), Some(6)],
        "places in the order of the keys"
    );
    // Sealed: a late member is an ordinary arrival, behind the pre-queue.
    let u12 = user("u12");
    let (_, late) = hold(u12.clone(), token_for(&sku, &u12), Entry::Prequeue(1)).await;
    assert!(
        matches!(late, TokenHold::Held { number: 11, .. }),
        "{late:?}"
    );
    // Another instance asks: the same places, the first figure kept.
    let again = store
        .open_prequeue(&sku, &[users[9].clone(), users[0].clone(), u11], 9)
        .await
        .expect("open again");
    assert_eq!(again.sealed.kept, Some(4), "the first figure stands");
    assert_eq!(again.places, [Some(1), Some(10), None]);
    // The cursor's first move passes a burst (six numbers at 125/s): the four kept
    // members (1..=4), two of the others — and so all six others at once (to 10), short
    // of the late arrival.
    store.set_drain_rate(&sku, 125).await.expect("rate");
    assert_eq!(flashgate::store::line::burst(125), 6);
    let line = store.advance_line(&sku, 1).await.expect("advance");
    assert_eq!((line.cursor, line.admitted), (10, 11));
    // A member told sold out: its token is spent so, its hold let go; a token another
    // ticket holds is left to it.
    let (u2, t2, token2) = members[1].clone();
    let (u3, _, token3) = members[2].clone();
    store
        .spend_sold_out(
            &sku,
            &[
                Spend {
                    token: token2,
                    user: u2.clone(),
                    ticket: t2,
                },
                Spend {
                    token: token3,
                    user: u3.clone(),
                    ticket: TicketId::random(),
                },
            ],
        )
        .await
        .expect("spend");
    let replayed = store
        .replay(&sku, &token2, &u2, Unspent::Leave)
        .await
        .expect("replay");
    assert!(
        matches!(&replayed, Replay::Spent(r) if matches!(r.outcome, Reservation::SoldOut { .. })),
        "{replayed:?}"
    );
    let (_, held) = hold(u2.clone(), token2, Entry::Back).await;
    assert!(matches!(held, TokenHold::Spent(_)), "{held:?}");
    let (_, held) = hold(u3.clone(), token3, Entry::Back).await;
    assert_eq!(
        held,
        TokenHold::Queued(members[2].1),
        "left to its own ticket"
    );
}
