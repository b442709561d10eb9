//! Microbenchmarks of the hot path: the admission decision (each refusal kind and an
//! admit), and the queue's push and pop. `cargo bench --bench admission`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use flashgate::config::Config;
use flashgate::gateway::Gateway;
use flashgate::sale::admission::admit;
use flashgate::sale::context::SaleContext;
use flashgate::sale::queue::{Head, QueueItem, SaleQueue};
use flashgate::types::{TicketId, Token, UserId};

/// A sale context with one sale; `per_user_rate` 0 turns the user limit off.
fn ctx(per_user_rate: u32, sale: &str) -> Arc<SaleContext> {
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:9\"\n[limits]\nper_user_rate = {per_user_rate}\nper_user_burst = 1\n{sale}"
    );
    let config = Config::from_toml(&text, "bench", &[]).expect("bench config");
    let built = Gateway::build(config).expect("bench gateway");
    built.context().clone()
}

fn item(seq: u64, user: &UserId) -> QueueItem {
    QueueItem {
        seq,
        ticket: TicketId::random(),
        user: user.clone(),
        token: Token::random(),
        quantity: 1,
        line: None,
        promised_ms: 0,
        admitted_at: Instant::now(),
        reply: None,
        held: false,
    }
}

fn admission(c: &mut Criterion) {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let user = UserId::parse("bench-user").expect("user");
    let now = SystemTime::now();

    let sold_out = ctx(0, "[[sale]]\nsku = \"s\"\nstock = 0\n");
    let sale = sold_out.sales.get("s").expect("sale").clone();
    c.bench_function("admit/refuse_sold_out", |b| {
        b.iter(|| black_box(admit(&sold_out, &sale, &user, ip, now).is_err()))
    });

    let full = ctx(
        0,
        "[[sale]]\nsku = \"s\"\nstock = 1000000\nqueue = { capacity = 1 }\n",
    );
    let sale = full.sales.get("s").expect("sale").clone();
    admit(&full, &sale, &user, ip, now)
        .expect("first is admitted")
        .fill(user.clone(), Token::random(), 1, None, 0, None);
    c.bench_function("admit/refuse_queue_full", |b| {
        b.iter(|| black_box(admit(&full, &sale, &user, ip, now).is_err()))
    });

    let open = ctx(
        0,
        "[[sale]]\nsku = \"s\"\nstock = 1000000000\nqueue = { capacity = 1024 }\n",
    );
    let sale = open.sales.get("s").expect("sale").clone();
    c.bench_function("admit/admit_push_pop", |b| {
        b.iter(|| {
            admit(&open, &sale, &user, ip, now).expect("room").fill(
                user.clone(),
                Token::random(),
                1,
                None,
                0,
                None,
            );
            let popped = matches!(sale.queue.pop(), Head::Item(_));
            sale.finish();
            black_box(popped)
        })
    });

    // A ticket book full of unfinished tickets: every shard at its bound.
    let booked = ctx(
        0,
        "[queue]\nmax_tickets = 6400\n[[sale]]\nsku = \"s\"\nstock = 1000000\nqueue = { capacity = 1000 }\n",
    );
    let sale = booked.sales.get("s").expect("sale").clone();
    for seq in 0..20_000 {
        let _ = booked.tickets.open(
            TicketId::random(),
            sale.sku.clone(),
            seq,
            user.clone(),
            Token::random(),
        );
    }
    c.bench_function("admit/refuse_ticket_book_full", |b| {
        b.iter(|| black_box(admit(&booked, &sale, &user, ip, now).is_err()))
    });

    let limited = ctx(1, "[[sale]]\nsku = \"s\"\nstock = 1000\n");
    let sale = limited.sales.get("s").expect("sale").clone();
    let _ = admit(&limited, &sale, &user, ip, now);
    c.bench_function("admit/refuse_rate_limited", |b| {
        b.iter(|| black_box(admit(&limited, &sale, &user, ip, now).is_err()))
    });
}

fn queue(c: &mut Criterion) {
    let q = SaleQueue::new(1024);
    let user = UserId::parse("u").expect("user");
    // Items are recycled so the bench measures the queue, not building items.
    let mut spare: Vec<QueueItem> = (0..4).map(|i| item(i, &user)).collect();
    c.bench_function("queue/push_pop", |b| {
        b.iter(|| {
            let seq = q.reserve().expect("room");
            let mut it = spare.pop().expect("spare item");
            it.seq = seq;
            q.push(it);
            match q.pop() {
                Head::Item(it) => spare.push(it),
                other => panic!("expected the item just pushed, got {other:?}"),
            }
        })
    });
}

criterion_group!(benches, admission, queue);
criterion_main!(benches);
