//! Ownership: which node runs each context. A record per context in `{prefix}_owners`
//! (node and incarnation), written under a condition on the whole owners stream's last
//! sequence (nats-server 2.9 does not serialise per-key conditions, docs/cluster.md), and
//! followed by every node so it knows where to send calls and which runs lost their node.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use metrics::gauge;

use super::records::{OwnerRecord, parse_owner_key};
use super::{Held, Inner, unavailable};
use crate::cluster::{Claim, Lease};
use crate::domain::ContextKey;
use crate::store;
use crate::telemetry::names;

impl Inner {
    /// Follows the owners bucket: who runs which context.
    pub(super) async fn watch_owners(self: Arc<Self>) {
        self.follow(&self.owners, "who runs which context", |entry| self.owner_entry(entry), Duration::MAX, || {})
            .await;
    }

    pub(super) fn owner_entry(&self, entry: kv::Entry) {
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

    pub(super) fn hold(&self, key: &ContextKey, revision: u64, standing: u64) -> Claim {
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
    pub(super) async fn read_owner(&self, subject: &str) -> Result<(u64, Option<(u64, OwnerRecord)>), store::Error> {
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
    pub(super) async fn write_owner(
        &self,
        subject: &str,
        record: Option<&OwnerRecord>,
        after: u64,
    ) -> Result<Option<u64>, store::Error> {
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
}
