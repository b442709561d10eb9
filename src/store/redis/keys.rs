//! One sale's key names. Every key of a sale shares the hash tag `{sku}`, so each script
//! touches one Redis Cluster slot; what each holds is docs/contract.md's "Store layout".

use crate::types::{OrderId, TicketId, Token};

/// One sale's key names.
pub(super) struct Keys {
    pub(super) base: String,
}

impl Keys {
    pub(super) fn stock(&self) -> String {
        format!("{}:stock", self.base)
    }
    pub(super) fn epoch(&self) -> String {
        format!("{}:epoch", self.base)
    }
    /// What an order's key starts with; scripts that find an order id in a token's
    /// record build its key from this (same hash tag, same slot).
    pub(super) fn order_prefix(&self) -> String {
        format!("{}:order:", self.base)
    }
    pub(super) fn token(&self, t: &Token) -> String {
        format!("{}:tok:{t}", self.base)
    }
    /// What a token record's key starts with (scripts that find a token in a ticket's
    /// record build the key from this).
    pub(super) fn token_prefix(&self) -> String {
        format!("{}:tok:", self.base)
    }
    pub(super) fn hold(&self, t: &Token) -> String {
        format!("{}:hold:{t}", self.base)
    }
    pub(super) fn ticket(&self, t: &TicketId) -> String {
        format!("{}:ticket:{t}", self.base)
    }
    pub(super) fn buyers(&self) -> String {
        format!("{}:buyers", self.base)
    }
    pub(super) fn order(&self, id: &OrderId) -> String {
        format!("{}:order:{id}", self.base)
    }
    pub(super) fn outbox(&self) -> String {
        format!("{}:outbox", self.base)
    }
    pub(super) fn drain(&self) -> String {
        format!("{}:drain", self.base)
    }
    pub(super) fn line(&self) -> String {
        format!("{}:line", self.base)
    }
    pub(super) fn prequeue(&self) -> String {
        format!("{}:prequeue", self.base)
    }
    pub(super) fn prequeue_users(&self) -> String {
        format!("{}:prequeue_users", self.base)
    }
    pub(super) fn drain_rate(&self) -> String {
        format!("{}:drain_rate", self.base)
    }
    pub(super) fn pending(&self) -> String {
        format!("{}:pending", self.base)
    }
    pub(super) fn controls(&self) -> String {
        format!("{}:controls", self.base)
    }
}
