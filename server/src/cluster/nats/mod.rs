//! The cluster's [`Placement`] on NATS (docs/cluster.md): which node runs each context.
//!
//! Contexts are hashed over the store's partitions, and a node runs the contexts of the
//! partitions it holds. Each node publishes a heartbeat on core NATS every sixth of the lease
//! TTL, at most every half second (which keeps flowing while JetStream elects a stream leader), and takes a node whose
//! heartbeats stopped for a TTL for dead. Which node should hold each partition is a
//! rendezvous hash over the live nodes, so every node agrees without talking; a node takes a
//! partition by compare-and-set on its lease in the partition's stream, and every save it
//! makes there is conditional on that lease (the store's fence), so a node that lost a
//! partition can never write to it again.
//!
//! Here: joining, and what the parts share; `membership` (heartbeats, who is alive),
//! `partitions` (taking, keeping and giving up partitions), `claims` (the `Placement` the
//! runtime asks), `records` (what a heartbeat holds, who should hold what).

mod claims;
mod membership;
mod partitions;
mod records;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::PeerKey;
use crate::cluster::Peer;
use crate::store;
use crate::store::Nats;
use crate::telemetry::LogLimiter;

/// How this node takes part.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub node_id: String,
    /// host:port the other nodes send calls to.
    pub advertise: String,
    /// A node whose heartbeats stopped for this long is gone; its partitions are taken over.
    pub lease_ttl: Duration,
    /// Names the heartbeats' subjects, as it names the store's streams.
    pub prefix: String,
    /// The cluster's shared secret: this node's heartbeats are signed with it, and records
    /// not signed with it are no node's.
    pub key: Option<Arc<PeerKey>>,
}

pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    me: String,
    addr: String,
    /// The cluster's shared secret, if it has one.
    key: Option<Arc<PeerKey>>,
    /// Limits the log lines about records that are no node's.
    refused_members: LogLimiter,
    ttl: Duration,
    prefix: String,
    store: Arc<Nats>,
    client: async_nats::Client,
    /// This node's incarnation: new at start and each time it lost its standing.
    epoch: Mutex<String>,
    /// The other live nodes, as their heartbeats show them.
    members: Mutex<HashMap<String, Member>>,
    /// The partitions this node holds.
    held: Mutex<HashMap<u32, Held>>,
    /// Since when each partition has had no holder this node knows of.
    unheld: Mutex<HashMap<u32, Instant>>,
    /// Serialises taking and giving up partitions.
    balancing: tokio::sync::Mutex<()>,
    standing: watch::Sender<u64>,
    changes: watch::Sender<u64>,
    stopping: CancellationToken,
}

#[derive(Debug, Clone)]
struct Member {
    epoch: String,
    addr: String,
    partitions: Vec<u32>,
    ttl_ms: u64,
    seen: Instant,
    /// When this incarnation was first heard: partitions are handed to a node only once it
    /// has been alive a while (a node that flaps does not pull partitions back and forth).
    since: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    /// The lease's term (its sequence in the partition's stream).
    term: u64,
    /// Actors and creations running under it.
    count: usize,
    /// Being handed to another node: no new claims; given up once `count` is 0.
    releasing: bool,
}

fn new_epoch() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

impl Cluster {
    /// Joins the cluster: starts the heartbeats, listens to the others' for a moment (so that
    /// it knows who is alive and holds what), takes this node's share of the partitions, and
    /// keeps doing so. A node whose TTL differs from the others' is refused.
    pub async fn join(store: Arc<Nats>, options: ClusterOptions) -> Result<Self, store::Error> {
        store.require_leases();
        let client = store.client();
        let inner = Arc::new(Inner {
            me: options.node_id.clone(),
            addr: options.advertise,
            key: options.key.clone(),
            refused_members: LogLimiter::default(),
            ttl: options.lease_ttl,
            prefix: options.prefix,
            store,
            client,
            epoch: Mutex::new(new_epoch()),
            members: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            unheld: Mutex::new(HashMap::new()),
            balancing: tokio::sync::Mutex::new(()),
            standing: watch::channel(0).0,
            changes: watch::channel(0).0,
            stopping: CancellationToken::new(),
        });
        let heartbeats = inner.listen().await?;
        tokio::spawn(Arc::clone(&inner).heartbeat());
        tokio::spawn(Arc::clone(&inner).follow_members(heartbeats));
        // Long enough to hear every live node once or twice.
        tokio::time::sleep(inner.beat() * 2).await;
        if let Err(error) = inner.check_ttls() {
            inner.stopping.cancel();
            return Err(error);
        }
        tokio::spawn(Arc::clone(&inner).keep_balanced());
        tokio::spawn(Arc::clone(&inner).follow_lost_leases());
        inner.balance().await;
        tracing::info!(node = %inner.me, lease_ttl_ms = inner.ttl.as_millis() as u64, partitions = inner.held_partitions().len(), "joined the ctxd cluster");
        Ok(Self { inner })
    }
}

impl Inner {
    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn epoch(&self) -> String {
        Self::lock(&self.epoch).clone()
    }

    /// How often this node publishes its heartbeat: a sixth of the TTL, at most every
    /// half second (a node joining listens for two beats).
    fn beat(&self) -> Duration {
        (self.ttl / 6).min(Duration::from_millis(500))
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The partitions this node holds, sorted.
    fn held_partitions(&self) -> Vec<u32> {
        let mut held: Vec<u32> = Self::lock(&self.held).keys().copied().collect();
        held.sort_unstable();
        held
    }

    /// The live nodes' names, this one included.
    fn live(&self) -> Vec<String> {
        let members = Self::lock(&self.members);
        let mut live: Vec<String> =
            members.iter().filter(|(_, m)| m.seen.elapsed() <= self.ttl).map(|(n, _)| n.clone()).collect();
        live.push(self.me.clone());
        live
    }

    /// The live node (other than this one) whose heartbeat says it holds `partition`.
    fn holder_of(&self, partition: u32) -> Option<Peer> {
        let members = Self::lock(&self.members);
        members
            .iter()
            .filter(|(_, m)| m.seen.elapsed() <= self.ttl && m.partitions.contains(&partition))
            .map(|(node, m)| Peer { node: node.clone(), addr: m.addr.clone() })
            .next()
    }

    /// Node `node` as a peer, if it is alive.
    fn peer(&self, node: &str) -> Option<Peer> {
        let members = Self::lock(&self.members);
        let member = members.get(node).filter(|m| m.seen.elapsed() <= self.ttl)?;
        Some(Peer { node: node.to_owned(), addr: member.addr.clone() })
    }
}
