//! The cluster's answers to what the runtime asks of [`Placement`]: taking a context (by
//! compare-and-set on its owners record), giving it up once its last save is written,
//! who holds it, and which orphaned runs are this node's share.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use metrics::gauge;
use tokio::sync::watch;
use tokio::time::Instant;

use super::records::{OwnerRecord, chosen, owner_key};
use super::{CLAIM_ATTEMPTS, Cluster, Inner, unavailable};
use crate::cluster::{Claim, Lease, Peer, Placement};
use crate::domain::ContextKey;
use crate::store;
// How long a claim waits for a cluster that does not answer (a leader being elected).
use crate::store::nats::PATIENCE;
use crate::telemetry::names;

impl Cluster {
    /// One attempt at [`Placement::claim`].
    pub(super) async fn try_claim(&self, key: &ContextKey) -> store::Result<Claim> {
        let inner = &self.inner;
        let standing = *inner.standing.borrow();
        {
            let mut held = Inner::lock(&inner.held);
            if let Some(entry) = held.get_mut(key) {
                entry.count += 1;
                return Ok(Claim::Mine(Lease { revision: entry.revision, standing }));
            }
        }
        // After this node's own write of the record (giving it up) is acknowledged: a read may
        // not show a write still being replicated, and "the record is mine" must be true.
        let lock = inner.key_lock(key);
        let _one_at_a_time = lock.lock().await;
        if let Some(entry) = Inner::lock(&inner.held).get_mut(key) {
            entry.count += 1;
            return Ok(Claim::Mine(Lease { revision: entry.revision, standing }));
        }
        let subject = owner_key(key);
        for _ in 0..CLAIM_ATTEMPTS {
            let registration = inner.registration();
            let mine = OwnerRecord { node: inner.me.clone(), epoch: registration.epoch.clone() };
            let (after, current) = inner.read_owner(&subject).await?;
            let owner = current.as_ref().map(|(_, record)| record);
            if let Some(owner) = owner {
                if *owner == mine {
                    let revision = current.as_ref().map_or(0, |(revision, _)| *revision);
                    return Ok(inner.hold(key, revision, standing));
                }
                if let Some(peer) = inner.is_live(owner) {
                    return Ok(Claim::Elsewhere(peer));
                }
                if let Some(peer) = inner.gone(owner).await? {
                    // Alive, says the cluster: this node's view of it lags.
                    return Ok(Claim::Elsewhere(peer));
                }
            }
            let wrote = inner.write_owner(&subject, Some(&mine), after).await?;
            if let Some(revision) = wrote {
                if let Some(owner) = owner {
                    tracing::info!(context = %key.id, from = %owner.node, "took over a context from a node that is gone");
                }
                return Ok(inner.hold(key, revision, standing));
            }
            // Another write came first (for this context or any other): look again.
            tokio::time::sleep(Duration::from_millis(rand::random_range(1..=10))).await;
        }
        Err(unavailable("owners", format!("context {} could not be taken for this node; try again", key.id)))
    }
}

