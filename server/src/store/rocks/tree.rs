//! Reading one context's tree: the children of a message (one iterator for many parents),
//! and [`Tree`], what a branch switch or a listing reads.

use rocksdb::ReadOptions;

use super::keys;
use super::store::Store;
use crate::domain::{Child, ContextKey, Message, MessageId, NodeId};
use crate::store::codec;
use crate::store::error::{Error, Result};

impl Store {
    /// The children of `parent` (`None`: the first messages) of the context whose key is
    /// `context`, oldest first.
    pub(super) fn children_of(&self, context: &[u8], parent: Option<NodeId>) -> Result<Vec<Child>> {
        Ok(self.children_of_each(context, [parent])?.pop().unwrap_or_default())
    }

    /// The children of each of `parents`, with one iterator for all: a seek per parent, not
    /// an iterator each (what makes a path with many versions load nearly as fast as one
    /// with none).
    pub(super) fn children_of_each(
        &self,
        context: &[u8],
        parents: impl IntoIterator<Item = Option<NodeId>>,
    ) -> Result<Vec<Vec<Child>>> {
        let mut read = ReadOptions::default();
        if let Some(end) = keys::prefix_end(context) {
            read.set_iterate_upper_bound(end);
        }
        let mut iter = self.db.raw_iterator_cf_opt(self.family(keys::CF_CHILDREN)?, read);
        let mut groups = Vec::new();
        for parent in parents {
            let prefix = keys::children_prefix(context, parent);
            let mut children = Vec::new();
            iter.seek(&prefix);
            while let (Some(bytes), Some(value)) = (iter.key(), iter.value()) {
                let Some(node) = keys::node_after(&prefix, bytes) else { break };
                let codec::StoredChild { id, active_at } = codec::decode("child", value)?;
                let id = codec::message_id(&id, format_args!("child {node}"))?;
                children.push(Child { node, id, active_at });
                iter.next();
            }
            iter.status()?;
            groups.push(children);
        }
        Ok(groups)
    }

    /// What a switch reads of context `key`'s tree.
    pub fn tree<'a>(&'a self, key: &ContextKey) -> Tree<'a> {
        Tree { store: self, context: keys::context_key(key) }
    }
}

/// One context's tree in storage, read for a switch or a listing.
pub struct Tree<'a> {
    store: &'a Store,
    context: Vec<u8>,
}

impl Tree<'_> {
    /// The node of message `id`, if the context has it (on any branch).
    pub fn node_of(&self, id: MessageId) -> Result<Option<NodeId>> {
        let family = self.store.family(keys::CF_MESSAGE_IDS)?;
        match self.store.db.get_pinned_cf(family, keys::message_id_key(&self.context, &id))? {
            Some(bytes) => Ok(Some(NodeId::new(codec::decode::<codec::StoredNode>("message id", &bytes)?.node))),
            None => Ok(None),
        }
    }

    /// The children of `parent` (`None`: the first messages), oldest first.
    pub fn children(&self, parent: Option<NodeId>) -> Result<Vec<Child>> {
        self.store.children_of(&self.context, parent)
    }

    /// The messages with `nodes`, in that order.
    pub fn messages(&self, nodes: &[NodeId]) -> Result<Vec<Message>> {
        let family = self.store.family(keys::CF_MESSAGES)?;
        let found = self.store.db.batched_multi_get_cf(
            family,
            nodes.iter().map(|n| keys::message_key(&self.context, *n)),
            false,
        );
        nodes
            .iter()
            .zip(found)
            .map(|(node, bytes)| {
                let bytes = bytes?.ok_or_else(|| Error::Corrupt(format!("message {node} is indexed but missing")))?;
                codec::message_from_stored(*node, codec::decode("message", &bytes)?)
            })
            .collect()
    }
}

/// The tests walk branches straight on a store, without a runtime: these reads are blocking.
#[cfg(test)]
impl crate::domain::TreeReader for Tree<'_> {
    type Error = Error;

    async fn node_of(&self, id: MessageId) -> Result<Option<NodeId>> {
        Tree::node_of(self, id)
    }

    async fn message(&self, node: NodeId) -> Result<Message> {
        self.messages(&[node])?.pop().ok_or_else(|| Error::Corrupt(format!("message {node} is missing")))
    }

    async fn children(&self, parent: Option<NodeId>) -> Result<Vec<Child>> {
        Tree::children(self, parent)
    }
}
