//! Reads: the last message of a subject from the stream's leader (what a writer must see),
//! and scans of many subjects at once (direct gets in batches, from any replica: lists and
//! searches, which may lag the last save by milliseconds). Both are retried while the
//! cluster does not answer.

use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageError, LastRawMessageErrorKind};
use futures::StreamExt;
use metrics::counter;
use serde::Serialize;

use super::{Inner, Last, RETRY, retry_later, unavailable};
use crate::domain::ContextKey;
use crate::store::error::{Error, Result};
use crate::telemetry::names;

/// Messages a scan asks for at once.
const SCAN_BATCH: usize = 1000;
/// How long a scan waits for the next message of a batch.
const SCAN_WAIT: Duration = Duration::from_secs(5);

/// A message a scan found.
pub struct Found {
    pub subject: String,
    pub sequence: u64,
    pub payload: bytes::Bytes,
}

#[derive(Serialize)]
struct ScanRequest<'a> {
    batch: usize,
    seq: u64,
    next_by_subj: &'a str,
}

impl Inner {
    /// The last message of `subject` in the partition of `key`, read from the stream's
    /// leader; `None` if there is none.
    pub(super) async fn last(&self, key: &ContextKey, subject: &str) -> Result<Option<Last>> {
        self.last_in(self.layout.partition(key), subject).await
    }

    /// The last message of `subject` in partition `partition`, read from the stream's leader.
    pub(super) async fn last_in(&self, partition: u32, subject: &str) -> Result<Option<Last>> {
        let stream = &self.streams[partition as usize];
        self.read(|| stream.get_last_raw_message_by_subject(subject)).await
    }

    /// One message that may not exist (`None` then, not an error), read again while the
    /// cluster cannot answer (a leader being elected), for up to [`super::PATIENCE`].
    async fn read<F>(&self, attempt: impl Fn() -> F) -> Result<Option<Last>>
    where
        F: Future<Output = std::result::Result<StreamMessage, LastRawMessageError>>,
    {
        let mut attempts = RETRY.attempts();
        loop {
            counter!(names::NATS_REQUESTS, "op" => "read").increment(1);
            match attempt().await {
                Ok(message) => {
                    let id = message.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned());
                    return Ok(Some(Last { sequence: message.sequence, payload: message.payload, id }));
                }
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
                Err(e) if retry_later(&mut attempts, &self.closed).await => {
                    tracing::debug!(error = %e, "the NATS cluster did not answer a read; retrying");
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    /// The last message of every subject of partition `partition` that matches `filter`
    /// (wildcards allowed), oldest first, retried whole while the cluster cannot answer.
    pub(super) async fn scan(&self, partition: u32, filter: &str) -> Result<Vec<Found>> {
        let mut attempts = RETRY.attempts();
        loop {
            match self.scan_once(partition, filter).await {
                Ok(found) => return Ok(found),
                Err(Error::Unavailable(error)) if retry_later(&mut attempts, &self.closed).await => {
                    tracing::debug!(%error, "the NATS cluster did not answer a scan; retrying");
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Direct gets of `SCAN_BATCH` messages at a time (nats-server 2.11, ADR-31): each stream
    /// holds one message a subject, so the messages matching `filter` are the subjects' last.
    async fn scan_once(&self, partition: u32, filter: &str) -> Result<Vec<Found>> {
        let api = format!("$JS.API.DIRECT.GET.{}", self.layout.stream(partition));
        let mut found = Vec::new();
        let mut from = 1;
        loop {
            counter!(names::NATS_REQUESTS, "op" => "scan").increment(1);
            let inbox = self.client.new_inbox();
            let mut answers = self.client.subscribe(inbox.clone()).await.map_err(unavailable)?;
            let request = serde_json::to_vec(&ScanRequest { batch: SCAN_BATCH, seq: from, next_by_subj: filter })
                .map_err(|e| Error::Engine(e.to_string()))?;
            self.client.publish_with_reply(api.clone(), inbox, request.into()).await.map_err(unavailable)?;
            let pending = loop {
                let answer = tokio::time::timeout(SCAN_WAIT, answers.next())
                    .await
                    .map_err(|_| Error::Unavailable(format!("NATS: no answer to a scan of {filter}")))?
                    .ok_or_else(|| Error::Unavailable("NATS: the connection closed during a scan".into()))?;
                let header =
                    |name: &str| answer.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
                match answer.status.map(|s| s.as_u16()) {
                    Some(404) => break 0,
                    // The end of a batch, saying how many more match.
                    Some(204) => {
                        break header("Nats-Num-Pending").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
                    }
                    Some(status) if status != 200 => {
                        return Err(Error::Unavailable(format!(
                            "NATS: a scan of {filter} was answered {status} {}",
                            answer.description.unwrap_or_default()
                        )));
                    }
                    _ => {}
                }
                let subject = header("Nats-Subject").unwrap_or_default();
                let sequence = header("Nats-Sequence").and_then(|s| s.parse().ok()).unwrap_or(0);
                from = from.max(sequence + 1);
                found.push(Found { subject, sequence, payload: answer.payload });
            };
            if pending == 0 {
                return Ok(found);
            }
        }
    }
}
