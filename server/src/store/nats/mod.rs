//! The replicated store: NATS JetStream (see `layout` and docs/storage.md).
//!
//! Contexts are hashed over partition streams. Everything of a context is the last message
//! of a subject of its own (head, messages, ids, children, list entry), and a save writes
//! what it changes as one atomic batch whose head is conditional on the sequence of the
//! head this process last saw: all of it is stored or nothing, a writer that missed
//! another's save is refused, and a read never waits for anything derived behind a save.
//!
//! Here: the store, opening it, and a save; `batch` (atomic batches), `writes` (what a save
//! writes), `reads` (reads, scans, retries), `index` (tenants' lists, read on demand and kept
//! by the streams' republished entries), `backend_impl` (the runtime's `Backend`), `layout`
//! (subjects), `connect` (the connection and the streams).

mod backend_impl;
mod batch;
mod connect;
mod index;
mod layout;
mod layout1;
mod lease;
mod path;
mod reads;
mod writes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::stream::Stream;
use metrics::counter;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use batch::{Put, Stored};
pub use connect::{NatsOptions, shown_urls};
use index::Index;
use layout::Layout;
pub use layout1::{delete_layout_1, open_source};
pub use lease::PartitionLease;

use super::error::{Error, Result};
use crate::backoff::{Attempts, Backoff};
use crate::domain::ContextKey;
use crate::telemetry::names;

/// Reads in flight at once when loading a path.
const READ_AHEAD: usize = 64;

/// How long a request waits for the cluster to answer (a leader elected after a server
/// died) before it fails UNAVAILABLE: saves and reads here, claims of contexts in
/// `crate::cluster`.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Pauses between attempts while the cluster does not answer: 100 ms, doubling, at most 1 s
/// apart, for [`PATIENCE`] in all.
const RETRY: Backoff =
    Backoff { immediate: 0, first: Duration::from_millis(100), max: Duration::from_secs(1), jitter: false };

/// The store; cheap to share with the tasks that keep tenants' lists.
pub struct Nats {
    inner: Arc<Inner>,
}

impl std::ops::Deref for Nats {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

pub struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    layout: Layout,
    /// The partition streams, by partition.
    streams: Vec<Stream>,
    /// What this process knows of each context's head: the condition of its next save.
    heads: Mutex<HashMap<ContextKey, Head>>,
    index: Index,
    /// A signal each time the connection came back (lists kept may have missed entries).
    reconnects: tokio::sync::broadcast::Sender<()>,
    /// Whether every save must be made under a partition lease (a cluster's node).
    leased: AtomicBool,
    /// The partitions this process holds, with their terms.
    terms: Mutex<HashMap<u32, u64>>,
    /// One per partition: a partition's leased saves go one batch at a time.
    writers: Vec<Arc<tokio::sync::Mutex<()>>>,
    /// Partitions a save found taken by another node.
    lost: tokio::sync::broadcast::Sender<u32>,
    closed: AtomicBool,
    /// Ends the tasks that keep tenants' lists.
    stopping: CancellationToken,
}

#[derive(Debug, Clone, Copy)]
struct Head {
    /// The stream sequence of the context's head.
    last: u64,
    /// Another writer saved the context: what this process holds of it is stale, so every
    /// save is refused until it is loaded again.
    fenced: bool,
}

/// The last message of a subject.
struct Last {
    sequence: u64,
    payload: bytes::Bytes,
    /// Its `Nats-Msg-Id`: a head's names the save that wrote it.
    id: Option<String>,
}

impl Nats {
    /// Connects (waiting for the cluster while it is not reachable), checks the servers'
    /// version, and creates the streams that are missing (checking those that exist).
    pub async fn open(options: &NatsOptions) -> Result<Self> {
        let connect::Ready { client, js, layout, streams, reconnects } = connect::until_ready(options).await?;
        let layout_partitions = layout.partitions;
        let inner = Arc::new(Inner {
            client,
            js,
            layout,
            streams,
            heads: Mutex::new(HashMap::new()),
            index: Index::default(),
            reconnects,
            leased: AtomicBool::new(false),
            terms: Mutex::new(HashMap::new()),
            writers: (0..layout_partitions).map(|_| Arc::default()).collect(),
            lost: tokio::sync::broadcast::channel(64).0,
            closed: AtomicBool::new(false),
            stopping: CancellationToken::new(),
        });
        tokio::spawn(Arc::clone(&inner).forget_idle_lists());
        Ok(Self { inner })
    }

    /// How many partitions contexts are hashed over.
    pub fn partitions(&self) -> u32 {
        self.layout.partitions
    }

    /// The connection the store talks through (the cluster's heartbeats share it).
    pub fn client(&self) -> async_nats::Client {
        self.client.clone()
    }
}

