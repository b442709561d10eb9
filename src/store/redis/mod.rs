//! The Redis store: every step is one Lua script (one round trip, atomic on the server),
//! called by EVALSHA and reloaded by redis-rs on NOSCRIPT. All of a sale's keys share the
//! hash tag `{sku}`, so each script touches one Redis Cluster slot:
//!
//! | key | holds |
//! |---|---|
//! | `{prefix}:{sku}:stock` | units left |
//! | `{prefix}:{sku}:epoch` | which loading of the stock this is (`init-…` or `load-…`) |
//! | `{prefix}:{sku}:tok:<token>` | hash: the user who spent it and its first outcome, for replays; kept until the later of its expiry and `replay_ttl` |
//! | `{prefix}:{sku}:buyers` | hash: user → units held |
//! | `{prefix}:{sku}:order:<id>` | hash: the order and its state; expires `replay_ttl` after it settles |
//! | `{prefix}:{sku}:outbox` | stream of reserved, undelivered orders |
//! | `{prefix}:{sku}:hold:<token>` | the ticket of the queued request holding the token (any instance's) |
//! | `{prefix}:{sku}:ticket:<ticket>` | the token that ticket's request holds, so any instance can answer it |
//! | `{prefix}:{sku}:drain` | the drain budget's arrival time (µs, store clock); expires when spent |
//! | `{prefix}:{sku}:drain_rate` | the drain rate an operator set for every instance |
//! | `{prefix}:{sku}:pending` | hash: instance → its pending requests and until when the count holds |

mod link;

use std::collections::HashMap;
use std::time::Duration;

use redis::{AsyncCommands, ErrorKind, Script, ServerErrorKind, Value};

use self::link::{Conn, Failure, Link};

use super::{
    Claimed, Compensation, Confirmation, DrainLease, Member, Order, OrderState, Reservation,
    ReserveReply, ReserveRequest, SaleControl, SaleControls, StockLoad, StockReading, Store,
    StoreError, StoreFuture, TicketRecord, TokenHold, Unspent,
};
use crate::config::StoreConfig;
use crate::types::{Epoch, OrderId, Sku, TicketId, Token, UserId, MAX_STOCK};

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
    load_stock: Script,
    set_stock: Script,
    add_stock: Script,
    touch: Script,
    mark_lost: Script,
    reap: Script,
    members: Script,
    lease_drain: Script,
    hold_token: Script,
    release_token: Script,
    ticket_record: Script,
    clock: Script,
    share_pending: Script,
}

/// One sale's key names.
struct Keys {
    base: String,
}

impl Keys {
    fn stock(&self) -> String {
        format!("{}:stock", self.base)
    }
    fn epoch(&self) -> String {
        format!("{}:epoch", self.base)
    }
    /// What an order's key starts with; scripts that find an order id in a token's
    /// record build its key from this (same hash tag, same slot).
    fn order_prefix(&self) -> String {
        format!("{}:order:", self.base)
    }
    fn token(&self, t: &Token) -> String {
        format!("{}:tok:{t}", self.base)
    }
    /// What a token record's key starts with (scripts that find a token in a ticket's
    /// record build the key from this).
    fn token_prefix(&self) -> String {
        format!("{}:tok:", self.base)
    }
    fn hold(&self, t: &Token) -> String {
        format!("{}:hold:{t}", self.base)
    }
    fn ticket(&self, t: &TicketId) -> String {
        format!("{}:ticket:{t}", self.base)
    }
    fn buyers(&self) -> String {
        format!("{}:buyers", self.base)
    }
    fn order(&self, id: &OrderId) -> String {
        format!("{}:order:{id}", self.base)
    }
    fn outbox(&self) -> String {
        format!("{}:outbox", self.base)
    }
    fn drain(&self) -> String {
        format!("{}:drain", self.base)
    }
    fn drain_rate(&self) -> String {
        format!("{}:drain_rate", self.base)
    }
    fn pending(&self) -> String {
        format!("{}:pending", self.base)
    }
    fn controls(&self) -> String {
        format!("{}:controls", self.base)
    }
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
                load_stock: Script::new(include_str!("../lua/load_stock.lua")),
                set_stock: Script::new(include_str!("../lua/set_stock.lua")),
                add_stock: Script::new(include_str!("../lua/add_stock.lua")),
                touch: Script::new(include_str!("../lua/touch.lua")),
                mark_lost: Script::new(include_str!("../lua/mark_lost.lua")),
                reap: Script::new(include_str!("../lua/reap.lua")),
                members: Script::new(include_str!("../lua/members.lua")),
                lease_drain: Script::new(include_str!("../lua/lease_drain.lua")),
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

