//! Membership: which nodes are alive and where to reach them. Each node publishes a
//! heartbeat on core NATS (`{prefix}.nodes.{node}`) every sixth of the lease TTL (at most
//! every half second) and listens
//! to the others'; a node not heard from for a TTL is gone. Core NATS keeps flowing while a
//! JetStream stream elects a leader, so a NATS server's failover does not make healthy nodes
//! look dead. A node cut off from NATS for three quarters of a TTL stops everything it runs
//! (the others will take its partitions) and comes back as a new incarnation. With a cluster
//! secret, a heartbeat not signed with it is no node's.

use std::sync::Arc;

use futures::StreamExt;
use metrics::{counter, gauge};
use tokio::time::Instant;

use super::records::NodeRecord;
use super::{Inner, Member, new_epoch};
use crate::domain::shown;
use crate::store;
use crate::telemetry::names;

impl Inner {
    fn subject(&self, node: &str) -> String {
        format!("{}.nodes.{node}", self.prefix)
    }

    /// This node's heartbeat now.
    fn record(&self, leaving: bool) -> NodeRecord {
        let mut record = NodeRecord::signed(&self.me, self.epoch(), self.addr.clone(), self.key.as_deref());
        record.partitions = if leaving { Vec::new() } else { self.held_partitions() };
        record.ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        record.leaving = leaving;
        record
    }

    /// Subscribes to every node's heartbeats.
    pub(super) async fn listen(&self) -> Result<async_nats::Subscriber, store::Error> {
        self.client
            .subscribe(self.subject("*"))
            .await
            .map_err(|e| store::Error::Unavailable(format!("NATS: cannot hear the cluster's nodes: {e}")))
    }

    /// Publishes this node's heartbeat every beat. A node that could not reach NATS for
    /// three quarters of a TTL loses its standing: the others take it for dead and take its
    /// partitions, so it must stop writing before they do.
    pub(super) async fn heartbeat(self: Arc<Self>) {
        let mut last_sent = Instant::now();
        loop {
            tokio::select! {
                () = self.stopping.cancelled() => return,
                () = tokio::time::sleep(self.beat()) => {}
            }
            let connected = self.client.connection_state() == async_nats::connection::State::Connected;
            let sent =
                connected && self.client.publish(self.subject(&self.me), self.record(false).encode()).await.is_ok();
            if sent {
                last_sent = Instant::now();
            } else if last_sent.elapsed() > self.ttl * 3 / 4 && !self.held_partitions().is_empty() {
                self.lose_standing();
            }
        }
    }

    /// Tells the others this node is leaving (its partitions are given up already).
    pub(super) async fn say_goodbye(&self) {
        if let Err(error) = self.client.publish(self.subject(&self.me), self.record(true).encode()).await {
            tracing::warn!(node = %self.me, %error, "could not tell the cluster this node leaves; the others find it gone after a TTL");
        }
        let _ = self.client.flush().await;
    }

    /// Drops every partition at once (the actors see the standing change and stop), and
    /// comes back as a new incarnation, which takes partitions again once it is heard.
    pub(super) fn lose_standing(&self) {
        tracing::error!(node = %self.me, "this node could not reach the cluster in time: stopping every context it runs");
        counter!(names::STANDING_LOST).increment(1);
        let dropped: Vec<u32> = std::mem::take(&mut *Self::lock(&self.held)).into_keys().collect();
        for partition in &dropped {
            self.store.drop_lease(*partition);
        }
        gauge!(names::LEASES_HELD).set(0.0);
        *Self::lock(&self.epoch) = new_epoch();
        self.standing.send_modify(|n| *n = n.wrapping_add(1));
        self.changed();
    }

    /// A node's heartbeat as this node reads it: none if it is not a node of this cluster's
    /// (with a secret, a record not signed with it is someone posing as a node).
    fn member_record(&self, node: &str, payload: &[u8]) -> Option<NodeRecord> {
        let record = NodeRecord::decode(node, payload, self.key.as_deref());
        if record.is_none() && self.refused_members.admit("member").is_some() {
            tracing::warn!(node = %shown(node), "ignoring a node record not signed with this cluster's secret");
            counter!(names::MEMBERS_REFUSED).increment(1);
        }
        record
    }

    /// Applies one heartbeat; returns whether the live nodes changed.
    fn heard(&self, node: &str, record: NodeRecord) -> bool {
        let mut members = Self::lock(&self.members);
        if record.leaving {
            let left = members.remove(node).is_some();
            if left {
                tracing::info!(node = %node, "a node left the cluster");
            }
            return left;
        }
        let now = Instant::now();
        let known = members.get(node).filter(|m| m.epoch == record.epoch && m.seen.elapsed() <= self.ttl);
        let since = known.map_or(now, |m| m.since);
        let joined = known.is_none();
        if joined {
            tracing::info!(node = %node, addr = %record.addr, "a node joined the cluster");
        }
        members.insert(
            node.to_owned(),
            Member {
                epoch: record.epoch,
                addr: record.addr,
                partitions: record.partitions,
                ttl_ms: record.ttl_ms,
                seen: now,
                since,
            },
        );
        gauge!(names::CLUSTER_NODES).set((members.len() + 1) as f64);
        joined
    }

    /// Every node the heartbeats name whose TTL is not this node's: refused at start, since
    /// nodes that disagree on when a node is dead would take each other's partitions.
    pub(super) fn check_ttls(&self) -> Result<(), store::Error> {
        let ours = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let members = Self::lock(&self.members);
        match members.iter().find(|(_, m)| m.ttl_ms != ours) {
            Some((node, member)) => Err(store::Error::Misconfigured(format!(
                "node {node} runs with --lease-ttl-ms {} and this node with {ours}; every node of a cluster needs the same --lease-ttl-ms",
                member.ttl_ms
            ))),
            None => Ok(()),
        }
    }

    /// Follows the other nodes' heartbeats, and takes a node not heard from for a TTL for
    /// gone.
    pub(super) async fn follow_members(self: Arc<Self>, mut heartbeats: async_nats::Subscriber) {
        let mut ticks = tokio::time::interval(self.beat());
        loop {
            let changed = tokio::select! {
                () = self.stopping.cancelled() => return,
                _ = ticks.tick() => self.expire_members(),
                heartbeat = heartbeats.next() => match heartbeat {
                    Some(message) => {
                        let Some(node) = message.subject.rsplit('.').next().map(str::to_owned) else { continue };
                        if node == self.me {
                            continue;
                        }
                        match self.member_record(&node, &message.payload) {
                            Some(record) => self.heard(&node, record),
                            None => continue,
                        }
                    }
                    None => match self.listen().await {
                        Ok(again) => {
                            heartbeats = again;
                            continue;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "lost the cluster's heartbeats; listening again");
                            tokio::time::sleep(self.beat()).await;
                            continue;
                        }
                    },
                },
            };
            if changed {
                self.changed();
            }
        }
    }

    fn expire_members(&self) -> bool {
        let mut members = Self::lock(&self.members);
        let before = members.len();
        members.retain(|node, member| {
            let alive = member.seen.elapsed() <= self.ttl;
            if !alive {
                tracing::warn!(node = %node, "a node's heartbeats stopped: taking it for gone");
            }
            alive
        });
        gauge!(names::CLUSTER_NODES).set((members.len() + 1) as f64);
        members.len() != before
    }
}
