//! Partition leases, kept in the partitions' own streams (docs/cluster.md): the last message
//! of `{prefix}.p{n}.lease` names the node that holds partition n, and its sequence is that
//! node's term. A node takes a partition by writing its lease on the condition that the
//! subject's last sequence is still the one it read, so of two nodes taking it at once one
//! wins; and, once it holds leases, every save it makes is conditional on its term too
//! (`Nats-Expected-Last-Subject-Sequence-Subject`), checked as the batch commits in the
//! stream's replicated order. A node that lost a partition (another node took it while this
//! one was paused or cut off) therefore cannot write there any more, not even once.
//!
//! The server refuses a second batch conditional on one subject while the first is in
//! flight, so a partition's saves go one batch at a time: each waits for the one before.

use std::sync::{Arc, PoisonError};

use async_nats::jetstream::message::PublishMessage;
use metrics::counter;

use super::layout::StoredLease;
use super::{Inner, Nats, unavailable};
use crate::store::codec;
use crate::store::error::{Error, Result};
use crate::telemetry::names;

/// A partition's lease as the engine holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLease {
    /// Its sequence: the holder's term (0: never taken).
    pub term: u64,
    /// The holding node and its incarnation; empty: given up (or never taken).
    pub node: String,
    pub epoch: String,
}

impl Nats {
    /// From now on every save must be made under a partition lease this process took: saves
    /// in any other partition are refused (a cluster's nodes write only what they hold).
    pub fn require_leases(&self) {
        self.leased.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Partition `partition`'s lease, read from its stream's leader.
    pub async fn lease(&self, partition: u32) -> Result<PartitionLease> {
        let Some(found) = self.last_in(partition, &self.layout.lease(partition)).await? else {
            return Ok(PartitionLease { term: 0, node: String::new(), epoch: String::new() });
        };
        let stored: StoredLease = codec::decode("lease", &found.payload)?;
        Ok(PartitionLease { term: found.sequence, node: stored.node, epoch: stored.epoch })
    }

    /// Writes `node` (`epoch`) as the holder of `partition` if its lease is still the one
    /// at `term`; returns the new term, or `None` if another write came first. Taken, every
    /// save of this process in the partition is made under the new term. An empty `node`
    /// gives the partition up (this process saves nothing there any more).
    pub async fn write_lease(&self, partition: u32, node: &str, epoch: &str, term: u64) -> Result<Option<u64>> {
        // A save in flight under the old term finishes first: a give-up must come after it.
        let writer = Arc::clone(&self.writers[partition as usize]);
        let _one_at_a_time = writer.lock().await;
        let stored = StoredLease { node: node.to_owned(), epoch: epoch.to_owned() };
        let message =
            PublishMessage::build().payload(codec::encode(&stored).into()).expected_last_subject_sequence(term);
        counter!(names::NATS_REQUESTS, "op" => "lease").increment(1);
        let acked = match self.js.send_publish(self.layout.lease(partition), message).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let taken = match acked {
            Ok(ack) => ack.sequence,
            Err(e) if e.kind() == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence => {
                return Ok(None);
            }
            Err(e) => return Err(unavailable(e)),
        };
        let mut terms = self.terms.lock().unwrap_or_else(PoisonError::into_inner);
        if node.is_empty() {
            terms.remove(&partition);
        } else {
            terms.insert(partition, taken);
        }
        Ok(Some(taken))
    }

    /// Forgets the lease of `partition` (another node took it): saves there are refused.
    pub fn drop_lease(&self, partition: u32) {
        self.terms.lock().unwrap_or_else(PoisonError::into_inner).remove(&partition);
    }

    /// Partitions whose lease a save found taken by another node since the last call.
    pub fn lost_leases(&self) -> tokio::sync::broadcast::Receiver<u32> {
        self.lost.subscribe()
    }
}

impl Inner {
    /// The term saves in `partition` are made under; `None` if this process saves there
    /// without a lease (a store no cluster shares), `Err(Conflict)` if it must hold one and
    /// does not.
    pub(super) fn term(&self, partition: u32, key: &crate::domain::ContextKey) -> Result<Option<u64>> {
        if !self.leased.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(None);
        }
        match self.terms.lock().unwrap_or_else(PoisonError::into_inner).get(&partition) {
            Some(term) => Ok(Some(*term)),
            None => Err(Error::Conflict { context: key.id.to_string() }),
        }
    }

    /// After a save was refused under `term`: whether the partition's lease moved on (this
    /// process lost it; every later save there is refused and the cluster is told).
    pub(super) async fn lost_lease(&self, partition: u32, term: u64) -> Result<bool> {
        let now = self.last_in(partition, &self.layout.lease(partition)).await?;
        if now.is_some_and(|lease| lease.sequence == term) {
            return Ok(false);
        }
        self.terms.lock().unwrap_or_else(PoisonError::into_inner).remove(&partition);
        tracing::warn!(partition, term, "another node took the partition; this one writes nothing more there");
        let _ = self.lost.send(partition);
        Ok(true)
    }
}
