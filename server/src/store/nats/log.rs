//! The log's I/O: reads and conditional appends, retried while the cluster does not answer
//! (a leader being elected), the fences that refuse a writer that missed a save, and
//! burying a deleted context.

use std::future::IntoFuture;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageError, LastRawMessageErrorKind, Stream};
use metrics::counter;
use sha2::{Digest, Sha256};

use super::layout::{StoredJoined, StoredNodeMessage, StoredRecord};
use super::{Head, Inner, Last, PATIENCE, RETRY_FIRST, RETRY_MAX, unavailable};
use crate::backoff::{Attempts, Backoff};
use crate::domain::{ContextKey, NodeId};
use crate::store::codec;
use crate::store::error::{Error, Result};
use crate::store::save::Save;
use crate::telemetry::names;

impl Inner {
    pub(super) async fn last(&self, stream: &Stream, subject: &str) -> Result<Option<Last>> {
        self.read(|| stream.get_last_raw_message_by_subject(subject)).await
    }

    /// The first record of the context's log at or after `sequence`.
    pub(super) async fn record_from(&self, key: &ContextKey, sequence: u64) -> Result<Option<Last>> {
        let subject = self.layout.log(key);
        self.read(|| self.log.raw_message_builder().sequence(sequence).next_by_subject(subject.clone()).send()).await
    }

    /// One message that may not exist (`None` then, not an error), read again while the
    /// cluster cannot answer (a leader being elected), for up to [`PATIENCE`].
    pub(super) async fn read<F>(&self, attempt: impl Fn() -> F) -> Result<Option<Last>>
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
    pub(super) async fn tail(&self, key: &ContextKey) -> Result<Option<(u64, StoredRecord)>> {
        match self.last(&self.log, &self.layout.log(key)).await? {
            Some(last) => Ok(Some((last.sequence, codec::decode("record", &last.payload)?))),
            None => Ok(None),
        }
    }

    /// Publishes and waits for the stream's acknowledgement (its replicas hold it).
    pub(super) async fn put(&self, subject: String, payload: Vec<u8>) -> Result<u64> {
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
    /// acknowledgement was lost did reach the log, the retry is answered with that record's
    /// sequence instead of appending it twice (JetStream's duplicate window, or, on servers
    /// that check the expected sequence first, [`Inner::landed`]). The id names the record's content,
    /// so a different record after a failed save is never mistaken for it; and if that failed
    /// save reached the log after all, the different record is refused (the log moved on).
    pub(super) async fn append(
        &self,
        key: &ContextKey,
        payload: Vec<u8>,
        deleted: bool,
        expect: u64,
    ) -> Result<Option<u64>> {
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
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return self.landed(&subject, &payload).await;
                }
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

    /// After a refusal for a wrong last sequence: the sequence of `payload` if it is the log's
    /// last record, which means an earlier attempt of this very save landed. nats-server 2.10
    /// and later check the expected sequence before the message id, so a retry whose first
    /// attempt's acknowledgement was lost is refused rather than answered as a duplicate.
    /// `None`: the log moved on with another record.
    async fn landed(&self, subject: &str, payload: &[u8]) -> Result<Option<u64>> {
        let last = self.last(&self.log, subject).await?;
        Ok(last.filter(|last| last.payload.as_ref() == payload).map(|last| last.sequence))
    }

    /// Ends the context's log with a tombstone (if its last sequence is still `expect`) that
    /// replaces everything before it, then frees its tree. Returns the tombstone's sequence.
    pub(super) async fn bury(
        &self,
        key: &ContextKey,
        context: Option<codec::StoredContext>,
        expect: u64,
    ) -> Result<u64> {
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
    pub(super) async fn free_log(&self, key: &ContextKey) -> Result<Option<u64>> {
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
    pub(super) fn fence(&self, key: &ContextKey, last: u64) {
        let head = self.head(key).unwrap_or(Head { last, derived: 0, fenced: true });
        self.set_head(key, Some(Head { fenced: true, ..head }));
    }

    /// The log's last sequence as this process knows it, or read; `Conflict` if another
    /// writer is known to have saved the context since this process loaded it.
    pub(super) async fn expected(&self, key: &ContextKey) -> Result<u64> {
        match self.head(key) {
            Some(head) if head.fenced => Err(Error::Conflict { context: key.id.to_string() }),
            Some(head) => Ok(head.last),
            None => Ok(self.last(&self.log, &self.layout.log(key)).await?.map_or(0, |l| l.sequence)),
        }
    }
}

impl StoredRecord {
    pub(super) fn of(save: &Save) -> Self {
        let ctx = &save.after;
        StoredRecord {
            context: Some(codec::context_to_stored(ctx)),
            path: Some(codec::path_to_stored(&ctx.shape)),
            messages: save
                .messages
                .iter()
                .map(|m| StoredNodeMessage { node: m.node.get(), message: Some(codec::message_to_stored(m)) })
                .collect(),
            new_from_node: save.new_from_node().get(),
            joined: save
                .joined
                .iter()
                .map(|m| StoredJoined { node: m.node.get(), parent: m.parent.map(NodeId::get), active_at: None })
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
