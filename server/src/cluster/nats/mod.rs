//! The cluster's [`Placement`] on NATS (docs/cluster.md): which node runs each context.
//!
//! Every node keeps a key in the `{prefix}_nodes` bucket alive (a heartbeat every third of
//! the lease TTL; the bucket's max age deletes it once a node stops). A node runs a context
//! only while its record in `{prefix}_owners` names it, taken by compare-and-set. A record
//! whose node is gone (its key expired, deleted at shutdown, or of an older incarnation) is
//! free to take, again by compare-and-set. Both buckets are watched, so each node knows
//! without asking who runs what (calls are sent there) and which runs lost their node (this
//! node takes its share). The store's log refuses a writer that missed a save: the last line
//! of defence if a node kept writing after losing its place.
//!
//! Here: joining, and what the parts share; `claims` (the `Placement` the runtime asks), `membership` (heartbeats, who
//! is alive), `owners` (who runs what), `records` (what the two buckets hold).

mod claims;
mod membership;
mod owners;
mod records;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use records::{NodeRecord, OwnerRecord};

use crate::auth::PeerKey;
use crate::cluster::Peer;
use crate::domain::ContextKey;
use crate::store;
use crate::telemetry::LogLimiter;

/// How this node takes part.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub node_id: String,
    /// host:port the other nodes send calls to.
    pub advertise: String,
    /// A node that has not renewed its place for this long is gone; its contexts are taken over.
    pub lease_ttl: Duration,
    /// Servers holding each bucket (as the store's streams).
    pub replicas: usize,
    /// Names the buckets, as it names the store's streams.
    pub prefix: String,
    /// The cluster's shared secret: this node's record is signed with it, and records not
    /// signed with it are no node's.
    pub key: Option<Arc<PeerKey>>,
}

/// Between attempts to join a cluster that does not answer yet.
const JOIN_RETRY: Duration = Duration::from_secs(1);

/// Attempts at taking (or giving up) a context while other writes to the owners bucket come
/// first, before giving up UNAVAILABLE.
const CLAIM_ATTEMPTS: usize = 30;

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
    nodes: kv::Store,
    owners: kv::Store,
    /// The owners bucket's stream, its subjects' prefix, and the JetStream context to write
    /// it with conditions of its own (see [`Inner::write_owner`]).
    owners_stream: jetstream::stream::Stream,
    owners_prefix: String,
    js: jetstream::Context,
    /// The live nodes as the watch of `nodes` shows them.
    members: Mutex<HashMap<String, Member>>,
    /// Who runs what, as the watch of `owners` shows it.
    seen: Mutex<HashMap<ContextKey, OwnerRecord>>,
    /// The leases this node holds, with how many of its callers hold each (an actor, and a
    /// creation that has not finished writing).
    held: Mutex<HashMap<ContextKey, Held>>,
    key_locks: Mutex<HashMap<ContextKey, Arc<tokio::sync::Mutex<()>>>>,
    registration: Mutex<Registration>,
    standing: watch::Sender<u64>,
    changes: watch::Sender<u64>,
    /// Orphans another node should have taken, since when: taken here after a while anyway.
    waiting: Mutex<HashMap<ContextKey, Instant>>,
    stopping: CancellationToken,
}

#[derive(Debug, Clone)]
struct Member {
    epoch: String,
    addr: String,
    seen: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    revision: u64,
    count: usize,
}

#[derive(Debug, Clone)]
struct Registration {
    epoch: String,
    revision: u64,
    /// When the last renewal that the cluster acknowledged was sent.
    renewed: Instant,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> store::Error {
    store::Error::Unavailable(format!("NATS ({what}): {error}"))
}

fn new_epoch() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

impl Cluster {
    /// Joins the cluster: the buckets (made if missing), this node's key, and the watches.
    /// While the cluster does not answer (it has just started and is placing streams, or is
    /// electing a leader) this waits, with a log line a second; a bucket configured unlike
    /// this node is an error at once.
    pub async fn join(js: jetstream::Context, options: ClusterOptions) -> Result<Self, store::Error> {
        let mut attempt = 0u64;
        loop {
            match Self::try_join(&js, &options).await {
                Err(error @ store::Error::Unavailable(_)) => {
                    attempt += 1;
                    tracing::warn!(node = %options.node_id, %error, attempt, "waiting for the NATS cluster to join it; retrying in 1 s");
                    tokio::time::sleep(JOIN_RETRY).await;
                }
                joined => return joined,
            }
        }
    }

