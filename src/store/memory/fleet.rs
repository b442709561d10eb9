//! The memory store's fleet steps ([`FleetSteps`]): readiness, key layout and membership.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::{ready, MemoryStore};
use crate::store::{FleetSteps, Member, StoreError, StoreFuture};

impl FleetSteps for MemoryStore {
    fn ping(&self) -> StoreFuture<'_, ()> {
        ready(Ok(()))
    }

    fn claim_layout(&self, _layout: u32) -> StoreFuture<'_, ()> {
        // Its state is this process's (and its own snapshot's): one build reads it.
        ready(Ok(()))
    }

    fn announce(&self, member: &Member, ttl: Duration) -> StoreFuture<'_, Vec<Member>> {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let taken = members.get(&member.id).is_some_and(|(held, expires)| {
            held.incarnation != member.incarnation && *expires > now
        });
        if taken {
            return ready(Err(StoreError::Rejected(format!(
                "instance id `{}` is held by another live instance",
                member.id
            ))));
        }
        // A TTL beyond what the clock can add is as good as forever.
        let expires = now
            .checked_add(ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        members.insert(member.id.clone(), (member.clone(), expires));
        ready(Ok(Self::live_members(&mut members)))
    }

    fn members(&self) -> StoreFuture<'_, Vec<Member>> {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        ready(Ok(Self::live_members(&mut members)))
    }

    fn leave(&self, member: &Member) -> StoreFuture<'_, ()> {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        if members
            .get(&member.id)
            .is_some_and(|(held, _)| held.incarnation == member.incarnation)
        {
            members.remove(&member.id);
        }
        ready(Ok(()))
    }
}
