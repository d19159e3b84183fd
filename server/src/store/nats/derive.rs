//! What this process knows of each context's log (its head: the last sequence, how far the
//! tree is derived, whether it is fenced), and deriving the tree and the snapshot from the
//! log's records, one context at a time and in log order.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use futures::{StreamExt, TryStreamExt};

use super::layout::{StoredChildEntry, StoredChildren, StoredJoined, StoredNodeMessage, StoredRecord, StoredSnapshot};
use super::{Head, Inner, READ_AHEAD};
use crate::domain::{Context, ContextKey, Message, NodeId, Seq};
use crate::store::codec::{self, StoredNode};
use crate::store::error::{Error, Result};

impl Inner {
    pub(super) fn head(&self, key: &ContextKey) -> Option<Head> {
        self.heads.lock().unwrap_or_else(PoisonError::into_inner).get(key).copied()
    }

    /// The log of `key` now ends at `sequence`, saved by this process.
    pub(super) fn advance(&self, key: &ContextKey, sequence: u64) {
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        let head = heads.entry(key.clone()).or_insert(Head { last: sequence, derived: 0, fenced: false });
        head.last = sequence;
        head.fenced = false;
    }

    /// The tree of `key` holds the log up to `sequence`.
    pub(super) fn mark_derived(&self, key: &ContextKey, sequence: u64) {
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(head) = heads.get_mut(key) {
            head.derived = head.derived.max(sequence);
        }
    }

    pub(super) fn derivation_lock(&self, key: &ContextKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.deriving.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(key.clone()).or_default())
    }

    pub(super) fn set_head(&self, key: &ContextKey, head: Option<Head>) {
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        match head {
            Some(head) => heads.insert(key.clone(), head),
            None => heads.remove(key),
        };
    }

    /// The context's log head, with the tree derived up to it; `None` if it does not exist.
    /// What this process held of it is replaced by what the log says (a reload).
    pub(super) async fn current(&self, key: &ContextKey) -> Result<Option<(Head, StoredRecord)>> {
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
    pub(super) async fn derive_through(
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
    pub(super) async fn derived(&self, key: &ContextKey) -> Result<bool> {
        match self.head(key) {
            Some(head) if head.derived == head.last => Ok(true),
            _ => Ok(self.current(key).await?.is_some()),
        }
    }

    /// Writes what `record` (log sequence `sequence`) changes in the tree, then the snapshot
    /// that says so. `after`: the context in memory, which tells which new messages are the
    /// only child of their parent (their parent's children need not be read first).
    pub(super) async fn derive(
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
            puts.push((self.layout.message(key, NodeId::new(*node)), codec::encode(message)));
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
                    let seq = Seq::new(*seq);
                    ctx.message(seq).is_some_and(|m| m.node == NodeId::new(*node)) && ctx.versions(seq).count <= 1
                }
                _ => false,
            };
            let parent = parent.map(NodeId::new);
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

    pub(super) async fn children_list(&self, key: &ContextKey, parent: Option<NodeId>) -> Result<StoredChildren> {
        match self.last(&self.tree, &self.layout.children(key, parent)).await? {
            Some(found) => codec::decode("children", &found.payload),
            None => Ok(StoredChildren::default()),
        }
    }

    pub(super) async fn read_messages(&self, key: &ContextKey, nodes: &[NodeId]) -> Result<Vec<Message>> {
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
}
