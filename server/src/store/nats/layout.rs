//! Where ctxd's data lives on JetStream (see docs/storage.md), and what each subject holds.
//!
//! Contexts are hashed over `partitions` streams, `{prefix}_p{n}`, fixed when the streams are
//! made (the `{prefix}_layout` stream remembers how many). A context lives in one of them,
//! every piece the last message of its own subject:
//!
//! - `{prefix}.p{n}.c.{tenant}.{context}.h`: its head (metadata and active path);
//!   `….m.{node}`: each message by node; `….i.{id}`: each message id's node;
//!   `….k.{node|root}`: each parent's children;
//! - `{prefix}.p{n}.x.{tenant}.{context}`: its list entry (the head without what a list does
//!   not show; empty, and soon gone, once deleted), republished by the stream on
//!   `{prefix}.list.{tenant}.{context}` once stored;
//! - `{prefix}.p{n}.r.{tenant}.{context}`: there while it is saved mid-run (a marker that
//!   expires after a second once the run ends);
//! - `{prefix}.p{n}.lease`: the node that holds the partition (see `lease`).
//!
//! Entries and markers have subjects of their own, apart from the contexts' data, so that
//! reading a tenant's entries or a partition's markers walks only those subjects, however
//! many contexts the partition holds.
//!
//! A save writes what it changes as one atomic batch. Tenants and ids are hex in subjects:
//! any tenant name is then a valid subject token.

use crate::domain::{ContextKey, MessageId, NodeId, TenantId};

/// The layout this code writes (`StoredLayout.version`).
pub const VERSION: u32 = 2;

#[derive(Debug, Clone)]
pub struct Layout {
    pub prefix: String,
    pub partitions: u32,
}

impl Layout {
    pub fn partition(&self, key: &ContextKey) -> u32 {
        key.partition(self.partitions)
    }

    pub fn stream(&self, partition: u32) -> String {
        format!("{}_p{partition}", self.prefix)
    }

    pub fn subjects(&self, partition: u32) -> String {
        format!("{}.p{partition}.>", self.prefix)
    }

    pub fn layout_stream(&self) -> String {
        format!("{}_layout", self.prefix)
    }

    pub fn layout_subject(&self) -> String {
        format!("{}.layout", self.prefix)
    }

    /// Who holds `partition` (docs/cluster.md).
    pub fn lease(&self, partition: u32) -> String {
        format!("{}.p{partition}.lease", self.prefix)
    }

    fn base(&self, key: &ContextKey) -> String {
        format!("{}.p{}.c.{}", self.prefix, self.partition(key), key.tokens())
    }

    /// Every subject of the context's data (not its entry or marker), for purging it.
    pub fn all(&self, key: &ContextKey) -> String {
        format!("{}.>", self.base(key))
    }

    pub fn head(&self, key: &ContextKey) -> String {
        format!("{}.h", self.base(key))
    }

    pub fn entry(&self, key: &ContextKey) -> String {
        format!("{}.p{}.x.{}", self.prefix, self.partition(key), key.tokens())
    }

    pub fn running(&self, key: &ContextKey) -> String {
        format!("{}.p{}.r.{}", self.prefix, self.partition(key), key.tokens())
    }

    pub fn message(&self, key: &ContextKey, node: NodeId) -> String {
        format!("{}.m.{node}", self.base(key))
    }

    pub fn message_id(&self, key: &ContextKey, id: &MessageId) -> String {
        format!("{}.i.{}", self.base(key), hex::encode(id.as_bytes()))
    }

    pub fn children(&self, key: &ContextKey, parent: Option<NodeId>) -> String {
        match parent {
            Some(node) => format!("{}.k.{node}", self.base(key)),
            None => format!("{}.k.root", self.base(key)),
        }
    }

    /// The list entries of `tenant`'s contexts in `partition`.
    pub fn entries(&self, partition: u32, tenant: &TenantId) -> String {
        format!("{}.p{partition}.x.{}.*", self.prefix, hex::encode(tenant.as_str()))
    }

    /// Every head in `partition`, for copying every context.
    pub fn heads(&self, partition: u32) -> String {
        format!("{}.p{partition}.c.*.*.h", self.prefix)
    }

    /// Every run marker in `partition`.
    pub fn runs(&self, partition: u32) -> String {
        format!("{}.p{partition}.r.>", self.prefix)
    }

    /// Where a partition stream republishes the list entries it stores (source, destination).
    pub fn republish(&self, partition: u32) -> (String, String) {
        (
            format!("{}.p{partition}.x.*.*", self.prefix),
            format!("{}.list.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}", self.prefix),
        )
    }

    /// The republished list entries of `tenant`.
    pub fn listed(&self, tenant: &TenantId) -> String {
        format!("{}.list.{}.*", self.prefix, hex::encode(tenant.as_str()))
    }

    /// The context a stored subject (`{prefix}.p{n}.{kind}.{tenant}.{context}…`) or a
    /// republished entry (`{prefix}.list.{tenant}.{context}`) names.
    pub fn parse(&self, subject: &str) -> Option<ContextKey> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let mut tokens = rest.split('.');
        if tokens.next()? != "list" {
            let _kind = tokens.next()?;
        }
        let (tenant, id) = (tokens.next()?, tokens.next()?);
        ContextKey::from_tokens(&format!("{tenant}.{id}"))
    }
}

// What the streams hold: generated from proto/ctxd/storage/v1/nats.proto.
pub use crate::store::codec::{StoredChildEntry, StoredChildren, StoredHead, StoredLayout, StoredLease};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ContextId;

    #[test]
    fn subjects_name_their_context_for_any_tenant_name() {
        let layout = Layout { prefix: "ctxd".into(), partitions: 16 };
        for tenant in ["default", "acme.corp", "a b*>"] {
            let Ok(tenant) = TenantId::parse(tenant) else { continue };
            let key = ContextKey::new(tenant.clone(), ContextId::from_bytes([9; 16]));
            for subject in
                [layout.head(&key), layout.entry(&key), layout.running(&key), layout.message(&key, NodeId::new(3))]
            {
                assert!(subject.starts_with(&format!("ctxd.p{}.", layout.partition(&key))), "{subject}");
                assert_eq!(layout.parse(&subject), Some(key.clone()), "{subject}");
            }
            let listed = format!("ctxd.list.{}", key.tokens());
            assert_eq!(layout.parse(&listed), Some(key.clone()));
            assert!(layout.listed(&tenant).ends_with(".*"));
        }
        let (source, destination) = layout.republish(3);
        assert_eq!(source, "ctxd.p3.x.*.*");
        assert_eq!(destination, "ctxd.list.{{wildcard(1)}}.{{wildcard(2)}}");
    }
}
