//! Tokens already verified, so that a client sending the same JWT with every call pays for
//! its signature and claims once, not per call. An entry is used only while the token is
//! unexpired and, for a JWKS-signed token, only while the keys it was verified with are still
//! the ones in force (a rotation re-verifies everything). Entries are keyed by the token's
//! SHA-256, so the cache holds no usable token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::jwks::PublicKey;
use super::principal::Principal;

/// Entries kept at most; when full, the cache starts over (a burst of new tokens costs one
/// verification each, as without a cache).
const CAPACITY: usize = 10_000;

struct Entry {
    principal: Principal,
    /// The token's `exp` plus the leeway, in seconds since the epoch.
    valid_until: u64,
    /// The JWKS keys it was verified with; none for an HS256 token.
    keys: Option<Arc<Vec<PublicKey>>>,
}

#[derive(Default)]
pub struct Verified {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Verified {
    /// The caller of a token verified before, if that still holds: unexpired, and verified with
    /// `keys` (the JWKS keys in force now) when it was verified with JWKS keys at all.
    pub fn get(&self, digest: &[u8; 32], keys: Option<&Arc<Vec<PublicKey>>>) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(digest)?;
        let same_keys = match (&entry.keys, keys) {
            (None, _) => true,
            (Some(then), Some(now)) => Arc::ptr_eq(then, now),
            (Some(_), None) => false,
        };
        (same_keys && now() <= entry.valid_until).then(|| entry.principal.clone())
    }

    pub fn put(&self, digest: [u8; 32], principal: Principal, valid_until: u64, keys: Option<Arc<Vec<PublicKey>>>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(digest, Entry { principal, valid_until, keys });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_serves_while_unexpired_and_verified_with_the_keys_in_force() {
        let cache = Verified::default();
        let principal = Principal::unauthenticated();
        let (hs, old, rotated) = (digest("hs"), digest("old"), digest("rotated"));
        cache.put(hs, principal.clone(), now() + 60, None);
        cache.put(digest("expired"), principal.clone(), now() - 1, None);
        let keys = Arc::new(Vec::new());
        cache.put(old, principal.clone(), now() + 60, Some(Arc::clone(&keys)));
        cache.put(rotated, principal.clone(), now() + 60, Some(Arc::clone(&keys)));

        assert_eq!(cache.get(&hs, None), Some(principal.clone()));
        assert_eq!(cache.get(&digest("expired"), None), None, "expired");
        assert_eq!(cache.get(&digest("never seen"), None), None);
        assert_eq!(cache.get(&old, Some(&keys)), Some(principal));
        assert_eq!(cache.get(&rotated, Some(&Arc::new(Vec::new()))), None, "the keys changed since");
    }
}
