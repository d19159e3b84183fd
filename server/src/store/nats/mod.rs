//! The replicated store: NATS JetStream (see `layout` and docs/storage.md).
//!
//! A save is one publish of a record to the context's log subject, acknowledged once the
//! stream's replicas hold it, and conditional on the subject's last sequence being the one
//! this process last saw: JetStream refuses a save from a writer that missed another's.
//! Afterwards the tree (each message by node, ids, children) and the context's snapshot
//! are updated from the record, so that loading reads the active path, not the log. If that
//! second step is lost (a crash, a server gone), the next read finds the snapshot behind the
//! log and derives the missing records first: the log alone is the truth.

mod connect;
mod layout;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageError, LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, consumer};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use metrics::counter;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use connect::NatsOptions;
use layout::{Layout, StoredChildEntry, StoredChildren, StoredJoined, StoredNodeMessage, StoredRecord, StoredSnapshot};
use view::View;

use super::backend::{Backend, Change, Inserted};
use super::codec::{self, StoredNode};
use super::dump::Dump;
use super::error::{Error, Result};
use super::save::Save;
use crate::backoff::{Attempts, Backoff};
use crate::domain::{Child, Context, ContextKey, ContextSummary, ListPosition, Message, MessageId, Sibling, TenantId};
use crate::telemetry::names;

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

impl Inner {
    /// Reads the last record of each context's log into the view, and returns the consumer
    /// that did, positioned after them, to follow the log with. The log is the truth: a
    /// snapshot may lag it (written behind the save, or cut off by a crash), and a context
    /// saved mid-run must be found to be resumed.
    async fn read_view(&self) -> Result<Following> {
        let state = self.log.get_info().await.map_err(unavailable)?.state;
        let deliver_policy =
            if state.messages == 0 { consumer::DeliverPolicy::All } else { consumer::DeliverPolicy::LastPerSubject };
        let mut messages = self.follower(deliver_policy).await?;
        let mut last = 0;
        if state.messages > 0 {
            while let Some(message) = messages.next().await {
                let message = message.map_err(unavailable)?;
                let info = message.info().map_err(unavailable)?;
                let (sequence, pending) = (info.stream_sequence, info.pending);
                last = sequence;
                self.followed(&message.subject, &message.payload, false)?;
                if pending == 0 {
                    break;
                }
            }
        }
        Ok(Following { messages, last })
    }

    /// An ordered consumer of every context's log records, from `deliver_policy` on.
    async fn follower(&self, deliver_policy: consumer::DeliverPolicy) -> Result<consumer::pull::Ordered> {
        let config = consumer::pull::OrderedConfig {
            filter_subject: self.layout.log_subjects(),
            deliver_policy,
            ..Default::default()
        };
        self.log.create_consumer(config).await.map_err(unavailable)?.messages().await.map_err(unavailable)
    }

    /// Applies one log record, saved by any process, to the view; `report`: tells the
    /// runtime too.
    fn followed(&self, subject: &str, payload: &[u8], report: bool) -> Result<()> {
        let Some(key) = self.layout.parse_log(subject) else { return Ok(()) };
        let record: StoredRecord = codec::decode("record", payload)?;
        if record.deleted {
            self.view.remove(&key);
            if report {
                let _ = self.changes.send(Change::Removed(key));
            }
        } else if let Some(stored) = &record.context {
            // A record without a context is part of a copy that did not finish: not a context.
            let summary = codec::summary_from_stored(key.id, stored)?;
            self.view.upsert(&key.tenant, summary.clone());
            if report {
                let _ = self.changes.send(Change::Saved { key, summary });
            }
        }
        Ok(())
    }

