//! Sales as operators define them, live: `PUT /admin/sales/{sku}` creates or changes a
//! sale, `GET` shows its definition and version, `DELETE` ends it. The definitions live in
//! the store's book (every instance sharing it applies a change within
//! `store.sync_interval`; this one at once); `If-Match` makes a change conditional on the
//! version read, so two operators cannot overwrite each other silently.

use std::net::SocketAddr;
use std::time::SystemTime;

use http::header::{ETAG, IF_MATCH};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::config::SaleConfig;
use crate::error::GatewayError;
use crate::http::response::{json, GatewayResponse};
use crate::sale::book::SaleBook;
use crate::sale::context::SaleContext;
use crate::sale::SaleState;
use crate::store::{Definition, Expected, Origin, SaleControl, StoreError, Versioned, Written};

/// The version an `If-Match` header names (`"3"` or `3`), if one was sent.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, GatewayError> {
    let Some(v) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .map(|s| s.trim().trim_matches('"'))
        .and_then(|s| s.parse::<u64>().ok())
        .map(Some)
        .ok_or(GatewayError::BadRequest(
            "If-Match must be a definition's version, as its ETag gave it",
        ))
}

/// `GET /admin/sales/{sku}`: the definition the store holds, its version and origin.
pub async fn get(book: &SaleBook, sku: &str) -> Result<GatewayResponse, GatewayError> {
    let current = book.read(sku).await.map_err(unavailable)?;
    let v = current.ok_or_else(|| GatewayError::UnknownSale(sku.chars().take(64).collect()))?;
    Ok(answer(StatusCode::OK, &v))
}

/// `PUT /admin/sales/{sku}`: creates the sale, or changes it (its stock only at creation).
pub async fn put(
    ctx: &SaleContext,
    book: &SaleBook,
    peer: SocketAddr,
    sku: &str,
    given: Option<u64>,
    body: Value,
) -> Result<GatewayResponse, GatewayError> {
    let sale = definition_of(sku, body)?;
    let current = book.read(sku).await.map_err(unavailable)?;
    if let Some(c) = &current {
        allowed(ctx, &c.definition, &sale)?;
    }
    // Without If-Match, still on the version just read: a change made meanwhile is
    // refused, never overwritten.
    let expected = match (given, &current) {
        (Some(v), _) => Expected::Version(v),
        (None, Some(c)) => Expected::Version(c.version),
        (None, None) => Expected::Absent,
    };
    let definition = Definition {
        sale,
        origin: Origin::Api,
        ended: false,
    };
    let version = written(book.write(&definition, expected).await)?;
    if let Some(c) = &current {
        store_settings(ctx, &c.definition.sale, &definition.sale).await;
    }
    tracing::info!(%peer, %sku, version, created = current.is_none(), "sale defined");
    let status = match current {
        Some(_) => StatusCode::OK,
        None => StatusCode::CREATED,
    };
    Ok(answer(
        status,
        &Versioned {
            definition,
            version,
        },
    ))
}

/// `DELETE /admin/sales/{sku}`: ends the sale on every instance.
pub async fn delete(
    book: &SaleBook,
    peer: SocketAddr,
    sku: &str,
    given: Option<u64>,
) -> Result<GatewayResponse, GatewayError> {
    let current = book.read(sku).await.map_err(unavailable)?;
    let Some(c) = current else {
        return Err(GatewayError::UnknownSale(sku.chars().take(64).collect()));
    };
    if c.definition.ended {
        return Ok(answer(StatusCode::OK, &c));
    }
    let definition = Definition {
        ended: true,
        origin: Origin::Api,
        ..c.definition
    };
    let expected = Expected::Version(given.unwrap_or(c.version));
    let version = written(book.write(&definition, expected).await)?;
    tracing::info!(%peer, %sku, version, "sale ended");
    Ok(answer(
        StatusCode::OK,
        &Versioned {
            definition,
            version,
        },
    ))
}

