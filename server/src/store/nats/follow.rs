//! Following the log: at start, the last record of every context makes the view; then every
//! process's saves keep it (and list watchers) current.

use std::sync::Arc;

use async_nats::jetstream::consumer;
use futures::StreamExt;

use super::layout::StoredRecord;
use super::{Following, Inner, RETRY_MAX, unavailable};
use crate::store::backend::Change;
use crate::store::codec;
use crate::store::error::Result;

impl Inner {
    /// Reads the last record of each context's log into the view, and returns the consumer
    /// that did, positioned after them, to follow the log with. The log is the truth: a
    /// snapshot may lag it (written behind the save, or cut off by a crash), and a context
    /// saved mid-run must be found to be resumed.
    pub(super) async fn read_view(&self) -> Result<Following> {
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
    pub(super) async fn follower(&self, deliver_policy: consumer::DeliverPolicy) -> Result<consumer::pull::Ordered> {
        let config = consumer::pull::OrderedConfig {
            filter_subject: self.layout.log_subjects(),
            deliver_policy,
            ..Default::default()
        };
        self.log.create_consumer(config).await.map_err(unavailable)?.messages().await.map_err(unavailable)
    }

    /// Applies one log record, saved by any process, to the view; `report`: tells the
    /// runtime too.
    pub(super) fn followed(&self, subject: &str, payload: &[u8], report: bool) -> Result<()> {
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
    pub(super) async fn follow(self: Arc<Self>, mut following: Following) {
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
}