    /// Keeps following the log once the view is read: every process's saves reach the view
    /// (ListContexts, the search for interrupted runs) and the runtime (WatchContexts). A
    /// consumer that fails is made again from the record after the last one seen.
    async fn follow(self: Arc<Self>, mut following: Following) {
        loop {
            let next = tokio::select! {
                () = self.stopping.cancelled() => return,
                next = following.messages.next() => next,
            };
            let error = match next {
                Some(Ok(message)) => {
                    if let Ok(info) = message.info() {
                        following.last = info.stream_sequence;
                    }
                    if let Err(error) = self.followed(&message.subject, &message.payload, true) {
                        tracing::warn!(subject = %message.subject, %error, "skipped a log record the view could not read");
                    }
                    continue;
                }
                Some(Err(error)) => error.to_string(),
                None => "the consumer ended".to_owned(),
            };
            tracing::warn!(%error, "stopped following the NATS log; following it again from where it stopped");
            loop {
                tokio::select! {
                    () = self.stopping.cancelled() => return,
                    () = tokio::time::sleep(RETRY_MAX) => {}
                }
                let from = consumer::DeliverPolicy::ByStartSequence { start_sequence: following.last + 1 };
                match self.follower(from).await {
                    Ok(messages) => {
                        following.messages = messages;
                        break;
                    }
                    Err(error) => tracing::warn!(%error, "could not follow the NATS log; retrying"),
                }
            }
        }
    }

    async fn last(&self, stream: &Stream, subject: &str) -> Result<Option<Last>> {
        self.read(|| stream.get_last_raw_message_by_subject(subject)).await
    }

    /// The first record of the context's log at or after `sequence`.
    async fn record_from(&self, key: &ContextKey, sequence: u64) -> Result<Option<Last>> {
        let subject = self.layout.log(key);
        self.read(|| self.log.raw_message_builder().sequence(sequence).next_by_subject(subject.clone()).send()).await
    }

