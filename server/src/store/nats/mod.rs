//! The replicated store: NATS JetStream (see `layout` and docs/storage.md).
//!
//! A save is one publish of a record to the context's log subject, acknowledged once the
//! stream's replicas hold it, and conditional on the subject's last sequence being the one
//! this process last saw: JetStream refuses a save from a writer that missed another's.
//! Afterwards the tree (each message by node, ids, children) and the context's snapshot
//! are updated from the record, so that loading reads the active path, not the log. If that
//! second step is lost (a crash, a server gone), the next read finds the snapshot behind the
//! log and derives the missing records first: the log alone is the truth.
//!
//! Here: the store, opening it, and a save; `log` (reads and conditional appends with
//! retry, fences), `derive` (each context's head, deriving the tree), `follow` (the view of
//! every context, kept by following the log), `backend_impl` (the runtime's `Backend`),
//! `layout` (subjects and what they hold), `view`, `connect`.

mod backend_impl;
mod connect;
mod derive;
mod follow;
mod layout;
mod log;
mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{self, consumer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use connect::NatsOptions;
use layout::{Layout, StoredRecord};
use view::View;

use super::backend::Change;
use super::codec;
use super::error::{Error, Result};
use crate::domain::{Context, ContextKey};

/// Reads of the tree in flight at once when loading a path.
const READ_AHEAD: usize = 64;

/// How long a request waits for the cluster to answer (a leader elected after a server
/// died) before it fails UNAVAILABLE: saves and reads here, claims of contexts in
/// `crate::cluster`.
pub const PATIENCE: Duration = Duration::from_secs(15);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The messages a record of a restored context holds at most, bytes: well under the
/// servers' default largest publish (1 MiB).
const RESTORE_RECORD_BYTES: usize = 256 * 1024;

/// The store; cheap to share with the tasks that derive the tree behind saves.
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
    log: Stream,
    tree: Stream,
    contexts: Stream,
    /// What this process knows of each context's log: its last sequence (the condition of
    /// the next save) and how far the tree is derived.
    heads: Mutex<HashMap<ContextKey, Head>>,
    /// Held while a context's records are derived into the tree, so that they are derived
    /// one at a time and in log order.
    deriving: Mutex<HashMap<ContextKey, Arc<tokio::sync::Mutex<()>>>>,
    /// The derivations running behind saves, awaited at close.
    derivations: TaskTracker,
    view: View,
    /// Every process's saves, as the follower reads them from the log.
    changes: tokio::sync::broadcast::Sender<Change>,
    closed: AtomicBool,
    /// Ends the follower.
    stopping: CancellationToken,
}

#[derive(Debug, Clone, Copy)]
struct Head {
    last: u64,
    derived: u64,
    /// Another writer saved the context: what this process holds of it is stale, so every
    /// save is refused until it is loaded again.
    fenced: bool,
}

/// The consumer that follows the log, and the last sequence it delivered.
struct Following {
    messages: consumer::pull::Ordered,
    last: u64,
}

/// Saves reported to the runtime that it may fall behind by.
const CHANGES_CAPACITY: usize = 4096;

/// The last message of a subject, if any.
struct Last {
    sequence: u64,
    payload: bytes::Bytes,
}

impl Nats {
    /// Connects (waiting for the cluster while it is not reachable), creates the streams that
    /// are missing, checks those that exist, and reads every context's summary.
    pub async fn open(options: &NatsOptions) -> Result<Self> {
        let layout = Layout { prefix: options.prefix.clone() };
        let (client, js, [log, tree, contexts]) = connect::until_ready(options, &layout).await?;
        let inner = Inner {
            client,
            js,
            layout,
            log,
            tree,
            contexts,
            heads: Mutex::new(HashMap::new()),
            deriving: Mutex::new(HashMap::new()),
            derivations: TaskTracker::new(),
            view: View::default(),
            changes: tokio::sync::broadcast::channel(CHANGES_CAPACITY).0,
            closed: AtomicBool::new(false),
            stopping: CancellationToken::new(),
        };
        // A cluster that has just come back may answer its first requests "temporarily
        // unavailable": wait for it, as for the connection.
        let following = loop {
            // A consumer placed while the cluster recovers may deliver nothing: start again.
            let read = tokio::time::timeout(PATIENCE, inner.read_view()).await;
            match read
                .unwrap_or_else(|_| Err(Error::Unavailable(format!("no contexts read in {} s", PATIENCE.as_secs()))))
            {
                Ok(following) => break following,
                Err(Error::Unavailable(error)) => {
                    tracing::warn!(%error, "waiting for the NATS cluster to read the contexts; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => return Err(error),
            }
        };
        let inner = Arc::new(inner);
        tokio::spawn(Arc::clone(&inner).follow(following));
        Ok(Self { inner })
    }

    /// The JetStream context the store talks through (the cluster's leases share it).
    pub fn jetstream(&self) -> jetstream::Context {
        self.js.clone()
    }

    /// Saves `record` as the context's next. It is acknowledged once the log holds it; the
    /// tree is derived from it behind the save, by a task of its own (a read of the tree
    /// waits for it). Fails with `Conflict` if another writer saved the context since this
    /// process last read it.
    async fn save(
        &self,
        key: &ContextKey,
        record: StoredRecord,
        expect: u64,
        after: Option<Arc<Context>>,
    ) -> Result<usize> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::WriterStopped);
        }
        let payload = codec::encode(&record);
        let bytes = payload.len();
        let Some(sequence) = self.append(key, payload, record.deleted, expect).await? else {
            self.fence(key, expect);
            return Err(Error::Conflict { context: key.id.to_string() });
        };
        // Saved: from here on nothing may fail the save.
        self.advance(key, sequence);
        if let Some(stored) = &record.context {
            self.view.upsert(&key.tenant, codec::summary_from_stored(key.id, stored)?);
        }
        let (inner, key) = (Arc::clone(&self.inner), key.clone());
        self.derivations.spawn(async move {
            if let Err(error) = inner.derive_through(&key, sequence, Some((expect, &record, after.as_deref()))).await {
                tracing::warn!(context = %key.id, tenant = %key.tenant, %error, "saved, but the tree is behind; the next read derives it");
            }
        });
        Ok(bytes)
    }
}

fn unavailable(error: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("NATS: {error}"))
}

#[cfg(test)]
mod tests;
