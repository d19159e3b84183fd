//! Test certificates: a CA, and certificates it signs for `localhost` / 127.0.0.1 (a server's,
//! usable as a client's too), written as PEM files into a directory of their own.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// A CA, and `ca.pem`, `cert.pem` and `key.pem` (one certificate for servers and clients).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("pki dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "ctxd test CA");
        let ca = ca.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("key");
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
        leaf.distinguished_name.push(DnType::CommonName, "ctxd test node");
        let leaf = leaf.signed_by(&key, &ca, &ca_key).expect("certificate");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("ca.pem");
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).expect("cert.pem");
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("key.pem");
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ca.pem`, `cert.pem` or `key.pem`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn arg(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf-8").to_owned()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
