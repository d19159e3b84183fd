//! Reads of what is saved that need no actor: a tenant's contexts, the children of a
//! message on any branch (what ListMessages pages through), and a message's path above it
//! (what ListPathMessages pages back through).

use super::contexts::Contexts;
use super::error::{Error, Result};
use crate::domain::{
    Child, ContextKey, ContextSummary, ListPosition, Message, MessageId, NodeId, PathPoint, Seq, Sibling, TenantId,
    TreeReader, Versions,
};
use crate::store::Tree;

impl Contexts {
    /// A page of `tenant`'s contexts, most recently updated first.
    pub async fn list(
        &self,
        tenant: &TenantId,
        after: Option<ListPosition>,
        limit: usize,
    ) -> Result<(Vec<ContextSummary>, Option<ListPosition>)> {
        Ok(self.shared.store.list(tenant, after, limit).await?)
    }

    /// A page of the children of `parent` (`None`: the first messages) of a context, oldest
    /// first, from the one after node `after`; read from what is saved, on any branch. Returns
    /// where the next page starts, if there may be one.
    pub async fn children(
        &self,
        key: &ContextKey,
        parent: Option<MessageId>,
        after: Option<NodeId>,
        limit: usize,
    ) -> Result<(Vec<(Message, Versions)>, Option<NodeId>)> {
        let store = &*self.shared.store;
        if !store.exists(key).await? {
            return Err(Error::NotFound(key.id));
        }
        let parent_id = parent;
        let parent = match parent {
            Some(id) => Some(self.node_of(key, id).await?),
            None => None,
        };
        let children = store.children(key, parent).await?;
        let group: Vec<Sibling> = children.iter().map(Child::sibling).collect();
        let page: Vec<NodeId> =
            children.iter().map(|c| c.node).filter(|n| after.is_none_or(|a| *n > a)).take(limit).collect();
        let next = (page.len() == limit).then(|| page.last().copied()).flatten();
        let messages = store.messages(key, &page).await?;
        let listed = messages.into_iter().map(|m| {
            let versions = Versions::within(&group, m.node, parent_id);
            (m, versions)
        });
        Ok((listed.collect(), next))
    }

    /// Up to `limit` messages of a path, oldest first, ending just before `start` (the end of
    /// the active path, a message, or where the last page began), each with its versions;
    /// and where the page began, if messages come before it. Above a message of the active
    /// path, the active path is in memory; above one the active path left since, its
    /// ancestors are read from storage one by one (a message's parent never changes).
    pub async fn path_page(
        &self,
        key: &ContextKey,
        start: PathStart,
        limit: usize,
    ) -> Result<(Vec<(Message, Versions)>, Option<PathPoint>)> {
        let ctx = self.get(key).await?;
        let end = match start {
            PathStart::End => Ok(ctx.next_seq()),
            PathStart::Before(id) => match ctx.on_path(id) {
                Some(message) => Ok(message.seq),
                None => Err(self.node_of(key, id).await?),
            },
            PathStart::Above(point) => match ctx.message(point.seq) {
                Some(message) if message.node == point.node => Ok(point.seq),
                _ => Err(point.node),
            },
        };
        match end {
            Ok(end) => {
                let first = Seq::new(end.get().saturating_sub(limit as u64));
                let page: Vec<(Message, Versions)> =
                    ctx.path_between(first, end).map(|m| ((**m).clone(), ctx.versions(m.seq))).collect();
                let next = page.first().filter(|(m, _)| m.seq > Seq::FIRST).map(|(m, _)| point_of(m));
                Ok((page, next))
            }
            Err(node) => self.ancestors(key, node, limit).await,
        }
    }

    /// The node of message `id` of `key` on any branch; NOT_FOUND if it has none.
    async fn node_of(&self, key: &ContextKey, id: MessageId) -> Result<NodeId> {
        let found = self.shared.store.node_of(key, id).await?;
        found.ok_or_else(|| Error::UnknownMessage { context: key.id.to_string(), message: id })
    }

    /// Up to `limit` of the messages above node `below` (off the active path), oldest first.
    async fn ancestors(
        &self,
        key: &ContextKey,
        below: NodeId,
        limit: usize,
    ) -> Result<(Vec<(Message, Versions)>, Option<PathPoint>)> {
        let tree = Tree::new(&*self.shared.store, key);
        let read = |node: NodeId| tree.message(node);
        let mut parent = read(below).await?.parent;
        let mut chain = Vec::with_capacity(limit.min(1024));
        while chain.len() < limit
            && let Some(node) = parent
        {
            let message = read(node).await?;
            parent = message.parent;
            chain.push(message);
        }
        // The message above the page's first, if any, names the versions' parent.
        let above = match parent {
            Some(node) => Some(read(node).await?.id),
            None => None,
        };
        chain.reverse();
        let mut page = Vec::with_capacity(chain.len());
        let mut parent_id = above;
        for message in chain {
            let group: Vec<Sibling> = tree.children(message.parent).await?.iter().map(Child::sibling).collect();
            let versions = Versions::within(&group, message.node, parent_id);
            parent_id = Some(message.id);
            page.push((message, versions));
        }
        let next = page.first().filter(|(m, _)| m.parent.is_some()).map(|(m, _)| point_of(m));
        Ok((page, next))
    }
}

/// Where a page of a path ends (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStart {
    /// The end of the active path: the page holds its last messages.
    End,
    /// Just before this message, on its path.
    Before(MessageId),
    /// Just before where the last page began.
    Above(PathPoint),
}

fn point_of(message: &Message) -> PathPoint {
    PathPoint { node: message.node, seq: message.seq }
}
