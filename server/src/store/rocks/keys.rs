//! Key encoding. Every key starts with its tenant (a length byte, then the name), so one
//! tenant's contexts are one contiguous range and nothing is found across tenants by a prefix
//! scan. Ids and numbers follow fixed-width and big-endian, so a context's messages are one
//! contiguous, ordered range. Each column family holds one kind of key; never reuse a
//! family's name for another layout (`legacy` holds the names of the layout before tenants).

use crate::domain::{ContextId, ContextKey, ListPosition, MAX_TENANT_LEN, MessageId, NodeId, TenantId, Timestamp};

/// tenant ++ context id → the context's metadata (everything but its messages).
pub const CF_CONTEXTS: &str = "tenant_contexts";
/// tenant ++ context id ++ node → one message (of any branch). Saved before branches, the
/// node of a message was its seq, which is why the old keys still read.
pub const CF_MESSAGES: &str = "tenant_messages";
/// tenant ++ context id ++ parent slot ++ child node → the child's id and when it was last
/// active: the tree's edges, one contiguous range per parent. The slot is 0 for the first
/// messages, the parent's node + 1 otherwise.
pub const CF_CHILDREN: &str = "tenant_children";
/// tenant ++ context id ++ message id → its node, to find a message of any branch by id.
pub const CF_MESSAGE_IDS: &str = "tenant_message_ids";
/// tenant ++ context id → the active path's shape (segments and the depths with versions),
/// written only when it changes; absent: one segment from node 0, no versions.
pub const CF_PATHS: &str = "tenant_paths";
/// tenant ++ (u64::MAX - updated_at) ++ context id → nothing: a tenant's contexts, most
/// recently updated first.
pub const CF_BY_UPDATED: &str = "tenant_by_updated";
/// tenant ++ context id → nothing: contexts saved in the middle of a run, resumed at start-up
/// without scanning every context.
pub const CF_ACTIVE: &str = "tenant_active";

pub const ALL_FAMILIES: [&str; 7] =
    [CF_CONTEXTS, CF_MESSAGES, CF_BY_UPDATED, CF_ACTIVE, CF_CHILDREN, CF_MESSAGE_IDS, CF_PATHS];

/// In the default family: present once every message has its entries in `CF_CHILDREN` and
/// `CF_MESSAGE_IDS` (messages saved before branches had none; see `migrate`).
pub const TREE_INDEXED: &[u8] = b"tree-indexed";

const ID_LEN: usize = 16;
const SEQ_LEN: usize = 8;

/// The prefix of every key of `tenant`: its length, then its name. The length byte makes
/// prefixes prefix-free: no tenant's keys start with another tenant's prefix.
pub fn tenant_prefix(tenant: &TenantId) -> Vec<u8> {
    let name = tenant.as_str().as_bytes();
    let mut key = Vec::with_capacity(1 + name.len() + 8 + ID_LEN + SEQ_LEN);
    // Tenant names are at most MAX_TENANT_LEN (< 256) bytes: the length fits a byte.
    key.push(name.len() as u8);
    key.extend_from_slice(name);
    key
}

pub fn context_key(key: &ContextKey) -> Vec<u8> {
    context_key_in(&tenant_prefix(&key.tenant), key.id)
}

/// The key of context `id` of the tenant whose prefix is `prefix`.
pub fn context_key_in(prefix: &[u8], id: ContextId) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(prefix.len() + ID_LEN + SEQ_LEN);
    bytes.extend_from_slice(prefix);
    bytes.extend_from_slice(id.as_bytes());
    bytes
}

/// The key of message `node` of the context whose key is `context`.
pub fn message_key(context: &[u8], node: NodeId) -> Vec<u8> {
    numbered_key(context, node.get())
}

fn numbered_key(context: &[u8], number: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(context.len() + SEQ_LEN);
    bytes.extend_from_slice(context);
    bytes.extend_from_slice(&number.to_be_bytes());
    bytes
}

/// The node of a message key (or of a children key past its parent), if `bytes` is one of
/// those starting with `prefix`.
pub fn node_after(prefix: &[u8], bytes: &[u8]) -> Option<NodeId> {
    let node = bytes.strip_prefix(prefix)?;
    Some(NodeId::new(u64::from_be_bytes(node.try_into().ok()?)))
}

/// The prefix of the children keys of `parent` (`None`: the first messages).
pub fn children_prefix(context: &[u8], parent: Option<NodeId>) -> Vec<u8> {
    // Slot 0 holds the first messages; a parent's children are one slot past its number.
    let slot = parent.map_or(0, |node| node.get().saturating_add(1));
    numbered_key(context, slot)
}

pub fn child_key(context: &[u8], parent: Option<NodeId>, node: NodeId) -> Vec<u8> {
    let mut bytes = children_prefix(context, parent);
    bytes.extend_from_slice(&node.get().to_be_bytes());
    bytes
}

pub fn message_id_key(context: &[u8], id: &MessageId) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(context.len() + ID_LEN);
    bytes.extend_from_slice(context);
    bytes.extend_from_slice(id.as_bytes());
    bytes
}

