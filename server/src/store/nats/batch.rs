//! Atomic batches (nats-server 2.12, ADR-50): every message of a save stored together or
//! none, in one Raft entry of the partition's stream. The messages are published with
//! `Nats-Batch-Id` and `Nats-Batch-Sequence`, without waiting (one connection keeps them in
//! order); the last carries `Nats-Batch-Commit` and is a request whose answer is the
//! stream's acknowledgement of all of them. The server checks every message's conditions
//! (`Nats-Expected-Last-Subject-Sequence`) as it commits, in the stream's replicated order.
//!
//! (synadia-io/orbit.rs's `jetstream-extra` does this for async-nats 0.48; ctxd is on 0.52,
//! whose types it cannot take.)

use std::time::Duration;

use async_nats::header::{NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL, NATS_BATCH_ID, NATS_BATCH_SEQUENCE};
use async_nats::{HeaderMap, Request};
use bytes::Bytes;
use metrics::counter;
use serde::Deserialize;

use super::{Inner, unavailable};
use crate::store::error::{Error, Result};
use crate::telemetry::names;

/// How long the commit waits for the stream's answer before the attempt counts as lost.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// The largest batch a server takes by default is 1,000 messages; a save that writes more
/// (a fork or a copy of a long context) is split, its head last.
pub const MAX_MESSAGES: usize = 500;
/// And its bytes, kept well under what a server stages in memory per batch.
pub const MAX_BYTES: usize = 512 * 1024;

/// One message of a batch.
#[derive(Debug, Clone)]
pub struct Put {
    pub subject: String,
    pub payload: Bytes,
    pub headers: HeaderMap,
}

impl Put {
    pub fn new(subject: String, payload: impl Into<Bytes>) -> Self {
        Self { subject, payload: payload.into(), headers: HeaderMap::new() }
    }

    pub fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.insert(name, value.to_string().as_str());
        self
    }
}

/// What the stream answered a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// All stored; the sequence of the last message.
    At(u64),
    /// Refused: a condition did not hold (`Nats-Expected-Last-Subject-Sequence`).
    WrongLast,
    /// Refused: a message id was stored already (an earlier attempt of this batch landed).
    Duplicate,
}

/// Error codes of the stream's answer (nats-server's `errors.json`).
const WRONG_LAST_SEQUENCE: u64 = 10071;
const DUPLICATE_MESSAGE_ID: u64 = 10201;
const ATOMIC_PUBLISH_DISABLED: u64 = 10174;
/// A condition's subject is being written by another batch still in flight (a lease being
/// taken): the answer is not known yet, so the batch is sent again.
const CONDITION_IN_FLIGHT: u64 = 10164;

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    seq: u64,
    error: Option<Refusal>,
}

#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

impl Inner {
    /// Publishes `puts` as one atomic batch, once. `Err(Unavailable)`: no answer (a leader
    /// being elected, a server gone), and whether it was stored is unknown.
    pub(super) async fn publish_batch(&self, puts: &[Put]) -> Result<Stored> {
        let Some((last, rest)) = puts.split_last() else { return Ok(Stored::At(0)) };
        counter!(names::NATS_REQUESTS, "op" => "batch").increment(1);
        let id = uuid::Uuid::new_v4().simple().to_string();
        for (i, put) in rest.iter().enumerate() {
            let mut headers = put.headers.clone();
            headers.insert(NATS_BATCH_ID, id.as_str());
            headers.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
            self.client
                .publish_with_headers(put.subject.clone(), headers, put.payload.clone())
                .await
                .map_err(unavailable)?;
        }
        let mut headers = last.headers.clone();
        headers.insert(NATS_BATCH_ID, id.as_str());
        headers.insert(NATS_BATCH_SEQUENCE, puts.len().to_string().as_str());
        headers.insert(NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL);
        let request = Request::new().headers(headers).payload(last.payload.clone()).timeout(Some(ACK_WAIT));
        let answer = self.client.send_request(last.subject.clone(), request).await.map_err(unavailable)?;
        let answer: Answer = serde_json::from_slice(&answer.payload)
            .map_err(|e| Error::Unavailable(format!("NATS: an answer to a batch that is not one ({e})")))?;
        match answer.error {
            None => Ok(Stored::At(answer.seq)),
            Some(refusal) => match refusal.err_code {
                WRONG_LAST_SEQUENCE => Ok(Stored::WrongLast),
                CONDITION_IN_FLIGHT => Err(Error::Unavailable(format!("NATS: {}", refusal.description))),
                DUPLICATE_MESSAGE_ID => Ok(Stored::Duplicate),
                ATOMIC_PUBLISH_DISABLED => Err(Error::Misconfigured(format!(
                    "the stream of {} does not take atomic batches (allow_atomic); it was not made by this ctxd",
                    last.subject
                ))),
                _ => Err(Error::Unavailable(format!("NATS refused a save: {}", refusal.description))),
            },
        }
    }
}
