//! Many ctxd nodes on one NATS cluster (docs/cluster.md): which node runs each context.
//!
//! Every node keeps a key in the `{prefix}_nodes` bucket alive (a heartbeat every third of
//! the lease TTL; the bucket's max age deletes it once a node stops). A node runs a context
//! only while its record in `{prefix}_owners` names it, taken by compare-and-set. A record
//! whose node is gone (its key expired, deleted at shutdown, or of an older incarnation) is
//! free to take, again by compare-and-set. Both buckets are watched, so each node knows
//! without asking who runs what (calls are sent there) and which runs lost their node (this
//! node takes its share). The store's log refuses a writer that missed a save: the last line
//! of defence if a node kept writing after losing its place.

mod records;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use futures::StreamExt;
use metrics::{counter, gauge};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use records::{NodeRecord, OwnerRecord, chosen, owner_key, parse_owner_key};

use crate::auth::PeerKey;
use crate::domain::{ContextKey, shown};
use crate::runtime::{self, Claim, Lease, Peer, Placement};
use crate::store;
// How long a claim waits for a cluster that does not answer (a leader being elected).
use crate::store::nats::PATIENCE;
use crate::telemetry::{LogLimiter, names};

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

fn unavailable(what: &str, error: impl std::fmt::Display) -> runtime::Error {
    runtime::Error::Storage(store::Error::Unavailable(format!("NATS ({what}): {error}")))
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

impl Cluster {
    /// One attempt at [`Placement::claim`].
    async fn try_claim(&self, key: &ContextKey) -> runtime::Result<Claim> {
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

    /// Renews this node's key every third of the TTL. A node that could not renew it for
    /// three quarters of the TTL stops every context it runs (another node may take them
    /// once the key expires) and registers again as a new incarnation.
    async fn heartbeat(self: Arc<Self>) {
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
    async fn lose_standing(&self) {
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
    async fn watch_nodes(self: Arc<Self>) {
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

    /// Follows the owners bucket: who runs which context.
    async fn watch_owners(self: Arc<Self>) {
        self.follow(&self.owners, "who runs which context", |entry| self.owner_entry(entry), Duration::MAX, || {})
            .await;
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

    fn owner_entry(&self, entry: kv::Entry) {
        let Some(key) = parse_owner_key(&entry.key) else { return };
        let record = match entry.operation {
            kv::Operation::Put => OwnerRecord::decode(&entry.value),
            _ => None,
        };
        let mut seen = Self::lock(&self.seen);
        match record {
            Some(record) => {
                seen.insert(key, record);
            }
            None => {
                seen.remove(&key);
                drop(seen);
                // A context given up: a run in it may need a new node.
                self.changed();
            }
        }
    }

    /// This node's membership record in incarnation `epoch`.
    fn record(&self, epoch: String) -> NodeRecord {
        NodeRecord::signed(&self.me, epoch, self.addr.clone(), self.key.as_deref())
    }

    /// A node's record as this node reads it: none if it is not a node of this cluster's
    /// (with a secret, a record not signed with it is someone posing as a node).
    fn member_record(&self, entry: &kv::Entry) -> Option<NodeRecord> {
        let record = NodeRecord::decode(&entry.key, &entry.value, self.key.as_deref());
        if record.is_none() && entry.operation == kv::Operation::Put && self.refused_members.admit("member").is_some() {
            tracing::warn!(node = %shown(&entry.key), "ignoring a node record not signed with this cluster's secret");
            counter!(names::MEMBERS_REFUSED).increment(1);
        }
        record
    }

    fn member_entry(&self, entry: kv::Entry) {
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

    fn expire_members(&self) {
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

    fn hold(&self, key: &ContextKey, revision: u64, standing: u64) -> Claim {
        let mut held = Self::lock(&self.held);
        let entry = held.entry(key.clone()).or_insert_with(|| {
            gauge!(names::LEASES_HELD).increment(1.0);
            Held { revision, count: 0 }
        });
        entry.count += 1;
        Claim::Mine(Lease { revision: entry.revision, standing })
    }

    /// The owners bucket's last sequence, then `subject`'s record (its revision and content)
    /// as of at least that sequence; `None` if it has none (never taken, or given up).
    async fn read_owner(&self, subject: &str) -> Result<(u64, Option<(u64, OwnerRecord)>), runtime::Error> {
        let after = self.owners_stream.get_info().await.map_err(|e| unavailable("owners", e))?.state.last_sequence;
        let entry = self.owners.entry(subject).await.map_err(|e| unavailable("owners", e))?;
        let current = entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| (e.revision, OwnerRecord::decode(&e.value).unwrap_or_else(OwnerRecord::nobody)));
        Ok((after, current))
    }

    /// Writes `record` (`None`: gives the context up) as `subject`'s owner if nothing at all
    /// was written to the owners bucket after sequence `after`; returns the record's revision,
    /// or `None` if something was. The condition is on the whole stream, not on the one key:
    /// nats-server 2.9 checks a per-key condition only before replicating a write, so two
    /// writes racing on one key can both pass it (nats-io/nats-server#4320); the stream's
    /// last sequence is checked as each replica applies the write, in one order for all.
    async fn write_owner(
        &self,
        subject: &str,
        record: Option<&OwnerRecord>,
        after: u64,
    ) -> Result<Option<u64>, runtime::Error> {
        let mut message = PublishMessage::build().expected_last_sequence(after);
        message = match record {
            Some(record) => message.payload(record.encode()),
            None => message.header("KV-Operation", "DEL"),
        };
        let sent = self.js.send_publish(format!("{}{subject}", self.owners_prefix), message).await;
        let acked = match sent {
            Ok(ack) => ack.await,
            Err(error) => Err(error),
        };
        match acked {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(error) => Err(unavailable("owners", error)),
        }
    }

    /// Whether the cluster itself says `owner` is gone: its key expired or was deleted, or
    /// names a newer incarnation. Asked before taking a context from it, so a watch that
    /// lags (this node cut off for a while) never makes it take a live node's context.
    async fn gone(&self, owner: &OwnerRecord) -> Result<Option<Peer>, runtime::Error> {
        if owner.node.is_empty() {
            return Ok(None);
        }
        let entry = self.nodes.entry(owner.node.clone()).await.map_err(|e| unavailable("nodes", e))?;
        match entry.filter(|e| e.operation == kv::Operation::Put).and_then(|e| self.member_record(&e)) {
            Some(record) if record.epoch == owner.epoch => {
                Ok(Some(Peer { node: owner.node.clone(), addr: record.addr }))
            }
            _ => Ok(None),
        }
    }
}

#[async_trait]
impl Placement for Cluster {
    async fn claim(&self, key: &ContextKey) -> runtime::Result<Claim> {
        // While the cluster elects a leader (a server died) its buckets do not answer: wait,
        // as a save does, rather than fail the call.
        let give_up = Instant::now() + PATIENCE;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.try_claim(key).await {
                Err(runtime::Error::Storage(store::Error::Unavailable(error))) if Instant::now() + pause < give_up => {
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
                Ok::<_, runtime::Error>(inner.write_owner(&subject, None, after).await?.is_some())
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

    async fn kept(&self, key: &ContextKey) -> runtime::Result<bool> {
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
