//! The other instances sharing the store, as this one asks them things: a ticket polled
//! here that another instance issued is answered by that instance, over its internal
//! address (`cluster.advertise`, the admin listener), authenticated by a credential
//! derived from `cluster.secret`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER};
use http::uri::Authority;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::sync::Semaphore;

use crate::cluster::membership::{Membership, Whereabouts};
use crate::http::Pool;
use crate::token::TokenSigner;
use crate::types::TicketId;

/// What the credential of calls between instances is derived for.
const PURPOSE: &str = "flashgate-internal-v1";

/// The longest an owner is given to answer a forwarded poll.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Relays in flight to each other instance at once; more wait their turn, first come
/// first served, within [`ASK_TIMEOUT`]. It bounds the connections a public crowd's polls
/// can open on another instance's admin listener (docs/operating.md, "Admin listener").
pub const RELAYS_PER_PEER: usize = 16;

/// Connections open to each other instance at most: the relays', and room for one whose
/// connection is still being handed back.
const CONNECTIONS_PER_PEER: usize = RELAYS_PER_PEER + RELAYS_PER_PEER / 2;

/// The path another instance answers a ticket on (its admin listener).
pub fn ticket_path(ticket: &TicketId) -> String {
    format!("/internal/tickets/{ticket}")
}

/// What asking a ticket's owner gave.
#[derive(Debug)]
pub enum Asked {
    /// It answered: status, the headers worth relaying, and the JSON body.
    Answered {
        /// Its status.
        status: StatusCode,
        /// `Content-Type`, `Location` and `Retry-After`, when it sent them.
        headers: Vec<(http::HeaderName, HeaderValue)>,
        /// Its body.
        body: Bytes,
    },
    /// The owner stopped (it is not among the live instances).
    Gone,
    /// The owner is listed but did not answer, or this instance has no recent list.
    Unreachable,
}

/// The other instances, and keep-alive connections to them.
pub struct Peers {
    membership: Arc<Membership>,
    credential: HeaderValue,
    pools: Mutex<HashMap<String, Relay>>,
}

/// Keep-alive connections to one other instance, and the fair line for them.
#[derive(Clone)]
struct Relay {
    pool: Pool<Empty<Bytes>>,
    turns: Arc<Semaphore>,
}

impl Peers {
    /// Peers as `membership` knows them, called with a credential derived from `tokens`'
    /// secret.
    pub fn new(membership: Arc<Membership>, tokens: &TokenSigner) -> Self {
        Self {
            membership,
            // Hex digits: always a valid header value.
            credential: HeaderValue::from_str(&Self::credential(tokens))
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The credential another instance's call must carry (`Authorization`).
    pub fn credential(tokens: &TokenSigner) -> String {
        format!("Bearer {}", tokens.derive(PURPOSE))
    }

    /// Asks the instance that issued `ticket` about it.
    pub async fn ask_ticket(&self, ticket: &TicketId) -> Asked {
        let owner = match self.membership.locate(&ticket.owner()).await {
            Whereabouts::Live(m) => m,
            Whereabouts::Gone => return Asked::Gone,
            Whereabouts::Unknown => return Asked::Unreachable,
        };
        let Ok(authority) = owner.address.parse::<Authority>() else {
            return Asked::Unreachable;
        };
        let relay = self.relay(&authority);
        let Ok(req) = Request::builder()
            .method(Method::GET)
            .uri(ticket_path(ticket))
            .header(HOST, authority.as_str())
            .header(AUTHORIZATION, self.credential.clone())
            .body(Empty::new())
        else {
            return Asked::Unreachable;
        };
        let asked = async {
            // Waits its turn rather than failing at once while the relays are busy.
            let _turn = relay.turns.acquire().await.ok()?;
            let resp = relay.pool.send(req).await.ok()?;
            let status = resp.status();
            let headers = [CONTENT_TYPE, CACHE_CONTROL, LOCATION, RETRY_AFTER]
                .into_iter()
                .filter_map(|name| Some((name.clone(), resp.headers().get(&name)?.clone())))
                .collect();
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            Some(Asked::Answered {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(ASK_TIMEOUT, asked).await {
            Ok(Some(answer)) => answer,
            _ => {
                tracing::debug!(owner = %owner.id, address = %owner.address, %ticket,
                    "the instance holding a ticket did not answer");
                Asked::Unreachable
            }
        }
    }

    fn relay(&self, authority: &Authority) -> Relay {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        // Instances come and go with new addresses: forget the pools of the gone.
        if pools.len() > 64 {
            pools.clear();
        }
        pools
            .entry(authority.as_str().to_owned())
            .or_insert_with(|| Relay {
                pool: Pool::new(
                    authority.clone(),
                    RELAYS_PER_PEER,
                    CONNECTIONS_PER_PEER,
                    Duration::from_secs(30),
                    ASK_TIMEOUT,
                ),
                turns: Arc::new(Semaphore::new(RELAYS_PER_PEER)),
            })
            .clone()
    }
}
