//! The secret the nodes of a cluster share (`--cluster-secret-file`), and what it proves:
//! a node signs its membership record, so that nobody who can merely write to NATS can
//! register an address and be sent callers' bearer tokens; and it signs every call it sends
//! on, so that a node accepts forwarded calls from its peers only. Signatures are HMAC-SHA256
//! (the `hmac` crate), compared in constant time. The secret itself never leaves the node.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::secret_file::read_secret_file;

/// How far a forwarded call's time may be from this node's clock, in milliseconds: it is
/// sent at once, so this is the clocks' skew plus a slow network.
const CALL_WINDOW_MS: u64 = 60_000;

/// Marks a call one node sent on to another (its value: the sending node).
pub const FORWARDED_HEADER: &str = "ctxd-forwarded";

/// The header of a forwarded call that proves the sender holds the cluster secret.
pub const PEER_AUTH_HEADER: &str = "ctxd-peer-auth";

pub struct PeerKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

impl PeerKey {
    /// The secret in `path` (a trailing newline is ignored).
    pub fn load(path: &Path) -> Result<Self, String> {
        read_secret_file("cluster secret", path).map(|secret| Self { secret })
    }

    fn mac(&self, parts: &[&str]) -> Hmac<Sha256> {
        // Any key length is valid for HMAC.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!());
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        mac
    }

    fn sign(&self, parts: &[&str]) -> String {
        hex::encode(self.mac(parts).finalize().into_bytes())
    }

    fn verify(&self, parts: &[&str], signature: &str) -> bool {
        hex::decode(signature).is_ok_and(|tag| self.mac(parts).verify_slice(&tag).is_ok())
    }

    /// The signature of a node's membership record.
    pub fn sign_member(&self, node: &str, epoch: &str, addr: &str) -> String {
        self.sign(&["ctxd-member-v1", node, epoch, addr])
    }

    pub fn verify_member(&self, node: &str, epoch: &str, addr: &str, signature: &str) -> bool {
        self.verify(&["ctxd-member-v1", node, epoch, addr], signature)
    }

    /// The `ctxd-peer-auth` value of a call node `node` sends on now.
    pub fn sign_call(&self, node: &str) -> String {
        let now = now_ms().to_string();
        format!("{now}.{}", self.sign(&["ctxd-call-v1", &now, node]))
    }

    /// Whether a forwarded call's `ctxd-peer-auth` value was signed by a node of this cluster
    /// (its `ctxd-forwarded` value, `node`) within the last minute or so.
    pub fn verify_call(&self, node: &str, value: &str) -> bool {
        let Some((at, signature)) = value.split_once('.') else { return false };
        let Ok(sent) = at.parse::<u64>() else { return false };
        now_ms().abs_diff(sent) <= CALL_WINDOW_MS && self.verify(&["ctxd-call-v1", at, node], signature)
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> PeerKey {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{secret}\n")).expect("write");
        PeerKey::load(&path).expect("a good secret")
    }

    #[test]
    fn signatures_hold_only_for_the_same_secret_and_the_same_words() {
        let (ours, theirs) = (key(&"a".repeat(32)), key(&"b".repeat(32)));
        let member = ours.sign_member("n1", "e1", "10.0.0.1:50051");
        assert!(ours.verify_member("n1", "e1", "10.0.0.1:50051", &member));
        assert!(!ours.verify_member("n1", "e1", "10.6.6.6:50051", &member), "another address");
        assert!(!theirs.verify_member("n1", "e1", "10.0.0.1:50051", &member), "another secret");
        assert!(!ours.verify_member("n1", "e1", "10.0.0.1:50051", "zz"));

        let call = ours.sign_call("n1");
        assert!(ours.verify_call("n1", &call));
        assert!(!ours.verify_call("n2", &call), "another sender");
        assert!(!theirs.verify_call("n1", &call));
        let old = now_ms() - 2 * CALL_WINDOW_MS;
        let stale = format!("{old}.{}", ours.sign(&["ctxd-call-v1", &old.to_string(), "n1"]));
        assert!(!ours.verify_call("n1", &stale), "too old");
        for junk in ["", ".", "123", "x.y", "1.00"] {
            assert!(!ours.verify_call("n1", junk), "{junk}");
        }

        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("short"), "too short\n").expect("write");
        assert!(PeerKey::load(&dir.path().join("short")).expect_err("short").contains("at least 32"));
    }
}
