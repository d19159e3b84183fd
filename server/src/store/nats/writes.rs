//! What a save writes, as the messages of one batch: each new or changed message, each new
//! message's id, the child lists it changes, the list entry, the run marker when a run
//! starts or ends, and last the head.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};

use super::batch::Put;
use super::layout::{StoredChildEntry, StoredChildren, StoredHead};
use super::{Inner, READ_AHEAD};
use crate::domain::{Context, ContextKey, Message, NodeId, Seq};
use crate::store::codec::{self, StoredContext, StoredJoined, StoredNode, StoredNodeMessage, StoredRecord};
use crate::store::error::{Error, Result};
use crate::store::save::Save;

/// How long the marker of a run that ended stays: the shortest per-message TTL (it only
/// makes the marker go; the entry itself says the context rests).
const ENDED_RUN_TTL: &str = "1s";

impl Inner {
    /// The batch of `record` (a save of `key`): `after` is the context in memory after it,
    /// which tells which new messages are the only child of their parent (their parent's
    /// children need not be read first); `was_running`, whether the context was saved mid-run
    /// before (`None`: it is new).
    pub(super) async fn writes(
        &self,
        key: &ContextKey,
        record: &StoredRecord,
        after: Option<&Context>,
        was_running: Option<bool>,
    ) -> Result<Vec<Put>> {
        let mut puts = self.tree_writes(key, record, after).await?;
        puts.extend(self.head_writes(key, record, was_running)?);
        Ok(puts)
    }

    /// What ends the batch of `record`: the list entry, the run marker when a run starts or
    /// ends, and last the head.
    pub(super) fn head_writes(
        &self,
        key: &ContextKey,
        record: &StoredRecord,
        was_running: Option<bool>,
    ) -> Result<Vec<Put>> {
        let mut puts = Vec::with_capacity(3);
        if let Some(context) = &record.context {
            let running = !codec::summary_from_stored(key.id, context)?.state.is_resting();
            puts.push(Put::new(self.layout.entry(key), codec::encode(&listed(context))));
            if running && was_running != Some(true) {
                puts.push(Put::new(self.layout.running(key), &b"run"[..]));
            } else if !running && was_running == Some(true) {
                puts.push(Put::new(self.layout.running(key), bytes::Bytes::new()).header("Nats-TTL", ENDED_RUN_TTL));
            }
        }
        let head = StoredHead { context: record.context.clone(), path: record.path.clone() };
        puts.push(Put::new(self.layout.head(key), codec::encode(&head)));
        Ok(puts)
    }

    /// The messages, ids and child lists `record` changes.
    pub(super) async fn tree_writes(
        &self,
        key: &ContextKey,
        record: &StoredRecord,
        after: Option<&Context>,
    ) -> Result<Vec<Put>> {
        let revision = record.context.as_ref().map_or(0, |c| c.revision);
        let mut puts = Vec::new();
        // Per parent: children added (node, id, depth) and children that joined the active path.
        type Family = (Vec<(u64, Vec<u8>, Option<u64>)>, Vec<(u64, u64)>);
        let mut families: BTreeMap<Option<u64>, Family> = BTreeMap::new();
        for StoredNodeMessage { node, message } in &record.messages {
            let Some(message) = message else { continue };
            puts.push(Put::new(self.layout.message(key, NodeId::new(*node)), codec::encode(message)));
            if *node >= record.new_from_node {
                let id = codec::message_id(&message.id, format_args!("message {node}"))?;
                puts.push(Put::new(self.layout.message_id(key, &id), codec::encode(&StoredNode { node: *node })));
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
            Ok::<_, Error>(Put::new(self.layout.children(key, parent), codec::encode(&children)))
        }))
        .await?;
        puts.extend(lists);
        Ok(puts)
    }

    pub(super) async fn children_list(&self, key: &ContextKey, parent: Option<NodeId>) -> Result<StoredChildren> {
        match self.last(key, &self.layout.children(key, parent)).await? {
            Some(found) => codec::decode("children", &found.payload),
            None => Ok(StoredChildren::default()),
        }
    }

    pub(super) async fn read_messages(&self, key: &ContextKey, nodes: &[NodeId]) -> Result<Vec<Message>> {
        futures::stream::iter(nodes.iter().copied())
            .map(|node| async move {
                let found = self.last(key, &self.layout.message(key, node)).await?;
                let found = found.ok_or_else(|| Error::Corrupt(format!("context {key}: message {node} is missing")))?;
                codec::message_from_stored(node, codec::decode("message", &found.payload)?)
            })
            .buffered(READ_AHEAD)
            .try_collect()
            .await
    }
}

/// A context's list entry: its metadata without what a list never shows (the system prompt,
/// queued messages, tools), so that reading a tenant's list stays small.
pub fn listed(context: &StoredContext) -> StoredContext {
    StoredContext {
        system_prompt: String::new(),
        queued: Vec::new(),
        external_tools: Vec::new(),
        auto_approve_tools: Vec::new(),
        ..context.clone()
    }
}

impl StoredRecord {
    /// What `save` changes, as the batch is composed from it.
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