/// The exclusive upper bound of every key that starts with `prefix`, if there is one.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub fn by_updated_key(tenant: &TenantId, updated_at: Timestamp, id: ContextId) -> Vec<u8> {
    let micros = u64::try_from(updated_at.as_micros()).unwrap_or(0);
    let mut key = tenant_prefix(tenant);
    key.extend_from_slice(&(u64::MAX - micros).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// The list position a `by_updated` key of the tenant whose prefix is `prefix` stands for.
pub fn by_updated_position(prefix: &[u8], key: &[u8]) -> Option<ListPosition> {
    let rest = key.strip_prefix(prefix)?;
    if rest.len() != 8 + ID_LEN {
        return None;
    }
    let inverted = u64::from_be_bytes(rest[..8].try_into().ok()?);
    let micros = i64::try_from(u64::MAX - inverted).ok()?;
    let id = ContextId::from_bytes(rest[8..].try_into().ok()?);
    Some(ListPosition { updated_at: Timestamp::from_micros(micros), id })
}

/// The tenant and context a context key (or an `active` key) names.
pub fn parse_context_key(bytes: &[u8]) -> Option<ContextKey> {
    let (&len, rest) = bytes.split_first()?;
    let len = usize::from(len);
    if len > MAX_TENANT_LEN || rest.len() != len + ID_LEN {
        return None;
    }
    let tenant = TenantId::parse(std::str::from_utf8(&rest[..len]).ok()?).ok()?;
    let id = ContextId::from_bytes(rest[len..].try_into().ok()?);
    Some(ContextKey::new(tenant, id))
}

/// The layout before tenants, kept to move its data into the tenant `default` (see
/// `migrate`): context id → metadata, context id ++ seq → message, (u64::MAX - updated_at) ++
/// context id → nothing, context id → nothing.
pub mod legacy {
    pub const CF_CONTEXTS: &str = "contexts";
    pub const CF_MESSAGES: &str = "messages";
    pub const CF_BY_UPDATED: &str = "by_updated";
    pub const CF_ACTIVE: &str = "active";

    /// Each legacy family with the family its keys move to.
    pub const MOVES: [(&str, &str); 4] = [
        (CF_CONTEXTS, super::CF_CONTEXTS),
        (CF_MESSAGES, super::CF_MESSAGES),
        (CF_BY_UPDATED, super::CF_BY_UPDATED),
        (CF_ACTIVE, super::CF_ACTIVE),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: &str, n: u8) -> ContextKey {
        ContextKey::new(TenantId::parse(tenant).expect("tenant"), ContextId::from_bytes([n; 16]))
    }

    #[test]
    fn message_keys_round_trip_and_sort_by_tenant_then_context_then_seq() {
        let (a, b) = (key("acme", 1), key("acme", 2));
        let (ka, kb) = (context_key(&a), context_key(&b));
        let keys = [
            message_key(&ka, NodeId::new(0)),
            message_key(&ka, NodeId::new(1)),
            message_key(&ka, NodeId::new(255)),
            message_key(&ka, NodeId::new(256)),
            message_key(&kb, NodeId::new(0)),
        ];
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys must sort by context, then node");
        assert_eq!(node_after(&ka, &message_key(&ka, NodeId::new(300))), Some(NodeId::new(300)));
        assert_eq!(node_after(&kb, &message_key(&ka, NodeId::new(300))), None);
        assert_eq!(node_after(&ka, &[0u8; 3]), None);

        // One parent's children are one range, in node order; the first messages come first.
        let children = [
            child_key(&ka, None, NodeId::new(0)),
            child_key(&ka, None, NodeId::new(9)),
            child_key(&ka, Some(NodeId::new(0)), NodeId::new(1)),
            child_key(&ka, Some(NodeId::new(0)), NodeId::new(7)),
            child_key(&ka, Some(NodeId::new(1)), NodeId::new(2)),
        ];
        assert!(children.windows(2).all(|w| w[0] < w[1]));
        let of_zero = children_prefix(&ka, Some(NodeId::new(0)));
        assert_eq!(children.iter().filter(|k| k.starts_with(&of_zero)).count(), 2);
        assert_eq!(node_after(&of_zero, &children[3]), Some(NodeId::new(7)));

        let end = prefix_end(&context_key(&a)).expect("an end");
        assert!(keys[..4].iter().all(|k| *k < end) && keys[4] >= end);
        let last = key("acme", 0xff);
        let end = prefix_end(&context_key(&last)).expect("the tenant's byte carries");
        assert!(message_key(&context_key(&last), NodeId::new(u64::MAX)) < end);
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }

    #[test]
    fn no_tenant_finds_another_tenants_keys() {
        // "a" is a prefix of "ab" as a string, but not as a key prefix.
        let (short, long) = (key("a", 1), key("ab", 1));
        assert!(!context_key(&long).starts_with(&tenant_prefix(&short.tenant)));
        assert!(!message_key(&context_key(&long), NodeId::new(0)).starts_with(&context_key(&short)));
        assert_eq!(parse_context_key(&context_key(&long)), Some(long.clone()));
        assert_eq!(parse_context_key(&message_key(&context_key(&long), NodeId::new(0))), None);
        assert_eq!(parse_context_key(&[3, b'.', b'.', b'x']), None);
    }

    #[test]
    fn by_updated_keys_sort_newest_first_within_a_tenant() {
        let tenant = TenantId::parse("acme").expect("tenant");
        let id = ContextId::from_bytes([7; 16]);
        let old = by_updated_key(&tenant, Timestamp::from_micros(1_000), id);
        let new = by_updated_key(&tenant, Timestamp::from_micros(2_000), id);
        assert!(new < old);
        let prefix = tenant_prefix(&tenant);
        let position = ListPosition { updated_at: Timestamp::from_micros(2_000), id };
        assert_eq!(by_updated_position(&prefix, &new), Some(position));
        assert_eq!(by_updated_position(&prefix, &new[..10]), None);
        assert_eq!(by_updated_position(&tenant_prefix(&TenantId::default_tenant()), &new), None);
    }
}