    /// One message that may not exist (`None` then, not an error), read again while the
    /// cluster cannot answer (a leader being elected), for up to [`PATIENCE`].
    async fn read<F>(&self, attempt: impl Fn() -> F) -> Result<Option<Last>>
    where
        F: Future<Output = std::result::Result<StreamMessage, LastRawMessageError>>,
    {
        let mut attempts = RETRY.attempts();
        loop {
            counter!(names::NATS_REQUESTS, "op" => "read").increment(1);
            match attempt().await {
                Ok(message) => return Ok(Some(Last { sequence: message.sequence, payload: message.payload })),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
                Err(e) if retry_later(&mut attempts, &self.closed).await => {
                    tracing::debug!(error = %e, "the NATS cluster did not answer a read; retrying");
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    /// The context's last log record and its sequence; `None` if it has none.
    async fn tail(&self, key: &ContextKey) -> Result<Option<(u64, StoredRecord)>> {
        match self.last(&self.log, &self.layout.log(key)).await? {
            Some(last) => Ok(Some((last.sequence, codec::decode("record", &last.payload)?))),
            None => Ok(None),
        }
    }

    /// Publishes and waits for the stream's acknowledgement (its replicas hold it).
    async fn put(&self, subject: String, payload: Vec<u8>) -> Result<u64> {
        counter!(names::NATS_REQUESTS, "op" => "put").increment(1);
        let ack = self.js.publish(subject, payload.into()).await.map_err(unavailable)?;
        Ok(ack.await.map_err(unavailable)?.sequence)
    }

    /// Appends an encoded record (`deleted`: a tombstone) to the context's log if its last
    /// sequence is still `expect` (0: the log is empty). Returns the record's sequence, or
    /// `None` if the log moved on.
    ///
    /// While the cluster cannot answer (a server gone, a leader being elected) the publish is
    /// retried for up to [`PATIENCE`], under the same message id: if an attempt whose
    /// acknowledgement was lost did reach the log, JetStream answers the retry with that
    /// record's sequence instead of appending it twice. The id names the record's content,
    /// so a different record after a failed save is never mistaken for it; and if that failed
    /// save reached the log after all, the different record is refused (the log moved on).
    async fn append(&self, key: &ContextKey, payload: Vec<u8>, deleted: bool, expect: u64) -> Result<Option<u64>> {
        let subject = self.layout.log(key);
        let digest = Sha256::digest(&payload);
        let id = format!("{subject}:{expect}:{}", hex::encode(&digest[..16]));
        let payload = bytes::Bytes::from(payload);
        let mut attempts = RETRY.attempts();
        loop {
            let mut message = PublishMessage::build()
                .payload(payload.clone())
                .expected_last_subject_sequence(expect)
                .message_id(id.clone());
            if deleted {
                // The tombstone replaces the context's whole log.
                message = message.header("Nats-Rollup", "sub");
            }
            counter!(names::NATS_REQUESTS, "op" => "append").increment(1);
            let acked = match self.js.send_publish(subject.clone(), message).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let error = match acked {
                Ok(ack) => return Ok(Some(ack.sequence)),
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => return Ok(None),
                Err(e) if matches!(e.kind(), PublishErrorKind::MaxPayloadExceeded) => return Err(unavailable(e)),
                Err(e) => e,
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

    fn head(&self, key: &ContextKey) -> Option<Head> {
        self.heads.lock().unwrap_or_else(PoisonError::into_inner).get(key).copied()
    }

    /// The log of `key` now ends at `sequence`, saved by this process.
    fn advance(&self, key: &ContextKey, sequence: u64) {
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        let head = heads.entry(key.clone()).or_insert(Head { last: sequence, derived: 0, fenced: false });
        head.last = sequence;
        head.fenced = false;
    }

    /// The tree of `key` holds the log up to `sequence`.
    fn mark_derived(&self, key: &ContextKey, sequence: u64) {
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(head) = heads.get_mut(key) {
            head.derived = head.derived.max(sequence);
        }
    }

    fn derivation_lock(&self, key: &ContextKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.deriving.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(key.clone()).or_default())
    }

    fn set_head(&self, key: &ContextKey, head: Option<Head>) {
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        match head {
            Some(head) => heads.insert(key.clone(), head),
            None => heads.remove(key),
        };
    }

    /// The context's log head, with the tree derived up to it; `None` if it does not exist.
    /// What this process held of it is replaced by what the log says (a reload).
    async fn current(&self, key: &ContextKey) -> Result<Option<(Head, StoredRecord)>> {
        let context = self.layout.context(key);
        let (tail, snapshot) = futures::join!(self.tail(key), self.last(&self.contexts, &context));
        let Some((last, record)) = tail? else { return Ok(None) };
        if record.deleted {
            return Ok(None);
        }
        let snapshot = match snapshot? {
            Some(s) => codec::decode::<StoredSnapshot>("snapshot", &s.payload)?.log_seq,
            None => 0,
        };
        {
            let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
            let head = heads.entry(key.clone()).or_insert(Head { last, derived: 0, fenced: false });
            // A save of this process may have landed after the tail was read.
            let last = head.last.max(last);
            *head = Head { last, derived: head.derived.max(snapshot).min(last), fenced: false };
        }
        self.derive_through(key, last, None).await?;
        let head = self.head(key).unwrap_or(Head { last, derived: last, fenced: false });
        Ok(Some((head, record)))
    }

    /// Derives the context's log into the tree up to `sequence`, record by record in log
    /// order, one derivation of a context at a time. `fresh`: the record at `sequence` as it
    /// was saved (after the one at the given sequence, with the context after it), derived
    /// without reading it back when everything before it is derived already.
    async fn derive_through(
        &self,
        key: &ContextKey,
        sequence: u64,
        fresh: Option<(u64, &StoredRecord, Option<&Context>)>,
    ) -> Result<()> {
        let lock = self.derivation_lock(key);
        let _one_at_a_time = lock.lock().await;
        // Deleted meanwhile: nothing to derive.
        let Some(head) = self.head(key) else { return Ok(()) };
        let mut derived = head.derived;
        if let Some((expect, record, after)) = fresh
            && derived == expect
        {
            self.derive(key, record, sequence, after).await?;
            self.mark_derived(key, sequence);
            return Ok(());
        }
        while derived < sequence {
            let Some(next) = self.record_from(key, derived + 1).await? else {
                return Err(Error::Corrupt(format!("context {key}: log record {sequence} is missing")));
            };
            let record: StoredRecord = codec::decode("record", &next.payload)?;
            if fresh.is_none() {
                tracing::info!(context = %key.id, tenant = %key.tenant, sequence = next.sequence, "deriving a saved record the tree missed");
            }
            self.derive(key, &record, next.sequence, None).await?;
            self.mark_derived(key, next.sequence);
            derived = next.sequence;
        }
        Ok(())
    }

    /// The tree must be derived up to the log's head before it is read.
    async fn derived(&self, key: &ContextKey) -> Result<bool> {
        match self.head(key) {
            Some(head) if head.derived == head.last => Ok(true),
            _ => Ok(self.current(key).await?.is_some()),
        }
    }

    /// Writes what `record` (log sequence `sequence`) changes in the tree, then the snapshot
    /// that says so. `after`: the context in memory, which tells which new messages are the
    /// only child of their parent (their parent's children need not be read first).
    async fn derive(
        &self,
        key: &ContextKey,
        record: &StoredRecord,
        sequence: u64,
        after: Option<&Context>,
    ) -> Result<()> {
        let revision = record.context.as_ref().map_or(0, |c| c.revision);
        let mut puts: Vec<(String, Vec<u8>)> = Vec::new();
        // Per parent: children added (node, id) and children that joined the active path.
        type Family = (Vec<(u64, Vec<u8>, Option<u64>)>, Vec<(u64, u64)>);
        let mut families: BTreeMap<Option<u64>, Family> = BTreeMap::new();
        for StoredNodeMessage { node, message } in &record.messages {
            let Some(message) = message else { continue };
            puts.push((self.layout.message(key, *node), codec::encode(message)));
            if *node >= record.new_from_node {
                let id = codec::message_id(&message.id, format_args!("message {node}"))?;
                puts.push((self.layout.message_id(key, &id), codec::encode(&StoredNode { node: *node })));
                families.entry(message.parent).or_default().0.push((*node, message.id.clone(), message.depth));
            }
        }
        for StoredJoined { node, parent, active_at } in &record.joined {
            families.entry(*parent).or_default().1.push((*node, active_at.unwrap_or(revision)));
        }
        let lists = futures::future::try_join_all(families.into_iter().map(|(parent, (added, joined))| async move {
            // A new message alone on its depth of the active path has no siblings to read.
            let alone = match (after, added.as_slice()) {
                (Some(ctx), [(node, _, Some(seq))]) if joined.is_empty() => {
                    ctx.message(*seq).is_some_and(|m| m.node == *node) && ctx.versions(*seq).count <= 1
                }
                _ => false,
            };
            let mut children = if alone { StoredChildren::default() } else { self.children_list(key, parent).await? };
            for (node, id, _) in added {
                if !children.children.iter().any(|c| c.node == node) {
                    children.children.push(StoredChildEntry { node, id, active_at: revision });
                }
            }
            for (node, active_at) in joined {
                if let Some(child) = children.children.iter_mut().find(|c| c.node == node) {
                    child.active_at = active_at;
                }
            }
            children.children.sort_by_key(|c| c.node);
            Ok::<_, Error>((self.layout.children(key, parent), codec::encode(&children)))
        }))
        .await?;
        puts.extend(lists);
        futures::future::try_join_all(puts.into_iter().map(|(subject, payload)| self.put(subject, payload))).await?;
        // Last: the snapshot says the tree holds everything up to `sequence`.
        let snapshot = StoredSnapshot { context: record.context.clone(), log_seq: sequence };
        self.put(self.layout.context(key), codec::encode(&snapshot)).await?;
        Ok(())
    }

    async fn children_list(&self, key: &ContextKey, parent: Option<u64>) -> Result<StoredChildren> {
        match self.last(&self.tree, &self.layout.children(key, parent)).await? {
            Some(found) => codec::decode("children", &found.payload),
            None => Ok(StoredChildren::default()),
        }
    }

    async fn read_messages(&self, key: &ContextKey, nodes: &[u64]) -> Result<Vec<Message>> {
        futures::stream::iter(nodes.iter().copied())
            .map(|node| async move {
                let found = self.last(&self.tree, &self.layout.message(key, node)).await?;
                let found = found.ok_or_else(|| Error::Corrupt(format!("context {key}: message {node} is missing")))?;
                codec::message_from_stored(node, codec::decode("message", &found.payload)?)
            })
            .buffered(READ_AHEAD)
            .try_collect()
            .await
    }

    /// Ends the context's log with a tombstone (if its last sequence is still `expect`) that
    /// replaces everything before it, then frees its tree. Returns the tombstone's sequence.
    async fn bury(&self, key: &ContextKey, context: Option<codec::StoredContext>, expect: u64) -> Result<u64> {
        // No derivation may write into the tree after it is purged.
        let lock = self.derivation_lock(key);
        let _held = lock.lock().await;
        let tombstone = StoredRecord { context, deleted: true, ..Default::default() };
        let Some(sequence) = self.append(key, codec::encode(&tombstone), true, expect).await? else {
            self.fence(key, expect);
            return Err(Error::Conflict { context: key.id.to_string() });
        };
        self.set_head(key, None);
        self.deriving.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
        self.view.remove(key);
        // The tombstone is the truth; what follows only frees space (a load reads the log first).
        let tree = self.tree.purge().filter(self.layout.tree_all(key)).into_future();
        let snapshot = self.contexts.purge().filter(self.layout.context(key)).into_future();
        let (tree, snapshot) = futures::join!(tree, snapshot);
        if let Err(error) = tree.map_err(unavailable).and(snapshot.map_err(unavailable)) {
            tracing::warn!(context = %key.id, %error, "deleted; its tree was not purged");
        }
        Ok(sequence)
    }

    /// The sequence a new context of `key` continues the log from: 0 for an empty log, the
    /// tombstone's for a deleted context (its tree was purged with it); `None` if the key
    /// holds a context. A copy cut short (records without a context) is buried first.
    async fn free_log(&self, key: &ContextKey) -> Result<Option<u64>> {
        let sequence = match self.tail(key).await? {
            None => return Ok(Some(0)),
            Some((sequence, record)) if record.deleted => sequence,
            Some((sequence, record)) if record.context.is_none() => {
                tracing::info!(context = %key.id, tenant = %key.tenant, "discarding a copy that did not finish");
                self.bury(key, None, sequence).await?
            }
            Some(_) => return Ok(None),
        };
        self.set_head(key, Some(Head { last: sequence, derived: sequence, fenced: false }));
        Ok(Some(sequence))
    }

    /// Refuses every later save of `key` until it is loaded again.
    fn fence(&self, key: &ContextKey, last: u64) {
        let head = self.head(key).unwrap_or(Head { last, derived: 0, fenced: true });
        self.set_head(key, Some(Head { fenced: true, ..head }));
    }

    /// The log's last sequence as this process knows it, or read; `Conflict` if another
    /// writer is known to have saved the context since this process loaded it.
    async fn expected(&self, key: &ContextKey) -> Result<u64> {
        match self.head(key) {
            Some(head) if head.fenced => Err(Error::Conflict { context: key.id.to_string() }),
            Some(head) => Ok(head.last),
            None => Ok(self.last(&self.log, &self.layout.log(key)).await?.map_or(0, |l| l.sequence)),
        }
    }
}

impl StoredRecord {
    fn of(save: &Save) -> Self {
        let ctx = &save.after;
        StoredRecord {
            context: Some(codec::context_to_stored(ctx)),
            path: Some(codec::path_to_stored(&ctx.shape)),
            messages: save
                .messages
                .iter()
                .map(|m| StoredNodeMessage { node: m.node, message: Some(codec::message_to_stored(m)) })
                .collect(),
            new_from_node: save.new_from_node(),
            joined: save
                .joined
                .iter()
                .map(|m| StoredJoined { node: m.node, parent: m.parent, active_at: None })
                .collect(),
            deleted: false,
        }
    }
}

/// Pauses between attempts while the cluster does not answer: 100 ms, doubling, at most 1 s
/// apart, for [`PATIENCE`] in all.
const RETRY: Backoff = Backoff { immediate: 0, first: RETRY_FIRST, max: RETRY_MAX, jitter: false };

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

#[async_trait]
impl Backend for Nats {
    async fn insert(&self, ctx: Arc<Context>) -> Result<Inserted> {
        let key = ctx.key();
        let Some(expect) = self.free_log(&key).await? else { return Ok(Inserted::Taken) };
        let save = Save::new_context(Arc::clone(&ctx));
        match self.save(&key, StoredRecord::of(&save), expect, Some(Arc::clone(&ctx))).await {
            Ok(_) => Ok(Inserted::Saved),
            Err(Error::Conflict { .. }) => Ok(Inserted::Taken),
            Err(e) => Err(e),
        }
    }

    async fn commit(&self, save: Save) -> Result<usize> {
        let key = save.after.key();
        let expect = self.expected(&key).await?;
        let after = Arc::clone(&save.after);
        self.save(&key, StoredRecord::of(&save), expect, Some(after)).await
    }

    async fn load(&self, key: &ContextKey) -> Result<Option<Context>> {
        let Some((_, record)) = self.current(key).await? else { return Ok(None) };
        let stored = record.context.ok_or_else(|| {
            Error::Unavailable(format!("context {key}: its copy by `ctxd migrate` did not finish; run it again"))
        })?;
        let segments = codec::segments_from_stored(record.path.as_ref());
        let length = stored.message_count;
        let mut nodes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        for (i, segment) in segments.iter().enumerate() {
            let end = segments.get(i + 1).map_or(length, |next| next.seq);
            nodes.extend((0..end.saturating_sub(segment.seq)).map(|k| segment.node + k));
        }
        let messages = self.read_messages(key, &nodes).await?;
        for (seq, message) in messages.iter().enumerate() {
            let follows = seq.checked_sub(1).map(|before| messages[before].node);
            if message.seq != seq as u64 || message.parent != follows {
                return Err(Error::Corrupt(format!(
                    "context {key}: message {} is not on the saved path",
                    message.node
                )));
            }
        }
        let fork_depths = record.path.map(|p| p.forks).unwrap_or_default();
        let forks = futures::future::try_join_all(fork_depths.into_iter().map(|seq| {
            let parent = codec::parent_at(&messages, seq);
            async move {
                let list = self.children_list(key, parent).await?;
                let siblings = list.children.into_iter().map(|c| {
                    Ok(Sibling { node: c.node, id: codec::message_id(&c.id, format_args!("child {}", c.node))? })
                });
                Ok::<_, Error>((seq, siblings.collect::<Result<Arc<[Sibling]>>>()?))
            }
        }))
        .await?;
        codec::context_from_stored(key.clone(), stored, messages, forks).map(Some)
    }

    async fn delete(&self, ctx: Arc<Context>) -> Result<()> {
        let key = ctx.key();
        let expect = self.expected(&key).await?;
        self.bury(&key, Some(codec::context_to_stored(&ctx)), expect).await.map(|_| ())
    }

    async fn exists(&self, key: &ContextKey) -> Result<bool> {
        Ok(self.tail(key).await?.is_some_and(|(_, record)| !record.deleted))
    }

    async fn count(&self, tenant: &TenantId) -> Result<u64> {
        Ok(self.view.count(tenant))
    }

    async fn list(
        &self,
        tenant: &TenantId,
        after: Option<ListPosition>,
        limit: usize,
    ) -> Result<(Vec<ContextSummary>, Option<ListPosition>)> {
        Ok(self.view.list(tenant, after, limit))
    }

    async fn interrupted(&self) -> Result<Vec<ContextKey>> {
        Ok(self.view.interrupted())
    }

    async fn keys(&self) -> Result<Vec<ContextKey>> {
        // From the log, the truth: a context whose snapshot a crash cut off is there too.
        let mut subjects = self.log.info_with_subjects(self.layout.log_subjects()).await.map_err(unavailable)?;
        let mut keys = Vec::new();
        while let Some((subject, _)) = subjects.try_next().await.map_err(unavailable)? {
            keys.extend(self.layout.parse_log(&subject));
        }
        Ok(keys)
    }

    async fn restore(&self, dump: &Dump) -> Result<Inserted> {
        dump.check()?;
        let ctx = &dump.context;
        let key = ctx.key();
        let Some(mut expect) = self.free_log(&key).await? else { return Ok(Inserted::Taken) };
        // A record is one publish: a long context takes several, and only the last names it.
        let mut chunks: Vec<Vec<StoredNodeMessage>> = vec![Vec::new()];
        let mut bytes = 0;
        for message in &dump.messages {
            let stored = codec::message_to_stored(message);
            let size = prost::Message::encoded_len(&stored);
            if bytes + size > RESTORE_RECORD_BYTES && !chunks.last().is_none_or(Vec::is_empty) {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(StoredNodeMessage { node: message.node, message: Some(stored) });
            }
        }
        let last = chunks.len() - 1;
        for (i, messages) in chunks.into_iter().enumerate() {
            let mut record = StoredRecord { messages, new_from_node: 0, ..Default::default() };
            if i == last {
                record.context = Some(codec::context_to_stored(ctx));
                record.path = Some(codec::path_to_stored(&ctx.shape));
                record.joined = dump
                    .active_at
                    .iter()
                    .map(|&(node, active_at)| {
                        let parent = dump.message(node).and_then(|m| m.parent);
                        StoredJoined { node, parent, active_at: Some(active_at) }
                    })
                    .collect();
            }
            self.save(&key, record, expect, None).await?;
            expect = self.head(&key).map_or(expect, |h| h.last);
        }
        Ok(Inserted::Saved)
    }

    async fn node_of(&self, key: &ContextKey, id: MessageId) -> Result<Option<u64>> {
        if !self.derived(key).await? {
            return Ok(None);
        }
        match self.last(&self.tree, &self.layout.message_id(key, &id)).await? {
            Some(found) => Ok(Some(codec::decode::<StoredNode>("message id", &found.payload)?.node)),
            None => Ok(None),
        }
    }

    async fn messages(&self, key: &ContextKey, nodes: &[u64]) -> Result<Vec<Message>> {
        self.derived(key).await?;
        self.read_messages(key, nodes).await
    }

    async fn children(&self, key: &ContextKey, parent: Option<u64>) -> Result<Vec<Child>> {
        if !self.derived(key).await? {
            return Ok(Vec::new());
        }
        self.children_list(key, parent)
            .await?
            .children
            .into_iter()
            .map(|c| {
                let id = codec::message_id(&c.id, format_args!("child {}", c.node))?;
                Ok(Child { node: c.node, id, active_at: c.active_at })
            })
            .collect()
    }

    async fn settle(&self, key: &ContextKey) {
        // The derivations behind this process's saves of `key` hold its lock: once it is
        // free and the tree is at the head, nothing of it is left to write.
        let settled = async {
            drop(self.derivation_lock(key).lock().await);
            if self.head(key).is_some_and(|head| head.derived < head.last)
                && let Err(error) = self.derived(key).await
            {
                tracing::warn!(context = %key.id, %error, "handing the context over with its tree behind; the next holder derives it");
            }
        };
        if tokio::time::timeout(PATIENCE, settled).await.is_err() {
            tracing::warn!(context = %key.id, "handing the context over with its tree behind; the next holder derives it");
        }
        // Whoever holds it next may save it: what this process knew of its log is stale then.
        self.set_head(key, None);
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        Some(self.inner.changes.subscribe())
    }

    fn figures(&self) -> Vec<(&'static str, u64)> {
        // The NATS servers export their own figures (their monitoring port).
        Vec::new()
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.stopping.cancel();
        // Let the derivations behind the last saves finish (a load would redo them anyway).
        self.derivations.close();
        if tokio::time::timeout(PATIENCE, self.derivations.wait()).await.is_err() {
            tracing::warn!("the tree is behind the last saves; the next load derives it");
        }
        if let Err(error) = self.client.flush().await {
            tracing::warn!(%error, "could not flush the NATS connection");
        }
    }
}

#[cfg(test)]
mod tests;
