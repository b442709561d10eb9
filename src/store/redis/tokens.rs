//! The Redis store's token steps ([`TokenSteps`]): spending a token (the order step), its
//! replays and holds.

use redis::{AsyncCommands, Value};

use super::reply::{held_by, reserve_reply, text};
use super::RedisStore;
use crate::store::{
    Entry, OrderState, Replay, ReserveReply, ReserveRequest, Spend, StoreError, StoreFuture,
    TicketRecord, TokenHold, TokenSteps, Unspent,
};
use crate::types::{OrderId, Sku, TicketId, Token, UserId};

impl TokenSteps for RedisStore {
    fn reserve(&self, req: &ReserveRequest) -> StoreFuture<'_, ReserveReply> {
        let req = req.clone();
        Box::pin(async move { self.reserve_now(&req).await })
    }

    fn replay(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        unspent: Unspent,
    ) -> StoreFuture<'_, Replay> {
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
                        .key(k.hold(&token))
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
            match reply.first().and_then(text).as_deref() {
                Some("none") => Ok(Replay::Unknown),
                Some("queued") => held_by(&reply).map(Replay::Queued),
                _ => reserve_reply(&reply, &sku).map(Replay::Spent),
            }
        })
    }

    fn hold_token(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        ticket: &TicketId,
        until_ms: u64,
        entry: Entry,
    ) -> StoreFuture<'_, TokenHold> {
        let k = self.keys(sku);
        let key = match entry {
            Entry::Back => String::new(),
            Entry::Prequeue(key) => key.to_string(),
        };
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
                        .key(k.line())
                        .key(k.prequeue())
                        .key(k.prequeue_users())
                        .arg(user.as_str())
                        .arg(ticket.as_str())
                        .arg(token.as_str())
                        .arg(until_ms)
                        .arg(k.order_prefix())
                        .arg(&key)
                        .invoke_async(&mut c),
                )
                .await?;
            match reply.first().and_then(text).as_deref() {
                Some("held") => match (reply.get(1), reply.get(2)) {
                    (Some(Value::Int(n)), Some(Value::Int(c))) => Ok(TokenHold::Held {
                        number: u64::try_from(*n).unwrap_or(0),
                        cursor: u64::try_from(*c).unwrap_or(0),
                    }),
                    _ => Err(StoreError::Rejected(
                        "hold_token gave no line number".into(),
                    )),
                },
                Some("prequeued") => Ok(TokenHold::Prequeued),
                Some("placed") => held_by(&reply).map(TokenHold::PlaceTaken),
                Some("queued") => held_by(&reply).map(TokenHold::Queued),
                Some("spent") => {
                    reserve_reply(reply.get(1..).unwrap_or_default(), &sku).map(TokenHold::Spent)
                }
                _ => Err(StoreError::Rejected("unexpected hold_token reply".into())),
            }
        })
    }

    fn release_token(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        ticket: &TicketId,
    ) -> StoreFuture<'_, ()> {
        let k = self.keys(sku);
        let (token, user, ticket) = (*token, user.clone(), *ticket);
        Box::pin(async move {
            let mut c = self.conn().await?;
            let _: i64 = self
                .exec(
                    self.scripts
                        .release_token
                        .key(k.hold(&token))
                        .key(k.line())
                        .key(k.prequeue())
                        .key(k.prequeue_users())
                        .arg(ticket.as_str())
                        .arg(user.as_str())
                        .invoke_async(&mut c),
                )
                .await?;
            Ok(())
        })
    }

    fn spend_sold_out(&self, sku: &Sku, spends: &[Spend]) -> StoreFuture<'_, ()> {
        let k = self.keys(sku);
        let spends = spends.to_vec();
        Box::pin(async move {
            if spends.is_empty() {
                return Ok(());
            }
            let mut c = self.conn().await?;
            let mut script = self.scripts.spend_sold_out.key(k.stock());
            script.arg(self.replay_ttl_ms());
            for s in &spends {
                script.key(k.token(&s.token)).key(k.hold(&s.token));
                script
                    .arg(s.user.as_str())
                    .arg(s.ticket.as_str())
                    .arg(s.token.expires_ms());
            }
            let _: i64 = self.exec(script.invoke_async(&mut c)).await?;
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

    fn order_state(&self, sku: &Sku, order_id: &OrderId) -> StoreFuture<'_, Option<OrderState>> {
        let key = self.keys(sku).order(order_id);
        Box::pin(async move {
            let mut c = self.conn().await?;
            let state: Option<String> = self.exec(c.hget(&key, "state")).await?;
            Ok(state.as_deref().and_then(OrderState::parse))
        })
    }
}
