//! The Redis store: every step is one Lua script (one round trip, atomic on the server),
//! called by EVALSHA and reloaded by redis-rs on NOSCRIPT. All of a sale's keys share the
//! hash tag `{sku}`, so each script touches one Redis Cluster slot. The keys are named in
//! [`keys`]; what each holds is the table of docs/contract.md, "Store layout" (the one
//! table: `tests/it/docs.rs` holds it to the code).

mod book;
mod drain;
mod fleet;
mod keys;
mod link;
mod outbox;
mod reply;
mod stock;
mod tokens;

use std::time::Duration;

use redis::{ErrorKind, Script, ServerErrorKind, Value};

use self::keys::Keys;
use self::link::{Conn, Failure, Link};
use self::reply::reserve_reply;

use super::{Member, ReserveReply, ReserveRequest, StoreError};
use crate::config::StoreConfig;
use crate::types::{OrderId, Sku};

/// Stock, tokens and orders in Redis (one server or a cluster), shared by every gateway
/// instance. How calls reach Redis is [`link`]'s business.
pub struct RedisStore {
    link: Link,
    prefix: String,
    replay_ttl: Duration,
    /// Bound on one Redis exchange, a little under `store.timeout` so that a connection
    /// that hangs is noticed (and dropped) here before the breaker gives up on the call.
    call_timeout: Duration,
    scripts: Scripts,
}

struct Scripts {
    reserve: Script,
    replay: Script,
    confirm: Script,
    compensate: Script,
    cancel: Script,
    sale_book: Script,
    write_sale: Script,
    load_stock: Script,
    set_stock: Script,
    add_stock: Script,
    touch: Script,
    mark_lost: Script,
    reap: Script,
    members: Script,
    lease_drain: Script,
    steer_drain: Script,
    advance_line: Script,
    open_prequeue: Script,
    spend_sold_out: Script,
    hold_token: Script,
    release_token: Script,
    ticket_record: Script,
    clock: Script,
    share_pending: Script,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// The store `cfg` names (`store.url`, or the cluster's `store.urls`); nothing is
    /// contacted yet.
    pub fn new(cfg: &StoreConfig, replay_ttl: Duration) -> Result<Self, StoreError> {
        Ok(Self {
            link: Link::new(cfg)?,
            prefix: cfg.key_prefix.clone(),
            replay_ttl,
            call_timeout: cfg.timeout.mul_f64(0.9),
            scripts: Scripts {
                reserve: Script::new(include_str!("../lua/reserve.lua")),
                replay: Script::new(include_str!("../lua/replay.lua")),
                confirm: Script::new(include_str!("../lua/confirm.lua")),
                compensate: Script::new(include_str!("../lua/compensate.lua")),
                cancel: Script::new(include_str!("../lua/cancel.lua")),
                sale_book: Script::new(include_str!("../lua/sale_book.lua")),
                write_sale: Script::new(include_str!("../lua/write_sale.lua")),
                load_stock: Script::new(include_str!("../lua/load_stock.lua")),
                set_stock: Script::new(include_str!("../lua/set_stock.lua")),
                add_stock: Script::new(include_str!("../lua/add_stock.lua")),
                touch: Script::new(include_str!("../lua/touch.lua")),
                mark_lost: Script::new(include_str!("../lua/mark_lost.lua")),
                reap: Script::new(include_str!("../lua/reap.lua")),
                members: Script::new(include_str!("../lua/members.lua")),
                lease_drain: Script::new(include_str!("../lua/lease_drain.lua")),
                steer_drain: Script::new(include_str!("../lua/steer_drain.lua")),
                advance_line: Script::new(include_str!("../lua/advance_line.lua")),
                open_prequeue: Script::new(include_str!("../lua/open_prequeue.lua")),
                spend_sold_out: Script::new(include_str!("../lua/spend_sold_out.lua")),
                hold_token: Script::new(include_str!("../lua/hold_token.lua")),
                release_token: Script::new(include_str!("../lua/release_token.lua")),
                ticket_record: Script::new(include_str!("../lua/ticket_record.lua")),
                share_pending: Script::new(include_str!("../lua/share_pending.lua")),
                // KEYS[1] only routes the call to the node of that key's slot.
                clock: Script::new(
                    "local t = redis.call('TIME') return {tonumber(t[1]), tonumber(t[2])}",
                ),
            },
        })
    }

