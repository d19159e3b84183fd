//! Tenants: every context belongs to one, and nothing of one tenant is visible to another.

use std::fmt;
use std::sync::Arc;

use super::ids::ContextId;

/// The longest tenant name; names are parts of storage keys and directory names.
pub const MAX_TENANT_LEN: usize = 64;

/// A tenant's name: 1 to 64 ASCII letters, digits, `-`, `_` or `.`, starting with a letter or
/// digit, so that it is safe as a directory name (never `.` or `..`) and in storage keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

/// A string that cannot name a tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} is not a valid tenant name (1 to {MAX_TENANT_LEN} ASCII letters, digits, '-', '_' or '.', starting with a \
     letter or digit)",
    super::shown(.0)
)]
pub struct InvalidTenant(pub String);

impl TenantId {
    /// The tenant of a server without authentication, and of everything saved before tenants
    /// existed.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(name: &str) -> Result<Self, InvalidTenant> {
        let valid = !name.is_empty()
            && name.len() <= MAX_TENANT_LEN
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if valid { Ok(Self(Arc::from(name))) } else { Err(InvalidTenant(name.to_owned())) }
    }

    pub fn default_tenant() -> Self {
        Self(Arc::from(Self::DEFAULT))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A context as storage and the runtime find it: its id is the client's, unique only within
/// its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContextKey {
    pub tenant: TenantId,
    pub id: ContextId,
}

impl ContextKey {
    pub fn new(tenant: TenantId, id: ContextId) -> Self {
        Self { tenant, id }
    }

    /// The key as two dot-separated tokens, `{tenant hex}.{context hex}`: safe in a NATS
    /// subject or key (any tenant name, no wildcard or separator of its own), and the same
    /// wherever the key names something (the store's subjects, the cluster's leases).
    pub fn tokens(&self) -> String {
        format!("{}.{}", hex::encode(self.tenant.as_str()), hex::encode(self.id.as_bytes()))
    }

    /// Which of `count` partitions the context belongs to: a hash of tenant and id, so that
    /// contexts spread evenly whatever ids clients choose, and the same on every node.
    pub fn partition(&self, count: u32) -> u32 {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(self.tenant.as_str())
            .chain_update([0])
            .chain_update(self.id.as_bytes())
            .finalize();
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        u32::try_from(u64::from_be_bytes(head) % u64::from(count.max(1))).unwrap_or(0)
    }

    /// The key [`ContextKey::tokens`] wrote; `None` for anything else.
    pub fn from_tokens(tokens: &str) -> Option<Self> {
        let (tenant, id) = tokens.split_once('.')?;
        let tenant = TenantId::parse(std::str::from_utf8(&hex::decode(tenant).ok()?).ok()?).ok()?;
        let id: [u8; 16] = hex::decode(id).ok()?.try_into().ok()?;
        Some(Self::new(tenant, ContextId::from_bytes(id)))
    }
}

impl fmt::Display for ContextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_contexts_evenly_and_stay_put() {
        let tenant = TenantId::default_tenant();
        let mut counts = [0u32; 8];
        for n in 0..8000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&n.to_be_bytes());
            let key = ContextKey::new(tenant.clone(), ContextId::from_bytes(id));
            let partition = key.partition(8);
            assert_eq!(partition, key.partition(8));
            counts[partition as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (850..1150).contains(&c)), "{counts:?}");
        let key = ContextKey::new(tenant, ContextId::from_bytes([1; 16]));
        assert_eq!(key.partition(1), 0);
        assert_eq!(key.partition(0), 0, "no partitions is one");
    }

    #[test]
    fn a_key_reads_back_from_its_tokens_and_nothing_else_does() {
        let key = ContextKey::new(TenantId::parse("acme.x").unwrap(), ContextId::new());
        let tokens = key.tokens();
        assert_eq!(tokens.matches('.').count(), 1, "{tokens}");
        assert_eq!(ContextKey::from_tokens(&tokens), Some(key));
        for bad in ["", "x", "6163.zz", "2e2e.00", &format!("{}.00", hex::encode("acme"))] {
            assert_eq!(ContextKey::from_tokens(bad), None, "{bad}");
        }
    }

    #[test]
    fn tenant_names_are_safe_as_directories_and_key_parts() {
        for good in ["default", "acme", "Acme-2", "a", "x.y_z", &"a".repeat(MAX_TENANT_LEN)] {
            assert_eq!(TenantId::parse(good).expect(good).as_str(), good);
        }
        for bad in ["", ".", "..", ".hidden", "-x", "a/b", "a b", "é", "a\0", &"a".repeat(MAX_TENANT_LEN + 1)] {
            let error = TenantId::parse(bad).expect_err(bad);
            assert!(error.to_string().contains("not a valid tenant name"), "{error}");
        }
    }
}