    fn replay_ttl_ms(&self) -> u64 {
        self.replay_ttl.as_millis().min(u128::from(u64::MAX)) as u64
    }

    async fn claim_now(
        &self,
        sku: &Sku,
        consumer: &str,
        max: usize,
        claim_idle: Duration,
    ) -> Result<Claimed, StoreError> {
        let k = self.keys(sku);
        let stream = k.outbox();
        let mut c = self.conn().await?;
        // The group is created from the stream's start; BUSYGROUP means it exists already.
        let created: Result<(), StoreError> = self
            .exec(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg(DELIVERERS)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut c),
            )
            .await;
        if let Err(e) = created {
            if !e.to_string().contains("BUSYGROUP") {
                return Err(e);
            }
        }
        let mut found: Vec<(String, HashMap<String, String>)> = Vec::new();
        // Every entry this deliverer holds, page by page (it must see all it owns: what it
        // remembers of an order is forgotten once the order is not among them), then up
        // to `max` new ones.
        let mut from = "0".to_owned();
        let mut pages = 0;
        loop {
            let page = self
                .read_group(&mut c, &stream, consumer, max, &from)
                .await?;
            let full = page.len() >= max;
            let Some(last) = page.last().map(|(id, _)| id.clone()) else {
                break;
            };
            found.extend(page.into_iter().filter_map(|(id, f)| Some((id, f?))));
            pages += 1;
            // Bounded, so that a huge backlog cannot keep one round reading forever.
            if !full || pages >= MAX_PAGES {
                break;
            }
            from = last;
        }
        let complete = pages < MAX_PAGES;
        let fresh = self.read_group(&mut c, &stream, consumer, max, ">").await?;
        found.extend(fresh.into_iter().filter_map(|(id, f)| Some((id, f?))));
        // Orders another deliverer has sat on for too long: it probably died.
        let reply: Value = self
            .exec(
                redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(DELIVERERS)
                    .arg(consumer)
                    .arg(claim_idle.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(max)
                    .query_async(&mut c),
            )
            .await?;
        let mut taken_over = Vec::new();
        if let Some(entries) = items(&reply).get(1) {
            let entries = entries_of(entries);
            taken_over.extend(
                entries
                    .iter()
                    .filter_map(|(_, f)| f.get("order_id").and_then(|id| OrderId::parse(id))),
            );
            found.extend(entries);
        }
        let mut seen = std::collections::HashSet::new();
        found.retain(|(id, _)| seen.insert(id.clone()));
        // Asked of the outbox's node (a keyless TIME could go to any node, maybe a dead one).
        let (secs, micros): (u64, u64) = self
            .exec(self.scripts.clock.key(&stream).invoke_async(&mut c))
            .await?;
        // Deliverers gone for ten takeover periods, holding nothing, leave the group.
        let reap_after = claim_idle.saturating_mul(10).as_millis() as u64;
        let _: i64 = self
            .exec(
                self.scripts
                    .reap
                    .key(&stream)
                    .arg(DELIVERERS)
                    .arg(consumer)
                    .arg(reap_after)
                    .invoke_async(&mut c),
            )
            .await?;
        Ok(Claimed {
            orders: found
                .into_iter()
                .filter_map(|(_, f)| order_of(&f))
                .collect(),
            now_ms: secs.saturating_mul(1000).saturating_add(micros / 1000),
            taken_over,
            complete,
        })
    }