    /// One attempt at [`Cluster::join`].
    async fn try_join(js: &jetstream::Context, options: &ClusterOptions) -> Result<Self, store::Error> {
        let ttl = options.lease_ttl;
        let (nodes, _) = bucket(js, format!("{}_nodes", options.prefix), ttl, options.replicas).await?;
        let owners_bucket = format!("{}_owners", options.prefix);
        let (owners, owners_stream) = bucket(js, owners_bucket.clone(), Duration::ZERO, options.replicas).await?;
        let epoch = new_epoch();
        let record =
            NodeRecord::signed(&options.node_id, epoch.clone(), options.advertise.clone(), options.key.as_deref());
        let sent = Instant::now();
        let revision = nodes
            .put(&options.node_id, record.encode())
            .await
            .map_err(|e| store::Error::Unavailable(format!("NATS: cannot register node {}: {e}", options.node_id)))?;
        let options = options.clone();
        let js = js.clone();
        let inner = Arc::new(Inner {
            me: options.node_id.clone(),
            addr: options.advertise,
            key: options.key.clone(),
            refused_members: LogLimiter::default(),
            ttl,
            nodes,
            owners,
            owners_stream,
            owners_prefix: format!("$KV.{owners_bucket}."),
            js,
            members: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            key_locks: Mutex::new(HashMap::new()),
            registration: Mutex::new(Registration { epoch, revision, renewed: sent }),
            standing: watch::channel(0).0,
            changes: watch::channel(0).0,
            waiting: Mutex::new(HashMap::new()),
            stopping: CancellationToken::new(),
        });
        tokio::spawn(Arc::clone(&inner).heartbeat());
        tokio::spawn(Arc::clone(&inner).watch_nodes());
        tokio::spawn(Arc::clone(&inner).watch_owners());
        tracing::info!(node = %options.node_id, lease_ttl_ms = ttl.as_millis() as u64, "joined the ctxd cluster");
        Ok(Self { inner })
    }
}

/// The KV bucket `name`, made if missing; refused if it exists with another max age (nodes
/// started with different lease TTLs would not agree on when a node is gone).
///
/// The bucket's stream is made here, configured as the KV convention says, because
/// `create_key_value` first asks for the account's limits in a form nats-server 2.9 does not
/// answer.
async fn bucket(
    js: &jetstream::Context,
    name: String,
    max_age: Duration,
    replicas: usize,
) -> Result<(kv::Store, jetstream::stream::Stream), store::Error> {
    use jetstream::stream::{Config, DiscardPolicy, StorageType};
    let config = Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        max_bytes: -1,
        max_message_size: -1,
        storage: StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        // Reads go to the leader: a replica's direct answer may lag, and a claim decided on a
        // stale record could take a live node's context.
        allow_direct: false,
        num_replicas: replicas,
        discard: DiscardPolicy::New,
        ..Default::default()
    };
    let unavailable = |e: &dyn std::fmt::Display| store::Error::Unavailable(format!("NATS: KV bucket {name}: {e}"));
    let mut stream = js.get_or_create_stream(config).await.map_err(|e| unavailable(&e))?;
    let have = stream.cached_info().config.max_age;
    if have != max_age {
        return Err(store::Error::Misconfigured(format!(
            "KV bucket {name} expires entries after {have:?} and this node was started with --lease-ttl-ms {}; every node of a cluster needs the same --lease-ttl-ms",
            max_age.as_millis()
        )));
    }
    if stream.info().await.map_err(|e| unavailable(&e))?.config.allow_direct {
        return Err(store::Error::Misconfigured(format!(
            "KV bucket {name} answers reads from any replica (allow_direct); ctxd needs them from the leader: delete the bucket (it holds only leases) and start the nodes again"
        )));
    }
    let store = js.get_key_value(&name).await.map_err(|e| unavailable(&e))?;
    Ok((store, stream))
}

impl Inner {
    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serialises this node's claims and releases of one context.
    fn key_lock(&self, key: &ContextKey) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(Self::lock(&self.key_locks).entry(key.clone()).or_default())
    }

    /// Drops the lock of `key` unless another claim or release waits on it.
    fn forget_lock(&self, key: &ContextKey, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = Self::lock(&self.key_locks);
        // Ours and the map's: nobody else has it.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(key);
        }
    }

    fn registration(&self) -> Registration {
        Self::lock(&self.registration).clone()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether `owner` is a node this node sees alive, in that incarnation.
    fn is_live(&self, owner: &OwnerRecord) -> Option<Peer> {
        if owner.node == self.me {
            let registration = self.registration();
            return (owner.epoch == registration.epoch)
                .then(|| Peer { node: self.me.clone(), addr: self.addr.clone() });
        }
        let members = Self::lock(&self.members);
        let member = members.get(&owner.node)?;
        (member.epoch == owner.epoch && member.seen.elapsed() <= self.ttl)
            .then(|| Peer { node: owner.node.clone(), addr: member.addr.clone() })
    }

    /// Hands every entry of `bucket` (those it holds first, then each change) to `apply`, and
    /// runs `tick` every `every` meanwhile; a watch that fails is made again.
    async fn follow(
        &self,
        bucket: &kv::Store,
        what: &str,
        apply: impl Fn(kv::Entry),
        every: Duration,
        tick: impl Fn(),
    ) {
        let mut ticks = tokio::time::interval(every.min(Duration::from_secs(3600)));
        loop {
            let mut entries = match bucket.watch_with_history(">").await {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch {what}; retrying");
                    tokio::select! {
                        () = self.stopping.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                tokio::select! {
                    () = self.stopping.cancelled() => return,
                    _ = ticks.tick() => tick(),
                    entry = entries.next() => match entry {
                        Some(Ok(entry)) => apply(entry),
                        Some(Err(error)) => {
                            tracing::warn!(%error, "lost the watch of {what}; watching again");
                            break;
                        }
                        None => break,
                    },
                }
            }
        }
    }
}
