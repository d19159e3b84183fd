//! Membership: which nodes are alive and where to reach them. Each node keeps its key in the
//! `{prefix}_nodes` bucket alive (a heartbeat every third of the lease TTL), follows the
//! bucket to know the others, and loses its standing — every context it runs — when it
//! could not renew for three quarters of a TTL. With a cluster secret, a record not signed
//! with it is no node's.

use std::sync::Arc;

use async_nats::jetstream::kv;
use metrics::{counter, gauge};
use tokio::time::Instant;

use super::records::{NodeRecord, OwnerRecord};
use super::{Inner, Member, new_epoch, unavailable};
use crate::cluster::Peer;
use crate::domain::shown;
use crate::store;
use crate::telemetry::names;

impl Inner {
    /// Renews this node's key every third of the TTL. A node that could not renew it for
    /// three quarters of the TTL stops every context it runs (another node may take them
    /// once the key expires) and registers again as a new incarnation.
    pub(super) async fn heartbeat(self: Arc<Self>) {
        let every = self.ttl / 3;
        let mut pause = every;
        loop {
            tokio::select! {
                () = self.stopping.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            // After a failure, again soon: a cluster that recovers is told at once.
            pause = self.ttl / 12;
            let registration = self.registration();
            let record = self.record(registration.epoch.clone());
            let sent = Instant::now();
            let renewed =
                tokio::time::timeout(every, self.nodes.update(&self.me, record.encode(), registration.revision)).await;
            match renewed {
                Ok(Ok(revision)) => {
                    let mut current = Self::lock(&self.registration);
                    current.revision = revision;
                    current.renewed = sent;
                    pause = every;
                    continue;
                }
                Ok(Err(error)) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // Expired while unreachable, or another process registered under this id.
                    tracing::warn!(node = %self.me, %error, "this node's place in the cluster changed under it");
                    self.lose_standing().await;
                    pause = every;
                    continue;
                }
                Ok(Err(error)) => {
                    tracing::warn!(node = %self.me, %error, "could not renew this node's place in the cluster")
                }
                Err(_) => tracing::warn!(node = %self.me, "the cluster did not answer this node's heartbeat in time"),
            }
            if registration.renewed.elapsed() > self.ttl * 3 / 4 {
                self.lose_standing().await;
                pause = every;
            }
        }
    }

    /// Gives up every lease at once (the actors see the standing change and stop), then
    /// registers as a new incarnation, trying until the cluster takes it.
    pub(super) async fn lose_standing(&self) {
        tracing::error!(node = %self.me, "this node lost its place in the cluster: stopping every context it runs");
        counter!(names::STANDING_LOST).increment(1);
        let dropped = std::mem::take(&mut *Self::lock(&self.held)).len();
        gauge!(names::LEASES_HELD).decrement(dropped as f64);
        let epoch = new_epoch();
        {
            let mut registration = Self::lock(&self.registration);
            registration.epoch.clone_from(&epoch);
        }
        self.standing.send_modify(|n| *n = n.wrapping_add(1));
        let record = self.record(epoch);
        loop {
            let sent = Instant::now();
            match self.nodes.put(&self.me, record.encode()).await {
                Ok(revision) => {
                    let mut registration = Self::lock(&self.registration);
                    registration.revision = revision;
                    registration.renewed = sent;
                    tracing::info!(node = %self.me, "registered again in the cluster");
                    return;
                }
                Err(error) => {
                    tracing::warn!(node = %self.me, %error, "cannot register in the cluster; retrying");
                    tokio::select! {
                        () = self.stopping.cancelled() => return,
                        () = tokio::time::sleep(self.ttl / 3) => {}
                    }
                }
            }
        }
    }

    /// Follows the nodes bucket: who is alive, where to reach them. A node whose key has not
    /// been renewed for a TTL is taken for gone (nats-server 2.9 deletes expired keys without
    /// telling watchers).
    pub(super) async fn watch_nodes(self: Arc<Self>) {
        let every = self.ttl / 4;
        self.follow(
            &self.nodes,
            "the cluster's nodes",
            |entry| self.member_entry(entry),
            every,
            || self.expire_members(),
        )
        .await;
    }

    /// This node's membership record in incarnation `epoch`.
    pub(super) fn record(&self, epoch: String) -> NodeRecord {
        NodeRecord::signed(&self.me, epoch, self.addr.clone(), self.key.as_deref())
    }

    /// A node's record as this node reads it: none if it is not a node of this cluster's
    /// (with a secret, a record not signed with it is someone posing as a node).
    pub(super) fn member_record(&self, entry: &kv::Entry) -> Option<NodeRecord> {
        let record = NodeRecord::decode(&entry.key, &entry.value, self.key.as_deref());
        if record.is_none() && entry.operation == kv::Operation::Put && self.refused_members.admit("member").is_some() {
            tracing::warn!(node = %shown(&entry.key), "ignoring a node record not signed with this cluster's secret");
            counter!(names::MEMBERS_REFUSED).increment(1);
        }
        record
    }

    pub(super) fn member_entry(&self, entry: kv::Entry) {
        let record = self.member_record(&entry);
        let mut members = Self::lock(&self.members);
        let changed = match (entry.operation, record) {
            (kv::Operation::Put, Some(record)) => {
                let member = Member { epoch: record.epoch, addr: record.addr, seen: Instant::now() };
                let known = members.insert(entry.key.clone(), member.clone());
                known.is_none_or(|known| known.epoch != member.epoch)
            }
            _ => members.remove(&entry.key).is_some(),
        };
        gauge!(names::CLUSTER_NODES).set(members.len() as f64);
        drop(members);
        if changed {
            tracing::info!(node = %entry.key, joined = matches!(entry.operation, kv::Operation::Put), "the cluster's nodes changed");
            self.changed();
        }
    }

    pub(super) fn expire_members(&self) {
        let mut members = Self::lock(&self.members);
        let before = members.len();
        members.retain(|node, member| {
            let alive = node == &self.me || member.seen.elapsed() <= self.ttl;
            if !alive {
                tracing::warn!(node = %node, "a node stopped renewing its place in the cluster: taking it for gone");
            }
            alive
        });
        let after = members.len();
        gauge!(names::CLUSTER_NODES).set(after as f64);
        drop(members);
        if after != before {
            self.changed();
        }
    }

    /// Whether the cluster itself says `owner` is gone: its key expired or was deleted, or
    /// names a newer incarnation. Asked before taking a context from it, so a watch that
    /// lags (this node cut off for a while) never makes it take a live node's context.
    pub(super) async fn gone(&self, owner: &OwnerRecord) -> Result<Option<Peer>, store::Error> {
        if owner.node.is_empty() {
            return Ok(None);
        }
        let entry = self.nodes.entry(owner.node.clone()).await.map_err(|e| unavailable("nodes", e))?;
        // Decoded as the watch does, but not counted again: the watch counted each record.
        let record = entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| NodeRecord::decode(&e.key, &e.value, self.key.as_deref()));
        match record {
            Some(record) if record.epoch == owner.epoch => {
                Ok(Some(Peer { node: owner.node.clone(), addr: record.addr }))
            }
            _ => Ok(None),
        }
    }
}