    /// One XREADGROUP page from `from` (`0`-based history or `>` for new entries): each
    /// entry's id and fields (`None` for an entry deleted meanwhile).
    async fn read_group(
        &self,
        c: &mut Conn,
        stream: &str,
        consumer: &str,
        max: usize,
        from: &str,
    ) -> Result<Vec<(String, Option<HashMap<String, String>>)>, StoreError> {
        let reply: Value = self
            .exec(
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(DELIVERERS)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(max)
                    .arg("STREAMS")
                    .arg(stream)
                    .arg(from)
                    .query_async(c),
            )
            .await?;
        let mut out = Vec::new();
        for per_stream in items(&reply) {
            if let Some(entries) = items(per_stream).get(1) {
                out.extend(items(entries).iter().filter_map(|entry| {
                    let pair = items(entry);
                    let id = text(pair.first()?)?;
                    let fields = pair.get(1).and_then(|f| match f {
                        Value::Array(kv) => Some(
                            kv.chunks(2)
                                .filter_map(|kv| Some((text(kv.first()?)?, text(kv.get(1)?)?)))
                                .collect(),
                        ),
                        _ => None,
                    });
                    Some((id, fields))
                }));
            }
        }
        Ok(out)
    }

    async fn outbox_now(&self, sku: &Sku, max: usize) -> Result<Vec<Order>, StoreError> {
        let k = self.keys(sku);
        let mut c = self.conn().await?;
        let entries: Vec<(String, HashMap<String, String>)> = self
            .exec(
                redis::cmd("XRANGE")
                    .arg(k.outbox())
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(max)
                    .query_async(&mut c),
            )
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(_, f)| order_of(&f))
            .collect())
    }
}

