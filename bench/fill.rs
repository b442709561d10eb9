//! Filling a sale's queue directly, as admission would, for the drain benchmarks.

use std::time::{Instant, SystemTime};

use flashgate::sale::context::SaleContext;
use flashgate::sale::queue::QueueItem;
use flashgate::sale::Sale;
use flashgate::store::TokenHold;
use flashgate::types::{unix_millis, TicketId, UserId};

/// Queues `n` one-unit orders in `sale`, each from its own user (`{users}{i}`) with a
/// token signed by `ctx`, good for ten minutes; with a shared store each holds its token
/// and draws its number in the fleet's line, as admission does.
pub async fn fill(ctx: &SaleContext, sale: &Sale, n: u64, users: &str) {
    let expires = unix_millis(SystemTime::now()) + 600_000;
    for i in 0..n {
        let user = UserId::parse(&format!("{users}{i}")).expect("user");
        let token = ctx.tokens.issue(&sale.sku, &user, expires);
        let ticket = TicketId::random();
        let line = match ctx.shared {
            true => match ctx
                .store
                .hold_token(
                    &sale.sku,
                    &token,
                    &user,
                    &ticket,
                    expires,
                    flashgate::store::Entry::Back,
                )
                .await
                .expect("hold")
            {
                TokenHold::Held { number, cursor } => {
                    sale.line.seen(cursor, number);
                    Some(number)
                }
                other => panic!("a fresh token is held: {other:?}"),
            },
            false => None,
        };
        let seq = sale.queue.reserve().expect("room in the queue");
        sale.begin();
        sale.queue.push(QueueItem {
            seq,
            ticket,
            user,
            token,
            quantity: 1,
            line,
            promised_ms: 0,
            admitted_at: Instant::now(),
            reply: None,
            held: line.is_some(),
        });
    }
}
