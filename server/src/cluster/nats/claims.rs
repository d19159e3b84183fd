//! The cluster's answers to what the runtime asks of [`Placement`]: a context is this node's
//! while it holds the context's partition; otherwise its calls go to the node whose
//! heartbeat says it holds it (or, while none does, the node it is meant for).

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::records::chosen;
use super::{Cluster, Inner};
use crate::cluster::{Claim, Lease, Peer, Placement};
use crate::domain::ContextKey;
use crate::store;

impl Cluster {
    fn partition(&self, key: &ContextKey) -> u32 {
        key.partition(self.inner.store.partitions())
    }

    /// A claim of `partition` if this node holds it (and is not handing it over).
    fn hold(&self, partition: u32) -> Option<Claim> {
        let standing = *self.inner.standing.borrow();
        let mut held = Inner::lock(&self.inner.held);
        let entry = held.get_mut(&partition).filter(|h| !h.releasing)?;
        entry.count += 1;
        Some(Claim::Mine(Lease { revision: entry.term, standing }))
    }
}

#[async_trait]
impl Placement for Cluster {
    async fn claim(&self, key: &ContextKey) -> store::Result<Claim> {
        let inner = &self.inner;
        let partition = self.partition(key);
        if let Some(claim) = self.hold(partition) {
            return Ok(claim);
        }
        if let Some(peer) = inner.holder_of(partition) {
            return Ok(Claim::Elsewhere(peer));
        }
        let live = inner.live();
        let meant_for = chosen(partition, live.iter().map(String::as_str)).unwrap_or(&inner.me).to_owned();
        if meant_for == inner.me
            && inner.take(partition).await
            && let Some(claim) = self.hold(partition)
        {
            return Ok(claim);
        }
        match inner.peer(&meant_for) {
            Some(peer) => Ok(Claim::Elsewhere(peer)),
            None => Err(store::Error::Unavailable(format!(
                "no node holds the partition of context {} yet; try again",
                key.id
            ))),
        }
    }

    async fn release(&self, key: &ContextKey, lease: Lease) {
        let partition = self.partition(key);
        let mut held = Inner::lock(&self.inner.held);
        if let Some(entry) = held.get_mut(&partition).filter(|h| h.term == lease.revision) {
            entry.count = entry.count.saturating_sub(1);
        }
    }

    fn valid(&self, key: &ContextKey, lease: Lease) -> bool {
        let partition = self.partition(key);
        lease.standing == *self.inner.standing.borrow()
            && Inner::lock(&self.inner.held).get(&partition).is_some_and(|h| h.term == lease.revision && !h.releasing)
    }

    fn holder(&self, key: &ContextKey) -> Option<Peer> {
        self.inner.holder_of(self.partition(key))
    }

    async fn kept(&self, key: &ContextKey) -> store::Result<bool> {
        let partition = self.partition(key);
        Ok(Inner::lock(&self.inner.held).get(&partition).is_some_and(|h| !h.releasing))
    }

    fn orphans(&self, candidates: Vec<ContextKey>) -> Vec<ContextKey> {
        let held = Inner::lock(&self.inner.held);
        candidates.into_iter().filter(|key| held.get(&self.partition(key)).is_some_and(|h| !h.releasing)).collect()
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.changes.subscribe())
    }

    fn sweep_every(&self) -> Duration {
        // Runs are orphaned only when a partition changes hands, and taking one sweeps at
        // once (`changes`): the periodic sweep is a safety net (a resume that failed), and
        // scanning every partition's run markers is not free.
        self.inner.ttl * 10
    }

    fn standing(&self) -> watch::Receiver<u64> {
        self.inner.standing.subscribe()
    }

    async fn leave(&self) {
        let inner = &self.inner;
        inner.stopping.cancel();
        let _one_at_a_time = inner.balancing.lock().await;
        let held: Vec<(u32, u64)> = Inner::lock(&inner.held).iter().map(|(p, h)| (*p, h.term)).collect();
        futures::future::join_all(held.into_iter().map(|(partition, term)| inner.release_lease(partition, term))).await;
        inner.say_goodbye().await;
        tracing::info!(node = %inner.me, "left the ctxd cluster");
    }
}