impl Inner {
    fn head(&self, key: &ContextKey) -> Option<Head> {
        self.heads.lock().unwrap_or_else(PoisonError::into_inner).get(key).copied()
    }

    fn set_head(&self, key: &ContextKey, head: Option<Head>) {
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        match head {
            Some(head) => heads.insert(key.clone(), head),
            None => heads.remove(key),
        };
    }

    /// Refuses every later save of `key` until it is loaded again.
    fn fence(&self, key: &ContextKey, last: u64) {
        let head = self.head(key).unwrap_or(Head { last, fenced: true });
        self.set_head(key, Some(Head { fenced: true, ..head }));
    }

    /// The head's sequence as this process knows it, or read; `Conflict` if another writer
    /// is known to have saved the context since this process loaded it.
    async fn expected(&self, key: &ContextKey) -> Result<u64> {
        match self.head(key) {
            Some(head) if head.fenced => Err(Error::Conflict { context: key.id.to_string() }),
            Some(head) => Ok(head.last),
            None => Ok(self.last(key, &self.layout.head(key)).await?.map_or(0, |l| l.sequence)),
        }
    }

    /// Writes `puts` (the context's head last) as one atomic batch if the context's head is
    /// still at `expect` (0: it has none) and, when `leased`, under this process's lease of
    /// the context's partition (`lease`). Returns the new head's sequence; `Conflict` if
    /// another writer saved the context since, or took the partition.
    ///
    /// While the cluster cannot answer (a server gone, a leader being elected) the batch is
    /// sent again for up to [`PATIENCE`], its head under the same message id: if an attempt
    /// whose answer was lost did land, the retry is refused (a duplicate, or a head that
    /// moved) and the head read back carries this very save's id. The id names the batch's
    /// whole content (two saves may leave the same head), so a different save after a failed
    /// one is never mistaken for it.
    async fn save(&self, key: &ContextKey, mut puts: Vec<Put>, expect: u64, leased: bool) -> Result<u64> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::WriterStopped);
        }
        let partition = self.layout.partition(key);
        let term = if leased { self.term(partition, key)? } else { None };
        let writer = Arc::clone(&self.writers[partition as usize]);
        let _one_at_a_time = match term {
            Some(_) => Some(writer.lock().await),
            None => None,
        };
        if let (Some(term), Some(first)) = (term, puts.first_mut()) {
            first.headers.insert("Nats-Expected-Last-Subject-Sequence", term.to_string().as_str());
            first.headers.insert("Nats-Expected-Last-Subject-Sequence-Subject", self.layout.lease(partition).as_str());
        }
        let Some(head) = puts.pop() else { return Ok(expect) };
        let mut digest = Sha256::new();
        for put in puts.iter().chain([&head]) {
            digest.update(put.subject.as_bytes());
            digest.update(&put.payload);
        }
        let id = format!("{}:{expect}:{}", head.subject, hex::encode(&digest.finalize()[..16]));
        let subject = head.subject.clone();
        puts.push(head.header("Nats-Expected-Last-Subject-Sequence", expect).header("Nats-Msg-Id", &id));
        let mut attempts = RETRY.attempts();
        loop {
            let error = match self.publish_batch(&puts).await {
                Ok(Stored::At(sequence)) => {
                    self.set_head(key, Some(Head { last: sequence, fenced: false }));
                    return Ok(sequence);
                }
                Ok(Stored::WrongLast | Stored::Duplicate) => {
                    return match self.last(key, &subject).await? {
                        Some(last) if last.id.as_deref() == Some(id.as_str()) => {
                            self.set_head(key, Some(Head { last: last.sequence, fenced: false }));
                            Ok(last.sequence)
                        }
                        _ => {
                            if let Some(term) = term {
                                self.lost_lease(partition, term).await?;
                            }
                            self.fence(key, expect);
                            Err(Error::Conflict { context: key.id.to_string() })
                        }
                    };
                }
                Err(Error::Unavailable(error)) => error,
                Err(error) => return Err(error),
            };
            tracing::warn!(context = %key.id, tenant = %key.tenant, %error, "the NATS cluster did not take a save; retrying");
            if !retry_later(&mut attempts, &self.closed).await {
                return Err(Error::Unavailable(format!(
                    "the NATS cluster did not take the save within {} s ({error}); is a majority of its servers up?",
                    PATIENCE.as_secs()
                )));
            }
            counter!(names::NATS_SAVE_RETRIES).increment(1);
        }
    }
}

/// Waits before the next attempt; `false` (at once) once patience is spent or the store is
/// closing.
async fn retry_later(attempts: &mut Attempts, closed: &AtomicBool) -> bool {
    if attempts.elapsed() + attempts.next_pause() > PATIENCE || closed.load(Ordering::Acquire) {
        return false;
    }
    attempts.wait().await;
    true
}

fn unavailable(error: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("NATS: {error}"))
}

#[cfg(test)]
mod tests;