    fn keys(&self, sku: &Sku) -> Keys {
        Keys {
            base: format!("{}:{{{sku}}}", self.prefix),
        }
    }

    /// Runs the membership script: `ttl_ms` > 0 announces `member`, 0 lists, < 0 removes.
    async fn membership(&self, member: &Member, ttl_ms: i64) -> Result<Vec<Member>, StoreError> {
        // One hash tag for both keys (one slot in a cluster); `#` is in no sku.
        let base = format!("{}:{{#instances}}", self.prefix);
        let mut c = self.conn().await?;
        let flat: Vec<String> = self
            .exec(
                self.scripts
                    .members
                    .key(format!("{base}:expiry"))
                    .key(format!("{base}:address"))
                    .arg(&member.id)
                    .arg(&member.incarnation)
                    .arg(&member.address)
                    .arg(ttl_ms)
                    .invoke_async(&mut c),
            )
            .await?;
        if flat.first().map(String::as_str) == Some("taken") {
            return Err(StoreError::Rejected(format!(
                "instance id `{}` is held by another live instance",
                member.id
            )));
        }
        let mut live: Vec<Member> = flat
            .get(1..)
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|p| {
                let (incarnation, address) = p[1].split_once(' ').unwrap_or(("", &p[1]));
                Member {
                    id: p[0].clone(),
                    address: address.to_owned(),
                    incarnation: incarnation.to_owned(),
                }
            })
            .collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }

    /// A connection to send one call on.
    async fn conn(&self) -> Result<Conn, StoreError> {
        self.link.conn().await
    }

    /// Runs one Redis exchange. A broken or silent connection drops the cached ones (see
    /// [`Link::failed`]), so the next call reconnects.
    async fn exec<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(Ok(v)) => {
                self.link.answered();
                Ok(v)
            }
            // The server ran the command and refused it ("ERR …", a script failing on the
            // data it found): it is up, and the trouble is that data's.
            Ok(Err(e)) if e.kind() == ErrorKind::Server(ServerErrorKind::ResponseError) => {
                self.link.answered();
                Err(StoreError::Rejected(e.to_string()))
            }
            Ok(Err(e)) => {
                if e.is_unrecoverable_error() || e.is_io_error() || e.is_connection_dropped() {
                    self.link.failed(Failure::Broken);
                }
                Err(unavailable(e))
            }
            Err(_) => {
                self.link.failed(Failure::Silent);
                Err(unavailable("redis did not answer in time"))
            }
        }
    }

    async fn reserve_now(&self, req: &ReserveRequest) -> Result<ReserveReply, StoreError> {
        let k = self.keys(&req.sku);
        let order_id = OrderId::random();
        let mut c = self.conn().await?;
        let reply: Vec<Value> = self
            .exec(
                self.scripts
                    .reserve
                    .key(k.token(&req.token))
                    .key(k.stock())
                    .key(k.buyers())
                    .key(k.outbox())
                    .key(k.order(&order_id))
                    .key(k.epoch())
                    .arg(req.user.as_str())
                    .arg(req.quantity)
                    .arg(req.per_user_limit)
                    .arg(order_id.as_str())
                    .arg(self.replay_ttl_ms())
                    .arg(req.sku.as_str())
                    .arg(k.order_prefix())
                    .arg(req.token.expires_ms())
                    .invoke_async(&mut c),
            )
            .await?;
        reserve_reply(&reply, &req.sku)
    }

    pub(super) fn replay_ttl_ms(&self) -> u64 {
        self.replay_ttl.as_millis().min(u128::from(u64::MAX)) as u64
    }
}

/// Most pages of a deliverer's own pending entries read in one claim.
pub(super) const MAX_PAGES: usize = 64;

/// Most orders taken over from one gone deliverer per call; the rest go next round.
pub(super) const TAKE_OVER_BATCH: usize = 1000;

/// The consumer group of gateway deliverers on every outbox stream.
pub(super) const DELIVERERS: &str = "flashgate-deliverers";