/// A stock figure from Redis (an integer reply or text). A negative one means stock was
/// oversold (or set wrong by hand) and trips the oversell guard instead of being read as
/// zero; one that is not a figure at all, or beyond [`MAX_STOCK`], breaks that sale's
/// invariants too. Both are the sale's trouble, not the store's: they never count as the
/// store being down (which would open the one breaker every sale shares).
fn stock_figure(v: &Value, sku: &Sku) -> Result<u64, StoreError> {
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
fn reserve_reply(reply: &[Value], sku: &Sku) -> Result<ReserveReply, StoreError> {
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

/// Most pages of a deliverer's own pending entries read in one claim.
const MAX_PAGES: usize = 64;

/// Most orders taken over from one gone deliverer per call; the rest go next round.
const TAKE_OVER_BATCH: usize = 1000;

/// The consumer group of gateway deliverers on every outbox stream.
const DELIVERERS: &str = "flashgate-deliverers";

fn order_of(f: &HashMap<String, String>) -> Option<Order> {
    Some(Order {
        order_id: OrderId::parse(f.get("order_id")?)?,
        sku: f.get("sku")?.clone(),
        user_id: f.get("user_id")?.clone(),
        quantity: f.get("quantity")?.parse().ok()?,
        reserved_at: f.get("reserved_at")?.parse().ok()?,
    })
}

/// The elements of an array reply (empty for anything else, e.g. nil).
fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) => items,
        _ => &[],
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Stream entries `[[id, [field, value, …]], …]`; entries deleted meanwhile (nil fields)
/// are skipped.
fn entries_of(v: &Value) -> Vec<(String, HashMap<String, String>)> {
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

impl Store for RedisStore {
    fn init_stock(
        &self,
        sku: &Sku,
        stock: u64,
        remembers: Option<&Epoch>,
    ) -> StoreFuture<'_, StockLoad> {
        let k = self.keys(sku);
        let (sku, remembers) = (sku.clone(), remembers.cloned());
        Box::pin(async move {
            let mut c = self.conn().await?;
            let reply: Vec<Value> = self
                .exec(
                    self.scripts
                        .load_stock
                        .key(k.stock())
                        .key(k.epoch())
                        .arg(stock)
                        .arg(Epoch::initial().as_str())
                        .arg(remembers.as_ref().map_or("", Epoch::as_str))
                        .invoke_async(&mut c),
                )
                .await?;
            let field = |i: usize| reply.get(i).and_then(text).unwrap_or_default();
            let units = || match reply.get(1) {
                Some(v) => stock_figure(v, &sku),
                None => Err(unavailable("load_stock answered without a figure")),
            };
            match field(0).as_str() {
                "held" => Ok(StockLoad::Held {
                    units: units()?,
                    epoch: Epoch::from_store(&field(2)),
                }),
                "created" => Ok(StockLoad::Created {
                    units: units()?,
                    epoch: Epoch::from_store(&field(2)),
                }),
                "lost" => Ok(StockLoad::Lost),
                other => Err(unavailable(format!("unexpected load outcome `{other}`"))),
            }
        })
    }

    fn mark_lost(&self, sku: &Sku, epoch: &Epoch) -> StoreFuture<'_, ()> {
        let k = self.keys(sku);
        let tombstone = format!("lost-{epoch}");
        Box::pin(async move {
            let mut c = self.conn().await?;
            let _: i64 = self
                .exec(
                    self.scripts
                        .mark_lost
                        .key(k.stock())
                        .key(k.epoch())
                        .arg(&tombstone)
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(())
        })
    }

    fn set_stock(&self, sku: &Sku, stock: u64) -> StoreFuture<'_, Epoch> {
        let k = self.keys(sku);
        Box::pin(async move {
            if stock > MAX_STOCK {
                return Err(StoreError::OutOfRange { units: stock });
            }
            let epoch = Epoch::loaded();
            let mut c = self.conn().await?;
            let _: String = self
                .exec(
                    self.scripts
                        .set_stock
                        .key(k.stock())
                        .key(k.epoch())
                        .arg(stock)
                        .arg(epoch.as_str())
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(epoch)
        })
    }

    fn add_stock(&self, sku: &Sku, delta: i64) -> StoreFuture<'_, u64> {
        let k = self.keys(sku);
        let sku = sku.clone();
        Box::pin(async move {
            let mut c = self.conn().await?;
            let reply: Vec<Value> = self
                .exec(
                    self.scripts
                        .add_stock
                        .key(k.stock())
                        .arg(delta)
                        .arg(MAX_STOCK)
                        .invoke_async(&mut c),
                )
                .await?;
            let units = match reply.get(1) {
                Some(v) => stock_figure(v, &sku)?,
                None => 0,
            };
            match reply.first().and_then(text).as_deref() {
                Some("added") => Ok(units),
                Some("out_of_range") => Err(StoreError::OutOfRange { units }),
                _ => Err(StoreError::UnknownSale(sku)),
            }
        })
    }

    fn stock(&self, sku: &Sku) -> StoreFuture<'_, StockReading> {
        let k = self.keys(sku);
        let sku = sku.clone();
        Box::pin(async move {
            let mut c = self.conn().await?;
            let (units, epoch): (Option<Value>, Option<String>) = self
                .exec(
                    redis::cmd("MGET")
                        .arg(k.stock())
                        .arg(k.epoch())
                        .query_async(&mut c),
                )
                .await?;
            match units {
                Some(Value::Nil) | None => Err(StoreError::UnknownSale(sku)),
                Some(v) => Ok(StockReading {
                    units: stock_figure(&v, &sku)?,
                    epoch: epoch.as_deref().map(Epoch::from_store),
                }),
            }
        })
    }

    fn reserve(&self, req: &ReserveRequest) -> StoreFuture<'_, ReserveReply> {
        let req = req.clone();
        Box::pin(async move { self.reserve_now(&req).await })
    }

    fn outbox(&self, sku: &Sku, max: usize) -> StoreFuture<'_, Vec<Order>> {
        let sku = sku.clone();
        Box::pin(async move { self.outbox_now(&sku, max).await })
    }

    fn claim(
        &self,
        sku: &Sku,
        consumer: &str,
        max: usize,
        claim_idle: Duration,
    ) -> StoreFuture<'_, Claimed> {
        let (sku, consumer) = (sku.clone(), consumer.to_owned());
        Box::pin(async move { self.claim_now(&sku, &consumer, max, claim_idle).await })
    }

    fn replay(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        unspent: Unspent,
    ) -> StoreFuture<'_, Option<ReserveReply>> {
        let k = self.keys(sku);
        let (sku, token, user) = (sku.clone(), *token, user.clone());
        Box::pin(async move {
            let mut c = self.conn().await?;
            let reply: Vec<Value> = self
                .exec(
                    self.scripts
                        .replay
                        .key(k.token(&token))
                        .key(k.stock())
                        .arg(user.as_str())
                        .arg(k.order_prefix())
                        .arg(match unspent {
                            Unspent::Leave => "",
                            Unspent::SpendAsSoldOut => "spend",
                        })
                        .arg(self.replay_ttl_ms())
                        .arg(token.expires_ms())
                        .invoke_async(&mut c),
                )
                .await?;
            if reply.first().and_then(text).as_deref() == Some("none") {
                return Ok(None);
            }
            reserve_reply(&reply, &sku).map(Some)
        })
    }

    fn touch(
        &self,
        sku: &Sku,
        consumer: &str,
        orders: &[OrderId],
    ) -> StoreFuture<'_, Vec<OrderId>> {
        let k = self.keys(sku);
        let (consumer, orders) = (consumer.to_owned(), orders.to_vec());
        Box::pin(async move {
            if orders.is_empty() {
                return Ok(orders);
            }
            let mut script = self.scripts.touch.key(k.outbox());
            for id in &orders {
                script.key(k.order(id));
            }
            script.arg(DELIVERERS).arg(&consumer);
            let mut c = self.conn().await?;
            let owned: Vec<usize> = self.exec(script.invoke_async(&mut c)).await?;
            Ok(owned
                .into_iter()
                .filter_map(|i| orders.get(i.wrapping_sub(1)).copied())
                .collect())
        })
    }

    fn confirm(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        consumer: &str,
    ) -> StoreFuture<'_, Confirmation> {
        let k = self.keys(sku);
        let (id, consumer) = (*order_id, consumer.to_owned());
        Box::pin(async move {
            let mut c = self.conn().await?;
            let done: String = self
                .exec(
                    self.scripts
                        .confirm
                        .key(k.order(&id))
                        .key(k.outbox())
                        .arg(DELIVERERS)
                        .arg(&consumer)
                        .arg(self.replay_ttl_ms())
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(match done.as_str() {
                "confirmed" => Confirmation::Confirmed,
                "already_confirmed" => Confirmation::AlreadyConfirmed,
                "compensated" => Confirmation::Compensated,
                "not_owner" => Confirmation::NotOwner,
                _ => Confirmation::Unknown,
            })
        })
    }

    fn compensate(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        consumer: &str,
    ) -> StoreFuture<'_, Compensation> {
        let k = self.keys(sku);
        let (id, consumer, sku) = (*order_id, consumer.to_owned(), sku.clone());
        Box::pin(async move {
            let mut c = self.conn().await?;
            let reply: Vec<Value> = self
                .exec(
                    self.scripts
                        .compensate
                        .key(k.order(&id))
                        .key(k.stock())
                        .key(k.buyers())
                        .key(k.outbox())
                        .arg(DELIVERERS)
                        .arg(&consumer)
                        .arg(self.replay_ttl_ms())
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(match reply.first().and_then(text).as_deref() {
                Some("restored") => Compensation::Restored {
                    remaining: match reply.get(1) {
                        Some(v) => stock_figure(v, &sku)?,
                        None => 0,
                    },
                },
                Some("already_failed") => Compensation::AlreadyFailed,
                Some("confirmed") => Compensation::Confirmed,
                Some("not_owner") => Compensation::NotOwner,
                Some("no_stock") => return Err(StoreError::UnknownSale(sku)),
                _ => Compensation::Unknown,
            })
        })
    }

    fn hold_token(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        ticket: &TicketId,
        until_ms: u64,
    ) -> StoreFuture<'_, TokenHold> {
        let k = self.keys(sku);
        let (sku, token, user, ticket) = (sku.clone(), *token, user.clone(), *ticket);
        Box::pin(async move {
            let mut c = self.conn().await?;
            let reply: Vec<Value> = self
                .exec(
                    self.scripts
                        .hold_token
                        .key(k.token(&token))
                        .key(k.hold(&token))
                        .key(k.ticket(&ticket))
                        .arg(user.as_str())
                        .arg(ticket.as_str())
                        .arg(token.as_str())
                        .arg(until_ms)
                        .arg(k.order_prefix())
                        .invoke_async(&mut c),
                )
                .await?;
            match reply.first().and_then(text).as_deref() {
                Some("held") => Ok(TokenHold::Held),
                Some("queued") => reply
                    .get(1)
                    .and_then(text)
                    .and_then(|t| TicketId::parse(&t))
                    .map(TokenHold::Queued)
                    .ok_or_else(|| StoreError::Rejected("a token's hold names no ticket".into())),
                Some("spent") => {
                    reserve_reply(reply.get(1..).unwrap_or_default(), &sku).map(TokenHold::Spent)
                }
                _ => Err(StoreError::Rejected("unexpected hold_token reply".into())),
            }
        })
    }

    fn release_token(&self, sku: &Sku, token: &Token, ticket: &TicketId) -> StoreFuture<'_, ()> {
        let k = self.keys(sku);
        let (token, ticket) = (*token, *ticket);
        Box::pin(async move {
            let mut c = self.conn().await?;
            let _: i64 = self
                .exec(
                    self.scripts
                        .release_token
                        .key(k.hold(&token))
                        .key(k.ticket(&ticket))
                        .arg(ticket.as_str())
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(())
        })
    }

    fn ticket_record(&self, sku: &Sku, ticket: &TicketId) -> StoreFuture<'_, Option<TicketRecord>> {
        let k = self.keys(sku);
        let (sku, ticket) = (sku.clone(), *ticket);
        Box::pin(async move {
            let mut c = self.conn().await?;
            let reply: Vec<Value> = self
                .exec(
                    self.scripts
                        .ticket_record
                        .key(k.ticket(&ticket))
                        .arg(k.token_prefix())
                        .arg(k.order_prefix())
                        .invoke_async(&mut c),
                )
                .await?;
            match reply.first().and_then(text).as_deref() {
                Some("none") => Ok(None),
                Some("queued") => Ok(Some(TicketRecord::Queued)),
                _ => reserve_reply(&reply, &sku).map(|r| Some(TicketRecord::Decided(r))),
            }
        })
    }

    fn take_over(
        &self,
        sku: &Sku,
        consumer: &str,
        live: &[String],
        min_idle: Duration,
    ) -> StoreFuture<'_, Vec<OrderId>> {
        let stream = self.keys(sku).outbox();
        let (consumer, live) = (consumer.to_owned(), live.to_vec());
        Box::pin(async move {
            let mut c = self.conn().await?;
            let min_idle_ms = min_idle.as_millis().min(u128::from(u64::MAX)) as u64;
            // The summary names every deliverer holding orders; no group, nothing held.
            let summary: Value = match self
                .exec(
                    redis::cmd("XPENDING")
                        .arg(&stream)
                        .arg(DELIVERERS)
                        .query_async(&mut c),
                )
                .await
            {
                Ok(v) => v,
                // No deliverer has read this outbox yet: nobody's orders to take.
                Err(StoreError::Rejected(e) | StoreError::Unavailable(e))
                    if e.contains("NOGROUP") =>
                {
                    return Ok(Vec::new())
                }
                Err(e) => return Err(e),
            };
            let gone: Vec<String> = items(&summary)
                .get(3)
                .map(items)
                .unwrap_or_default()
                .iter()
                .filter_map(|pair| text(items(pair).first()?))
                .filter(|name| *name != consumer && !live.contains(name))
                .collect();
            let mut taken = Vec::new();
            for name in gone {
                let pending: Value = self
                    .exec(
                        redis::cmd("XPENDING")
                            .arg(&stream)
                            .arg(DELIVERERS)
                            .arg("IDLE")
                            .arg(min_idle_ms)
                            .arg("-")
                            .arg("+")
                            .arg(TAKE_OVER_BATCH)
                            .arg(&name)
                            .query_async(&mut c),
                    )
                    .await?;
                let ids: Vec<String> = items(&pending)
                    .iter()
                    .filter_map(|e| text(items(e).first()?))
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                // XCLAIM checks the idle time again, atomically: an order its deliverer
                // touched meanwhile stays with it.
                let claimed: Value = self
                    .exec(
                        redis::cmd("XCLAIM")
                            .arg(&stream)
                            .arg(DELIVERERS)
                            .arg(&consumer)
                            .arg(min_idle_ms)
                            .arg(&ids)
                            .query_async(&mut c),
                    )
                    .await?;
                taken.extend(
                    entries_of(&claimed)
                        .iter()
                        .filter_map(|(_, f)| f.get("order_id").and_then(|id| OrderId::parse(id))),
                );
            }
            Ok(taken)
        })
    }

    fn share_pending(
        &self,
        sku: &Sku,
        me: &str,
        pending: u64,
        ttl: Duration,
    ) -> StoreFuture<'_, u64> {
        let k = self.keys(sku);
        let me = me.to_owned();
        Box::pin(async move {
            let mut c = self.conn().await?;
            self.exec(
                self.scripts
                    .share_pending
                    .key(k.pending())
                    .arg(&me)
                    .arg(pending)
                    .arg(ttl.as_millis().min(u128::from(u64::MAX)) as u64)
                    .invoke_async(&mut c),
            )
            .await
        })
    }

    fn lease_drain(&self, sku: &Sku, want: u32, rate: u32) -> StoreFuture<'_, DrainLease> {
        let k = self.keys(sku);
        Box::pin(async move {
            let mut c = self.conn().await?;
            let (granted, rate, next_in_us): (u32, u32, u64) = self
                .exec(
                    self.scripts
                        .lease_drain
                        .key(k.drain())
                        .key(k.drain_rate())
                        .arg(want)
                        .arg(rate)
                        .arg(super::lease::LEASE_PERIOD.as_micros() as u64)
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(DrainLease {
                granted,
                rate,
                next_in: Duration::from_micros(next_in_us),
            })
        })
    }

    fn set_drain_rate(&self, sku: &Sku, rate: u32) -> StoreFuture<'_, ()> {
        let k = self.keys(sku);
        Box::pin(async move {
            let mut c = self.conn().await?;
            self.exec(c.set::<_, _, ()>(k.drain_rate(), rate.max(1)))
                .await
        })
    }

    fn claim_layout(&self, layout: u32) -> StoreFuture<'_, ()> {
        let key = format!("{}:layout", self.prefix);
        Box::pin(async move {
            let mut c = self.conn().await?;
            let set: bool = self
                .exec(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(layout)
                        .arg("NX")
                        .query_async::<Option<String>>(&mut c),
                )
                .await?
                .is_some();
            if set {
                return Ok(());
            }
            // Not a string (a hand-made key, another program's): no layout of ours.
            let kind: String = self
                .exec(redis::cmd("TYPE").arg(&key).query_async(&mut c))
                .await?;
            let found = match kind.as_str() {
                "string" => self.exec(c.get::<_, Option<String>>(&key)).await?,
                // Gone since the SET: a store emptied meanwhile; the next start writes it.
                "none" => None,
                other => Some(format!("<a {other}>")),
            };
            match found {
                Some(found) if found != layout.to_string() => Err(StoreError::Layout {
                    // Shown in logs and errors: quoted, escaped, bounded.
                    found: format!("{:?}", found.chars().take(40).collect::<String>()),
                    expected: layout,
                }),
                _ => Ok(()),
            }
        })
    }

    fn set_control(&self, sku: &Sku, control: SaleControl) -> StoreFuture<'_, ()> {
        let k = self.keys(sku);
        let (field, value) = match control {
            SaleControl::Paused(p) => ("paused", u64::from(p)),
            SaleControl::Draining(d) => ("draining", u64::from(d)),
            SaleControl::Capacity(c) => ("capacity", c as u64),
        };
        Box::pin(async move {
            let mut c = self.conn().await?;
            self.exec(c.hset::<_, _, _, ()>(k.controls(), field, value))
                .await
        })
    }

    fn controls(&self, sku: &Sku) -> StoreFuture<'_, SaleControls> {
        let k = self.keys(sku);
        Box::pin(async move {
            let mut c = self.conn().await?;
            // Both keys carry the sale's hash tag: one node, one round trip.
            let (fields, rate): (HashMap<String, String>, Option<String>) = self
                .exec(
                    redis::pipe()
                        .hgetall(k.controls())
                        .get(k.drain_rate())
                        .query_async(&mut c),
                )
                .await?;
            // What does not parse (a hand edit) is as good as unset: the config holds.
            let flag = |name: &str| match fields.get(name).map(String::as_str) {
                Some("1") => Some(true),
                Some("0") => Some(false),
                _ => None,
            };
            Ok(SaleControls {
                paused: flag("paused"),
                draining: flag("draining"),
                capacity: fields.get("capacity").and_then(|c| c.parse().ok()),
                drain_rate: rate.and_then(|r| r.parse().ok()).filter(|&r| r > 0),
            })
        })
    }

    fn announce(&self, member: &Member, ttl: Duration) -> StoreFuture<'_, Vec<Member>> {
        let member = member.clone();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        Box::pin(async move { self.membership(&member, ttl_ms).await })
    }

    fn members(&self) -> StoreFuture<'_, Vec<Member>> {
        Box::pin(async move {
            let nobody = Member {
                id: String::new(),
                address: String::new(),
                incarnation: String::new(),
            };
            self.membership(&nobody, 0).await
        })
    }

    fn leave(&self, member: &Member) -> StoreFuture<'_, ()> {
        let member = member.clone();
        Box::pin(async move {
            match self.membership(&member, -1).await {
                // Another incarnation's entry is not ours to remove: nothing to do.
                Ok(_) | Err(StoreError::Rejected(_)) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            self.exec(redis::cmd("PING").query_async::<String>(&mut c))
                .await
                .map(|_| ())
        })
    }

    fn order_state(&self, sku: &Sku, order_id: &OrderId) -> StoreFuture<'_, Option<OrderState>> {
        let key = self.keys(sku).order(order_id);
        Box::pin(async move {
            let mut c = self.conn().await?;
            let state: Option<String> = self.exec(c.hget(&key, "state")).await?;
            Ok(state.as_deref().and_then(OrderState::parse))
        })
    }
}
