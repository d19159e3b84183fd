//! API keys: random secrets a script or service sends as its bearer token. The server keeps
//! only their SHA-256 hashes, in a file of lines `tenant scopes sha256-hex-of-key` (scopes
//! comma-separated; `#` starts a comment).

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::principal::{Principal, Scope, Scopes};
use crate::domain::TenantId;

/// Every key starts with this, so a key is told apart from a JWT (and found by secret scanners).
pub const KEY_PREFIX: &str = "ctxd_";

/// Random bytes in a key.
const KEY_BYTES: usize = 32;

struct Entry {
    tenant: TenantId,
    scopes: Scopes,
    hash: [u8; 32],
}

/// The keys of an API keys file.
pub struct ApiKeys {
    entries: Vec<Entry>,
}

impl ApiKeys {
    /// Parses an API keys file; an error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let fail = |why: String| format!("line {}: {why}", number + 1);
            let [tenant, scopes, hash] = line.split_whitespace().collect::<Vec<_>>()[..] else {
                return Err(fail("expected `tenant scopes sha256-hex-of-key`".into()));
            };
            let tenant = TenantId::parse(tenant).map_err(|e| fail(e.to_string()))?;
            let scopes = scopes.split(',').try_fold(Scopes::default(), |scopes, name| {
                Scope::parse(name)
                    .map(|scope| scopes.with(scope))
                    .ok_or_else(|| fail(format!("unknown scope {name:?} (known: ctxd:read, ctxd:write, ctxd:admin)")))
            })?;
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(hash, &mut bytes)
                .map_err(|_| fail("the key's hash must be 64 hex digits (its SHA-256)".into()))?;
            entries.push(Entry { tenant, scopes, hash: bytes });
        }
        Ok(Self { entries })
    }

    /// The caller a key stands for, if it is one of these. Every entry is compared, in
    /// constant time, so the time taken says nothing about which hash came close.
    pub fn verify(&self, key: &str) -> Option<Principal> {
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&hash)) && found.is_none() {
                found = Some(entry);
            }
        }
        found.map(|entry| Principal {
            tenant: entry.tenant.clone(),
            subject: subject(&entry.hash),
            scopes: entry.scopes,
            valid_until: None,
        })
    }
}

/// A key's subject: its hash's first digits, enough to tell keys apart in logs and in
/// `created_by`, useless for finding the key.
fn subject(hash: &[u8; 32]) -> String {
    format!("api-key:{}", hex::encode(&hash[..6]))
}

/// A new key and the line that grants it to `tenant` with `scopes` in an API keys file.
pub fn new_key(tenant: &TenantId, scopes: &[Scope]) -> (String, String) {
    let bytes: [u8; KEY_BYTES] = rand::random();
    let key = format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let scopes = if scopes.is_empty() { &[Scope::Read, Scope::Write][..] } else { scopes };
    let names: Vec<_> = scopes.iter().map(|s| s.name()).collect();
    let line = format!("{tenant} {} {}", names.join(","), hex::encode(Sha256::digest(key.as_bytes())));
    (key, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_verifies_against_its_line_and_nothing_else_does() {
        let acme = TenantId::parse("acme").expect("tenant");
        let (key, line) = new_key(&acme, &[Scope::Read]);
        assert!(key.starts_with(KEY_PREFIX) && !key.contains('.'), "{key}");
        let (other, other_line) = new_key(&TenantId::parse("globex").expect("tenant"), &[]);
        let keys = ApiKeys::parse(&format!("# keys\n\n{line}  # the reader\n{other_line}\n")).expect("valid file");
        let principal = keys.verify(&key).expect("the key is known");
        assert_eq!(principal.tenant, acme);
        assert!(principal.scopes.allow(Scope::Read) && !principal.scopes.allow(Scope::Write));
        assert!(principal.subject.starts_with("api-key:") && !principal.subject.contains(&key[5..15]));
        let globex = keys.verify(&other).expect("the other key is known");
        assert!(globex.scopes.allow(Scope::Write), "no --scope: read and write");
        assert_eq!(keys.verify("ctxd_nope"), None);
        assert_eq!(keys.verify(""), None);
    }

    #[test]
    fn a_bad_line_is_named() {
        for (text, expected) in [
            ("acme ctxd:read", "line 1: expected"),
            ("\nacme ctxd:root 00", "line 2: unknown scope \"ctxd:root\""),
            ("../x ctxd:read 00", "not a valid tenant name"),
            ("acme ctxd:read abc", "64 hex digits"),
        ] {
            let error = ApiKeys::parse(text).err().expect(text);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
