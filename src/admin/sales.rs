//! Sales as operators define them, live: `PUT /admin/sales/{sku}` creates or changes a
//! sale, `GET` shows its definition and version, `DELETE` ends it. The definitions live in
//! the store's book (every instance sharing it applies a change within
//! `store.sync_interval`; this one at once); `If-Match` makes a change conditional on the
//! version read, so two operators cannot overwrite each other silently.

use std::net::SocketAddr;

use http::header::{ETAG, IF_MATCH};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::config::SaleConfig;
use crate::error::GatewayError;
use crate::http::response::{json, GatewayResponse};
use crate::sale::book::{check_change, SaleBook};
use crate::sale::change::ChangeRefused;
use crate::store::{Definition, Expected, Origin, StoreError, Versioned, Written};
use crate::types::Sku;

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
/// A definition the same as the one in force changes nothing (its version and origin stay).
pub async fn put(
    book: &SaleBook,
    peer: SocketAddr,
    sku: &str,
    given: Option<u64>,
    body: Value,
) -> Result<GatewayResponse, GatewayError> {
    let sale = definition_of(sku, body)?;
    if !book.can_drain(&sale) {
        return Err(GatewayError::InvalidSale {
            key: "queue.drain_rate".into(),
            reason: STREAM_AUTO.into(),
        });
    }
    let current = book.read(sku).await.map_err(unavailable)?;
    let definition = Definition {
        sale,
        origin: Origin::Api,
        ended: false,
    };
    if let Some(c) = &current {
        check_change(book, &c.definition, &definition.sale).map_err(refused)?;
        if c.definition.same_sale(&definition) && given.is_none_or(|v| v == c.version) {
            // The same write again: what the store did not take of it the first time.
            book.pay(&Sku::new(sku)).await.map_err(unavailable)?;
            return Ok(answer(StatusCode::OK, c));
        }
    }
    // Without If-Match, still on the version just read: a change made meanwhile is
    // refused, never overwritten.
    let expected = match (given, &current) {
        (Some(v), _) => Expected::Version(v),
        (None, Some(c)) => Expected::Version(c.version),
        (None, None) => Expected::Absent,
    };
    let previous = current.as_ref().map(|c| &c.definition);
    let version = written(book.write(&definition, expected, previous).await)?;
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
    let version = written(book.write(&definition, expected, None).await)?;
    tracing::info!(%peer, %sku, version, "sale ended");
    Ok(answer(
        StatusCode::OK,
        &Versioned {
            definition,
            version,
        },
    ))
}

/// Why stream mode refuses an "auto" drain rate.
const STREAM_AUTO: &str =
    "\"auto\" is steered by the lag of the gateway's own deliveries: not in stream mode";

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

/// A change the running sale does not allow, as the API answers it.
fn refused(r: ChangeRefused) -> GatewayError {
    match r {
        ChangeRefused::Ended => GatewayError::SaleEnded,
        ChangeRefused::Started { key } => GatewayError::SaleStarted { key: key.into() },
        ChangeRefused::Invalid { key, reason } => GatewayError::InvalidSale {
            key: key.into(),
            reason,
        },
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