/// The sale a body defines, under the path's sku (a body naming another is refused).
fn definition_of(sku: &str, body: Value) -> Result<SaleConfig, GatewayError> {
    let Value::Object(mut fields) = body else {
        return Err(GatewayError::BadRequest("the body must be a JSON object"));
    };
    match fields.get("sku") {
        None => {
            fields.insert("sku".into(), Value::String(sku.to_owned()));
        }
        Some(Value::String(s)) if s == sku => {}
        Some(_) => {
            return Err(GatewayError::InvalidSale {
                key: "sku".into(),
                reason: "must be the sku of the path".into(),
            })
        }
    }
    SaleConfig::from_json(Value::Object(fields)).map_err(|e| match e {
        crate::config::ConfigError::Invalid { key, reason } => {
            GatewayError::InvalidSale { key, reason }
        }
        other => GatewayError::InvalidSale {
            key: String::new(),
            reason: other.to_string(),
        },
    })
}

/// Whether `next` may replace `current` while the sale runs: not once ended; its stock only
/// through the stock endpoints; its opening and pre-queue only before the pre-queue (or the
/// sale) has opened here; its queue no larger than this instance's queue can hold.
fn allowed(ctx: &SaleContext, current: &Definition, next: &SaleConfig) -> Result<(), GatewayError> {
    if current.ended {
        return Err(GatewayError::SaleEnded);
    }
    if current.sale.stock != next.stock {
        return Err(GatewayError::InvalidSale {
            key: "stock".into(),
            reason: format!(
                "is {} since the sale was created; change it with PUT /admin/sales/{}/stock",
                current.sale.stock, next.sku
            ),
        });
    }
    let Some(sale) = ctx.sales.get(&next.sku) else {
        return Ok(());
    };
    let upcoming = sale.state(SystemTime::now()) == SaleState::Upcoming;
    let moved =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    for (key, changed) in [
        ("starts_at", moved(&current.sale.starts_at, &next.starts_at)),
        ("prequeue", moved(&current.sale.prequeue, &next.prequeue)),
    ] {
        if changed && !upcoming {
            return Err(GatewayError::SaleStarted { key: key.into() });
        }
    }
    if let Some(capacity) = next.queue.capacity {
        if capacity > sale.queue.max_capacity() {
            return Err(GatewayError::InvalidSale {
                key: "queue.capacity".into(),
                reason: format!(
                    "must be at most {} (4 × the capacity the sale started with) while it runs",
                    sale.queue.max_capacity()
                ),
            });
        }
    }
    Ok(())
}

/// A changed capacity or drain rate is also stored as the operator's setting, so that one
/// stored earlier (`PUT …/capacity`, `…/drain_rate`) does not shadow the new definition.
async fn store_settings(ctx: &SaleContext, before: &SaleConfig, after: &SaleConfig) {
    let sku = crate::types::Sku::new(&after.sku);
    if let (Some(c), true) = (
        after.queue.capacity,
        after.queue.capacity != before.queue.capacity,
    ) {
        if let Err(e) = ctx.store.set_control(&sku, SaleControl::Capacity(c)).await {
            tracing::warn!(%sku, error = %e, "the new capacity was not stored as the sale's setting");
        }
    }
    if let (Some(r), true) = (
        after.queue.drain_rate,
        after.queue.drain_rate != before.queue.drain_rate,
    ) {
        if let Err(e) = ctx.store.set_drain_rate(&sku, r).await {
            tracing::warn!(%sku, error = %e, "the new drain rate was not stored as the sale's setting");
        }
    }
}

/// The version a write took, or why it did not.
fn written(w: Result<Written, StoreError>) -> Result<u64, GatewayError> {
    match w.map_err(unavailable)? {
        Written::Written { version } => Ok(version),
        Written::Conflict { current } => Err(GatewayError::VersionMismatch {
            current: current.map_or(0, |c| c.version),
        }),
    }
}

fn unavailable(e: StoreError) -> GatewayError {
    tracing::warn!(error = %e, "cannot read or write the book of sales");
    GatewayError::StoreUnavailable
}

/// A definition as the API shows it, its version in the ETag too.
fn answer(status: StatusCode, v: &Versioned) -> GatewayResponse {
    let mut resp = json(
        status,
        &json!({
            "sku": v.definition.sale.sku,
            "definition": v.definition.sale,
            "version": v.version,
            "origin": v.definition.origin,
            "ended": v.definition.ended,
        }),
    );
    if let Ok(tag) = HeaderValue::from_str(&format!("\"{}\"", v.version)) {
        resp.headers_mut().insert(ETAG, tag);
    }
    resp
}