#[async_trait]
impl Placement for Cluster {
    async fn claim(&self, key: &ContextKey) -> store::Result<Claim> {
        // While the cluster elects a leader (a server died) its buckets do not answer: wait,
        // as a save does, rather than fail the call.
        let give_up = Instant::now() + PATIENCE;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.try_claim(key).await {
                Err(store::Error::Unavailable(error)) if Instant::now() + pause < give_up => {
                    tracing::warn!(context = %key.id, %error, "the cluster did not answer a claim; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                outcome => return outcome,
            }
        }
    }

    async fn release(&self, key: &ContextKey, lease: Lease) {
        let inner = &self.inner;
        if lease.standing != *inner.standing.borrow() {
            // Void already: the leases of a lost standing were all dropped.
            return;
        }
        let revision = {
            let mut held = Inner::lock(&inner.held);
            let Some(entry) = held.get_mut(key) else { return };
            entry.count -= 1;
            if entry.count > 0 {
                return;
            }
            let revision = entry.revision;
            held.remove(key);
            gauge!(names::LEASES_HELD).decrement(1.0);
            revision
        };
        let lock = inner.key_lock(key);
        let held_lock = lock.lock().await;
        let subject = owner_key(key);
        for _ in 0..CLAIM_ATTEMPTS {
            let released = async {
                let (after, current) = inner.read_owner(&subject).await?;
                // Taken since by a node that found this one gone: it keeps it.
                if current.is_none_or(|(at, _)| at != revision) {
                    return Ok(true);
                }
                Ok::<_, store::Error>(inner.write_owner(&subject, None, after).await?.is_some())
            };
            match released.await {
                Ok(true) => break,
                Ok(false) => tokio::time::sleep(Duration::from_millis(rand::random_range(1..=10))).await,
                Err(error) => {
                    tracing::debug!(context = %key.id, %error, "did not give up the context's lease; it is taken over once this node is gone");
                    break;
                }
            }
        }
        drop(held_lock);
        inner.forget_lock(key, lock);
    }

    fn holder(&self, key: &ContextKey) -> Option<Peer> {
        let owner = Inner::lock(&self.inner.seen).get(key).cloned()?;
        self.inner.is_live(&owner).filter(|peer| peer.node != self.inner.me)
    }

    async fn kept(&self, key: &ContextKey) -> store::Result<bool> {
        let inner = &self.inner;
        // Held: a creation, or a release waiting for its last save to be written; not kept.
        if Inner::lock(&inner.held).contains_key(key) {
            return Ok(false);
        }
        // After a release of this node's in flight, as a claim reads.
        let lock = inner.key_lock(key);
        let held_lock = lock.lock().await;
        let kept = if Inner::lock(&inner.held).contains_key(key) {
            Ok(false)
        } else {
            let mine = OwnerRecord { node: inner.me.clone(), epoch: inner.registration().epoch };
            inner.read_owner(&owner_key(key)).await.map(|(_, current)| current.is_some_and(|(_, owner)| owner == mine))
        };
        drop(held_lock);
        inner.forget_lock(key, lock);
        kept
    }

    fn orphans(&self, candidates: Vec<ContextKey>) -> Vec<ContextKey> {
        let inner = &self.inner;
        let mut live: Vec<String> = Inner::lock(&inner.members)
            .iter()
            .filter(|(_, m)| m.seen.elapsed() <= inner.ttl)
            .map(|(node, _)| node.clone())
            .collect();
        if !live.contains(&inner.me) {
            live.push(inner.me.clone());
        }
        let seen = Inner::lock(&inner.seen);
        let mut waiting = Inner::lock(&inner.waiting);
        let now = Instant::now();
        let mut orphans = Vec::new();
        let mut still = HashMap::new();
        for key in candidates {
            let run_by = seen.get(&key).and_then(|owner| inner.is_live(owner));
            if run_by.is_some() {
                continue;
            }
            let since = waiting.get(&key).copied().unwrap_or(now);
            // The node the hash chooses takes it; any node does once it waited two TTLs.
            if chosen(&key, live.iter().map(String::as_str)) == Some(inner.me.as_str())
                || now.duration_since(since) > inner.ttl * 2
            {
                orphans.push(key);
            } else {
                still.insert(key, since);
            }
        }
        *waiting = still;
        orphans
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.changes.subscribe())
    }

    fn sweep_every(&self) -> Duration {
        self.inner.ttl / 2
    }

    fn standing(&self) -> watch::Receiver<u64> {
        self.inner.standing.subscribe()
    }

    async fn leave(&self) {
        let inner = &self.inner;
        inner.stopping.cancel();
        let registration = inner.registration();
        match inner.nodes.delete_expect_revision(&inner.me, Some(registration.revision)).await {
            Ok(()) => tracing::info!(node = %inner.me, "left the ctxd cluster"),
            Err(error) => {
                tracing::warn!(node = %inner.me, %error, "could not leave the cluster; the others see this node gone once its lease expires")
            }
        }
    }
}
