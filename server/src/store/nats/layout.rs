//! Where ctxd's data lives on JetStream (see docs/storage.md), and what each record holds.
//!
//! - `{prefix}_log`, subjects `{prefix}.log.{tenant}.{context}`: one record per save, the
//!   source of truth. A save is one publish, so it is atomic; it carries
//!   `Nats-Expected-Last-Subject-Sequence`, so a writer that did not see the last save of
//!   the context is refused.
//! - `{prefix}_tree`, subjects `{prefix}.tree.{tenant}.{context}.{m|i|k}.{…}`, one message a
//!   subject: each message by node (`m`), each message id's node (`i`), each parent's
//!   children (`k`). Derived from the log, for reading a path or a branch without replaying it.
//! - `{prefix}_contexts`, subjects `{prefix}.ctx.{tenant}.{context}`, one message a subject:
//!   each context's metadata and the log sequence the tree is derived up to.
//!
//! Tenants and ids are hex in subjects: any tenant name is then a valid subject token.

use crate::domain::{ContextKey, MessageId, NodeId};

#[derive(Debug, Clone)]
pub struct Layout {
    pub prefix: String,
}

impl Layout {
    pub fn log_stream(&self) -> String {
        format!("{}_log", self.prefix)
    }

    pub fn tree_stream(&self) -> String {
        format!("{}_tree", self.prefix)
    }

    pub fn contexts_stream(&self) -> String {
        format!("{}_contexts", self.prefix)
    }

    pub fn log_subjects(&self) -> String {
        format!("{}.log.>", self.prefix)
    }

    pub fn tree_subjects(&self) -> String {
        format!("{}.tree.>", self.prefix)
    }

    pub fn contexts_subjects(&self) -> String {
        format!("{}.ctx.>", self.prefix)
    }

    pub fn log(&self, key: &ContextKey) -> String {
        format!("{}.log.{}", self.prefix, key.tokens())
    }

    pub fn context(&self, key: &ContextKey) -> String {
        format!("{}.ctx.{}", self.prefix, key.tokens())
    }

    /// Every subject of the context's tree, for purging it.
    pub fn tree_all(&self, key: &ContextKey) -> String {
        format!("{}.tree.{}.>", self.prefix, key.tokens())
    }

    pub fn message(&self, key: &ContextKey, node: NodeId) -> String {
        format!("{}.tree.{}.m.{node}", self.prefix, key.tokens())
    }

    pub fn message_id(&self, key: &ContextKey, id: &MessageId) -> String {
        format!("{}.tree.{}.i.{}", self.prefix, key.tokens(), hex::encode(id.as_bytes()))
    }

    pub fn children(&self, key: &ContextKey, parent: Option<NodeId>) -> String {
        match parent {
            Some(node) => format!("{}.tree.{}.k.{node}", self.prefix, key.tokens()),
            None => format!("{}.tree.{}.k.root", self.prefix, key.tokens()),
        }
    }

    /// The context a `{prefix}.log.{tenant}.{context}` subject names.
    pub fn parse_log(&self, subject: &str) -> Option<ContextKey> {
        ContextKey::from_tokens(subject.strip_prefix(&self.prefix)?.strip_prefix(".log.")?)
    }
}

// What the log and the tree hold: generated from proto/ctxd/storage/v1/nats.proto.
pub use crate::store::codec::{
    StoredChildEntry, StoredChildren, StoredJoined, StoredNodeMessage, StoredRecord, StoredSnapshot,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ContextId, TenantId};

    #[test]
    fn context_subjects_round_trip_for_any_tenant_name() {
        let layout = Layout { prefix: "ctxd".into() };
        for tenant in ["default", "acme.corp", "a b*>"] {
            let Ok(tenant) = TenantId::parse(tenant) else { continue };
            let key = ContextKey::new(tenant, ContextId::from_bytes([9; 16]));
            let subject = layout.log(&key);
            assert_eq!(subject.split('.').count(), 4, "{subject}");
            assert_eq!(layout.parse_log(&subject), Some(key));
        }
    }
}
