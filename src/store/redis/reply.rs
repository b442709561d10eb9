//! Reading Redis replies: stock figures, reserve outcomes, orders and stream entries.

use std::collections::HashMap;

use redis::Value;

use super::unavailable;
use crate::store::{Order, OrderState, Reservation, ReserveReply, StoreError};
use crate::types::{OrderId, Sku, TicketId, MAX_STOCK};

/// A stock figure from Redis (an integer reply or text). A negative one means stock was
/// oversold (or set wrong by hand) and trips the oversell guard instead of being read as
/// zero; one that is not a figure at all, or beyond [`MAX_STOCK`], breaks that sale's
/// invariants too. Both are the sale's trouble, not the store's: they never count as the
/// store being down (which would open the one breaker every sale shares).
pub(super) fn stock_figure(v: &Value, sku: &Sku) -> Result<u64, StoreError> {
    let n = match v {
        Value::Int(n) => Some(*n),
        other => text(other).and_then(|t| t.parse::<i64>().ok()),
    };
    match n {
        Some(n) if n >= 0 && n as u64 <= MAX_STOCK => Ok(n as u64),
        Some(n) if n < 0 => Err(StoreError::Invariant(format!("sale `{sku}` has stock {n}"))),
        Some(n) => Err(StoreError::Invariant(format!(
            "sale `{sku}` has stock {n}, above the largest allowed (2^53-1)"
        ))),
        None => Err(StoreError::Invariant(format!(
            "sale `{sku}`: stock {v:?} is not a figure"
        ))),
    }
}

/// A reserve or replay script's answer `{kind, order_id, remaining, replayed, state}`.
pub(super) fn reserve_reply(reply: &[Value], sku: &Sku) -> Result<ReserveReply, StoreError> {
    let field = |i: usize| reply.get(i).and_then(text).unwrap_or_default();
    let kind = field(0);
    if kind == "unknown_sale" {
        return Err(StoreError::UnknownSale(sku.clone()));
    }
    let remaining = match reply.get(2) {
        Some(v) => stock_figure(v, sku)?,
        None => 0,
    };
    let outcome = match kind.as_str() {
        "reserved" => Reservation::Reserved {
            order_id: OrderId::parse(&field(1))
                .ok_or_else(|| unavailable("store returned a malformed order id"))?,
            remaining,
        },
        "sold_out" => Reservation::SoldOut { remaining },
        "limit" => Reservation::LimitReached,
        "invalid" => Reservation::InvalidToken,
        other => return Err(unavailable(format!("unexpected reserve outcome `{other}`"))),
    };
    Ok(ReserveReply {
        outcome,
        replayed: matches!(reply.get(3), Some(Value::Int(1))),
        state: OrderState::parse(&field(4)),
    })
}

pub(super) fn order_of(f: &HashMap<String, String>) -> Option<Order> {
    Some(Order {
        order_id: OrderId::parse(f.get("order_id")?)?,
        sku: f.get("sku")?.clone(),
        user_id: f.get("user_id")?.clone(),
        quantity: f.get("quantity")?.parse().ok()?,
        reserved_at: f.get("reserved_at")?.parse().ok()?,
    })
}

/// The elements of an array reply (empty for anything else, e.g. nil).
pub(super) fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) => items,
        _ => &[],
    }
}

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Stream entries `[[id, [field, value, …]], …]`; entries deleted meanwhile (nil fields)
/// are skipped.
pub(super) fn entries_of(v: &Value) -> Vec<(String, HashMap<String, String>)> {
    items(v)
        .iter()
        .filter_map(|entry| {
            let pair = items(entry);
            let id = text(pair.first()?)?;
            let fields = items(pair.get(1)?);
            let map = fields
                .chunks(2)
                .filter_map(|kv| Some((text(kv.first()?)?, text(kv.get(1)?)?)))
                .collect();
            Some((id, map))
        })
        .collect()
}

/// The ticket of a `{'queued', ticket}` answer: the request that holds a token.
pub(super) fn held_by(reply: &[Value]) -> Result<TicketId, StoreError> {
    reply
        .get(1)
        .and_then(text)
        .and_then(|t| TicketId::parse(&t))
        .ok_or_else(|| StoreError::Rejected("a token's hold names no ticket".into()))
}
