//! Taking, keeping and giving up partitions. Every beat (and whenever a node joins, leaves
//! or dies) each node compares what it holds with what the rendezvous hash of the live
//! nodes gives it:
//!
//! - a partition that is this node's and that no live node holds is taken: compare-and-set
//!   on its lease, which fails if another node took it first; a lease naming a node that is
//!   alive is left alone (that node gives it up when it sees it is not its own any more);
//! - a partition this node holds that is another live node's (it joined, and has been heard
//!   for two beats) is given up: its actors stop after the transition they are saving, then
//!   the lease is written empty, and the other node takes it on its next beat;
//! - a partition nobody has held for two TTLs is taken by whoever sees it (its node is stuck,
//!   or never came).
//!
//! A partition taken, the runs saved mid-way in it are resumed here (the sweep).

use std::sync::Arc;
use std::time::Duration;

use metrics::gauge;
use tokio::time::Instant;

use super::records::chosen;
use super::{Held, Inner};
use crate::telemetry::names;

/// How long a partition being given up waits for its actors to stop before its lease is
/// written empty anyway (its lease's fence refuses whatever they would still save).
const HAND_OVER_WAIT: Duration = Duration::from_secs(5);

impl Inner {
    /// Balances every beat, and at once when the nodes change.
    pub(super) async fn keep_balanced(self: Arc<Self>) {
        let mut changes = self.changes.subscribe();
        loop {
            tokio::select! {
                () = self.stopping.cancelled() => return,
                () = tokio::time::sleep(self.beat()) => {}
                changed = changes.changed() => if changed.is_err() { return },
            }
            self.balance().await;
        }
    }

    /// Takes this node's partitions that nobody holds, and gives up those that are another's.
    pub(super) async fn balance(self: &Arc<Self>) {
        let _one_at_a_time = self.balancing.lock().await;
        let live = self.live();
        let partitions = self.store.partitions();
        for partition in 0..partitions {
            let owner = chosen(partition, live.iter().map(String::as_str)).unwrap_or(&self.me);
            let mine = owner == self.me;
            let held = Self::lock(&self.held).get(&partition).copied();
            match held {
                Some(held) if !mine && !held.releasing => {
                    if self.settled(owner) {
                        let inner = Arc::clone(self);
                        tokio::spawn(async move { inner.give_up(partition).await });
                    }
                }
                Some(_) => {}
                None => {
                    let holder = self.holder_of(partition);
                    let unheld_for = {
                        let mut unheld = Self::lock(&self.unheld);
                        if holder.is_some() {
                            unheld.remove(&partition);
                            Duration::ZERO
                        } else {
                            unheld.entry(partition).or_insert_with(Instant::now).elapsed()
                        }
                    };
                    if holder.is_none() && (mine || unheld_for > self.ttl * 2) {
                        self.take(partition).await;
                    }
                }
            }
        }
    }

    /// Whether `node` has been heard long enough to be handed partitions.
    fn settled(&self, node: &str) -> bool {
        Self::lock(&self.members).get(node).is_some_and(|m| m.since.elapsed() >= self.beat() * 2)
    }

    /// Takes `partition` unless its lease names a live node (or another node takes it first).
    pub(super) async fn take(&self, partition: u32) -> bool {
        if Self::lock(&self.held).contains_key(&partition) {
            return true;
        }
        let lease = match self.store.lease(partition).await {
            Ok(lease) => lease,
            Err(error) => {
                tracing::warn!(partition, %error, "could not read a partition's lease");
                return false;
            }
        };
        let epoch = self.epoch();
        let alive = !lease.node.is_empty()
            && lease.node != self.me
            && Self::lock(&self.members)
                .get(&lease.node)
                .is_some_and(|m| m.epoch == lease.epoch && m.seen.elapsed() <= self.ttl);
        let stuck = Self::lock(&self.unheld).get(&partition).is_some_and(|since| since.elapsed() > self.ttl * 2);
        if alive && !stuck {
            return false;
        }
        match self.store.write_lease(partition, &self.me, &epoch, lease.term).await {
            Ok(Some(term)) => {
                if epoch != self.epoch() {
                    // This node lost its standing meanwhile: the lease is void.
                    self.store.drop_lease(partition);
                    return false;
                }
                Self::lock(&self.held).insert(partition, Held { term, count: 0, releasing: false });
                Self::lock(&self.unheld).remove(&partition);
                gauge!(names::LEASES_HELD).increment(1.0);
                if lease.node.is_empty() {
                    tracing::info!(partition, term, "took a partition");
                } else {
                    tracing::info!(partition, term, from = %lease.node, "took over a partition from a node that is gone");
                }
                // Its runs saved mid-way go on here.
                self.changed();
                true
            }
            Ok(None) => false,
            Err(error) => {
                tracing::warn!(partition, %error, "could not take a partition");
                false
            }
        }
    }

    /// Hands `partition` over: no new claims, its actors stop once their transition is saved,
    /// then its lease is written empty for the node it is now meant for.
    pub(super) async fn give_up(&self, partition: u32) {
        let term = {
            let mut held = Self::lock(&self.held);
            let Some(entry) = held.get_mut(&partition) else { return };
            entry.releasing = true;
            entry.term
        };
        tracing::info!(partition, term, "handing a partition over to the node it is now meant for");
        // Its actors see their lease void and stop.
        self.standing.send_modify(|n| *n = n.wrapping_add(1));
        let deadline = Instant::now() + HAND_OVER_WAIT;
        while Instant::now() < deadline && Self::lock(&self.held).get(&partition).is_some_and(|h| h.count > 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.release_lease(partition, term).await;
    }

    /// Writes `partition`'s lease empty (if it is still this node's at `term`) and forgets it.
    pub(super) async fn release_lease(&self, partition: u32, term: u64) {
        if let Err(error) = self.store.write_lease(partition, "", "", term).await {
            tracing::warn!(partition, %error, "could not give a partition up; another node takes it once it finds it stuck");
        }
        self.store.drop_lease(partition);
        if Self::lock(&self.held).remove(&partition).is_some() {
            gauge!(names::LEASES_HELD).decrement(1.0);
        }
        self.changed();
    }

    /// Drops a partition a save found taken by another node: its actors stop.
    pub(super) async fn follow_lost_leases(self: Arc<Self>) {
        let mut lost = self.store.lost_leases();
        loop {
            let partition = tokio::select! {
                () = self.stopping.cancelled() => return,
                partition = lost.recv() => match partition {
                    Ok(partition) => partition,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            if Self::lock(&self.held).remove(&partition).is_some() {
                gauge!(names::LEASES_HELD).decrement(1.0);
                tracing::error!(partition, "another node took a partition this node held: stopping its contexts here");
                self.standing.send_modify(|n| *n = n.wrapping_add(1));
                self.changed();
            }
        }
    }
}
