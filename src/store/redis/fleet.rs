//! The Redis store's fleet steps ([`FleetSteps`]): readiness, key layout and membership.

use std::time::Duration;

use redis::AsyncCommands;

use super::RedisStore;
use crate::store::{FleetSteps, Member, StoreError, StoreFuture};

impl FleetSteps for RedisStore {
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut c = self.conn().await?;
            self.exec(redis::cmd("PING").query_async::<String>(&mut c))
                .await
                .map(|_| ())
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
}
