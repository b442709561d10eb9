//! Admission: the in-process decision, for each buying request, to let it into the sale's
//! queue or refuse it — from atomics, a keyed limiter and the queue's counters; never the
//! store.

use std::net::IpAddr;
use std::time::SystemTime;

use crate::engine::Engine;
use crate::error::GatewayError;
use crate::ratelimit::retry_after_secs;
use crate::sale::{Sale, SaleState};
use crate::types::UserId;

/// Why admission said no.
#[derive(Debug)]
pub enum Refusal {
    /// A refusal with its contract error.
    Error(GatewayError),
    /// The queue is full; the sale's overflow policy decides the answer.
    QueueFull,
}

impl From<GatewayError> for Refusal {
    fn from(e: GatewayError) -> Self {
        Self::Error(e)
    }
}

/// The checks every buying request (token or order) passes, cheapest first: the sale
/// window, pause, the sold-out flag, then the per-user and per-IP limits.
pub fn check_edge(
    engine: &Engine,
    sale: &Sale,
    user: &UserId,
    ip: IpAddr,
    now: SystemTime,
) -> Result<(), GatewayError> {
    match sale.state(now) {
        SaleState::Open => {}
        SaleState::Upcoming => {
            return Err(GatewayError::SaleNotStarted {
                starts_at: sale.starts_at.map(|t| t.to_string()).unwrap_or_default(),
            })
        }
        SaleState::Closed => return Err(GatewayError::SaleClosed),
        SaleState::Paused => return Err(GatewayError::SalePaused),
        SaleState::SoldOut => return Err(GatewayError::SoldOut),
        SaleState::Held => return Err(GatewayError::SaleHeld),
    }
    check_rate(engine, user, ip)
}

/// The per-user and per-IP rate limits alone.
pub fn check_rate(engine: &Engine, user: &UserId, ip: IpAddr) -> Result<(), GatewayError> {
    if let Err(wait) = engine.per_user.check(user) {
        return Err(GatewayError::RateLimited {
            retry_after: retry_after_secs(wait),
        });
    }
    if let Err(wait) = engine.per_ip.check(&ip) {
        return Err(GatewayError::RateLimited {
            retry_after: retry_after_secs(wait),
        });
    }
    Ok(())
}

/// Decides an order: the edge checks, then stock-aware admission, then a slot in the
/// queue. On success returns the slot's admission sequence number; the caller must push
/// an item for it (or cancel the reservation).
pub fn admit(
    engine: &Engine,
    sale: &Sale,
    user: &UserId,
    ip: IpAddr,
    now: SystemTime,
) -> Result<u64, Refusal> {
    check_edge(engine, sale, user, ip, now)?;
    // Beyond remaining × admit_factor pending requests a new one could only reserve if
    // many ahead of it fail: say sold out now rather than after a wait in the queue.
    if !sale.has_room_for_one_more() {
        return Err(GatewayError::SoldOut.into());
    }
    let seq = sale.queue.reserve().ok_or(Refusal::QueueFull)?;
    // Checked after taking the number: either the stopping drain sees the number (and
    // answers it), or this sees the stop.
    if sale.is_stopped() {
        sale.queue.cancel_reservation(seq);
        return Err(GatewayError::ShuttingDown.into());
    }
    Ok(seq)
}
