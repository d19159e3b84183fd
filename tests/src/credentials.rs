//! Credential files for the tests that turn authentication on: an HS256 secret, a JWKS
//! document and an API keys file in a directory of their own, and tokens that fit them.

use std::path::PathBuf;

use serde_json::json;

use crate::Server;
use crate::tokens::{self, ED25519_ONE, HS256_SECRET};

pub const AUDIENCE: &str = "ctxd-test";

/// Credential files in a directory of their own, kept while the server runs.
pub struct Credentials {
    dir: tempfile::TempDir,
}

impl Default for Credentials {
    fn default() -> Self {
        Self::new()
    }
}

impl Credentials {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("credentials dir");
        std::fs::write(dir.path().join("secret"), format!("{HS256_SECRET}\n")).expect("secret");
        std::fs::write(dir.path().join("jwks.json"), tokens::jwks(&[(ED25519_ONE, "one")])).expect("jwks");
        std::fs::write(dir.path().join("api-keys"), "# no keys yet\n").expect("api keys");
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The flags that turn on every kind of authentication with these files.
    pub fn args(&self) -> Vec<String> {
        let path = |name: &str| self.path(name).to_str().expect("utf-8").to_owned();
        vec![
            "--jwt-hs256-secret-file".into(),
            path("secret"),
            "--jwt-jwks-file".into(),
            path("jwks.json"),
            "--jwt-audience".into(),
            AUDIENCE.into(),
            "--api-keys-file".into(),
            path("api-keys"),
        ]
    }
}

pub async fn start_with_auth(credentials: &Credentials, mock_delay_ms: u64, extra: &[&str]) -> Server {
    let mut args = credentials.args();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(mock_delay_ms, &args).await
}

/// A good HS256 token of `tenant` for this server's audience, with `changes` to its claims.
pub fn token(tenant: &str, changes: serde_json::Value) -> String {
    let claims = tokens::with(tokens::claims(tenant), json!({"aud": AUDIENCE}));
    tokens::hs256(HS256_SECRET, &tokens::with(claims, changes))
}

/// The SHA-256 of `key` in hex, as an operator computes it for the API keys file.
pub fn sha256_hex(key: &str) -> String {
    // The server's own hashing is what is under test (the auth tests' `api-key new` round trip
    // checks the line it prints); here the line is written as an operator would, with sha256sum.
    let output = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().expect("stdin").write_all(key.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8(output.stdout).expect("utf-8").split_whitespace().next().expect("a hash").to_owned()
}
