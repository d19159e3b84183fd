//! Reads of what is saved that need no actor: a tenant's contexts, and the children of a
//! message on any branch (what ListMessages pages through).

use super::contexts::Contexts;
use super::error::{Error, Result};
use crate::domain::{
    ContextKey, ContextSummary, ListPosition, Message, MessageId, NodeId, Sibling, TenantId, TreeReader, Versions,
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
        let tree = Tree::new(store, key);
        let parent = match parent {
            Some(id) => match tree.node_of(id).await? {
                Some(node) => Some(node),
                None => return Err(Error::UnknownMessage { context: key.id.to_string(), message: id }),
            },
            None => None,
        };
        let children = tree.children(parent).await?;
        let group: Vec<Sibling> = children.iter().map(|c| Sibling { node: c.node, id: c.id }).collect();
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
}
