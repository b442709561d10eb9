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
            a_replay_leaves_a_held_token_to_its_request,
            instances_share_their_pending_counts,
            the_line_numbers_admissions_and_the_cursor_passes_them,
            the_prequeue_is_one_permutation_ahead_of_later_arrivals,
            operator_settings_are_kept_with_the_sale,
            a_cancel_hands_back_once,
            concurrent_cancels_restock_once,
            a_cancel_after_a_stock_load_keeps_the_new_figure,
            a_cancel_of_an_unknown_or_compensated_order_is_refused,
            a_consumed_order_is_cancelled_out_of_the_outbox,
            the_book_keeps_versions_and_refuses_stale_writes
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

mod book;
mod cancels;
mod fleet;
mod orders;
mod stock;

pub use book::*;
pub use cancels::*;
pub use fleet::*;
pub use orders::*;
pub use stock::*;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use flashgate::store::{
    Compensation, Confirmation, Entry, Member, OrderState, Replay, Reservation, ReserveReply,
    ReserveRequest, Spend, StockLoad, Store, StoreError, TicketRecord, TokenHold, Unspent,
};
use flashgate::token::TokenSigner;
use flashgate::types::{unix_millis, Epoch, OrderId, Sku, TicketId, Token, UserId, MAX_STOCK};

/// A replay's reply if it found the token spent; `None` if it found nothing (a token held
/// by a queued request is not expected where this is used).
fn spent(r: Replay) -> Option<ReserveReply> {
    match r {
        Replay::Spent(reply) => Some(reply),
        Replay::Unknown => None,
        Replay::Queued(ticket) => panic!("held by {ticket}, not spent"),
    }
}

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

/// One unit of `sku` for `user`, with a fresh token, within a limit of one.
pub fn one_unit(sku: &Sku, user: &str) -> ReserveRequest {
    let u = UserId::parse(user).expect("valid user id");
    ReserveRequest {
        sku: sku.clone(),
        token: token_for(sku, &u),
        user: u,
        quantity: 1,
        per_user_limit: 1,
    }
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
