//! Configuration: defaults, overridden by a TOML file, overridden by `CTXD_*` environment
//! variables, overridden by command-line flags. Here: every setting with its default and
//! what is derived from it; `args` the command line, `load` the layering, `validate` what
//! makes a configuration unusable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod args;
mod load;
mod validate;

pub use args::{ApiKeyCommand, Args, Command};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is invalid: {source}")]
    Parse { path: String, source: Box<toml::de::Error> },
    #[error("{0}")]
    Invalid(String),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object a line, with the same fields.
    Json,
}

/// Which engine holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded RocksDB in `data-dir` (the default): one process, nothing to run beside it.
    Rocksdb,
    /// A NATS JetStream cluster (`nats-url`), replicated on `nats-replicas` servers.
    Nats,
}

/// Runs a tenant may have in progress at once when authentication is on and no limit is set.
pub const DEFAULT_RUNS_PER_TENANT: usize = 32;

/// Everything ctxd can be configured with.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// Address (IP:port) to serve gRPC on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Which engine holds the contexts.
    pub store: StoreKind,
    /// Where RocksDB keeps the contexts.
    pub data_dir: PathBuf,
    /// NATS servers of the JetStream cluster (`nats://` or `tls://`), for `store = "nats"`.
    /// User and password or a token come from the environment (`NATS_USER`, `NATS_PASSWORD`,
    /// `NATS_TOKEN`), never from here.
    pub nats_url: Vec<String>,
    /// A NATS `.creds` file (user JWT and NKey seed).
    pub nats_creds: Option<PathBuf>,
    /// A file holding an NKey seed (`SU...`) to authenticate to NATS with.
    pub nats_nkey_file: Option<PathBuf>,
    /// CA certificate (PEM) the NATS servers' certificates are checked against; set, TLS to
    /// NATS is required.
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS servers that verify clients (with `nats-tls-key`).
    pub nats_tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub nats_tls_key: Option<PathBuf>,
    /// Names ctxd's streams and subjects, so that several deployments share a cluster.
    pub nats_prefix: String,
    /// Servers that hold each stream; a save is acknowledged once a majority has it.
    pub nats_replicas: usize,
    /// This node's name among the ctxd nodes sharing a NATS cluster (letters, digits, '-',
    /// '_'); none: derived from the host name and the port.
    pub node_id: Option<String>,
    /// host:port the other nodes reach this one at; none: the address it listens on (which
    /// must then not be 0.0.0.0 or [::]).
    pub advertise_addr: Option<String>,
    /// A file holding the secret the nodes of a cluster share (at least 32 bytes): a node signs
    /// its membership record and every call it sends on with it, and ignores records and
    /// refuses forwarded calls that are not signed with it.
    pub cluster_secret_file: Option<PathBuf>,
    /// Run a cluster on a non-loopback address without `cluster-secret-file` (anyone who can
    /// write to NATS or reach the port could pose as a node).
    pub insecure_cluster: bool,
    /// Certificate chain (PEM) to serve the API port over TLS with (with `tls-key`); the other
    /// nodes then call this one over TLS too.
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA certificate (PEM) the other nodes' certificates are checked against: set, calls sent
    /// on to another node go over TLS.
    pub peer_tls_ca: Option<PathBuf>,
    /// How long a node that stopped renewing its place (it died) keeps its contexts before
    /// another node takes them over, in milliseconds. The same on every node. Longer than a
    /// NATS stream's leader election (nats-server 2.9 waits 4 to 9 s), so that a NATS
    /// failover never costs a healthy node its contexts.
    pub lease_ttl_ms: u64,
    /// Pause of the mock LLM before each streamed word, in milliseconds.
    pub mock_delay_ms: u64,
    /// Root directory of the file tools; without it they are not offered.
    pub workspace: Option<PathBuf>,
    /// Largest user message (and system prompt) accepted, in bytes.
    pub max_message_bytes: usize,
    /// Wait for the write-ahead log to reach the disk on every save. Turning it off keeps
    /// data safe from process crashes but not from power loss.
    pub sync_writes: bool,
    /// LLM attempts per call (the first included) before a run fails.
    pub llm_max_attempts: u32,
    /// Backoff before the first LLM retry, in milliseconds; doubles per attempt, with jitter.
    pub llm_retry_base_ms: u64,
    /// Longest backoff between two LLM attempts, in milliseconds (before jitter).
    pub llm_retry_max_ms: u64,
    /// How long one tool call may run, in milliseconds.
    pub tool_timeout_ms: u64,
    /// Tool output beyond this many bytes is cut.
    pub tool_max_output_bytes: usize,
    /// A resting context with no watchers is unloaded from memory after this many seconds.
    pub idle_unload_secs: u64,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log: String,
    /// How log lines are written: `text` for people, `json` (one object a line) for collectors.
    pub log_format: LogFormat,
    /// Directory served at `/` on the gRPC port (the web client); none: no static files.
    pub web_dir: Option<PathBuf>,
    /// Origins whose pages may call ctxd over grpc-web (`*`: any). Pages served by ctxd
    /// itself are same-origin and need no entry.
    pub cors_origins: Vec<String>,
    /// The model of contexts that name none. `mock` is the built-in mock LLM.
    pub default_model: String,
    /// Base URL of an OpenAI-compatible API (e.g. `http://localhost:11434/v1` for Ollama).
    /// The API key comes from `CTXD_OPENAI_API_KEY` or `OPENAI_API_KEY`, never from here.
    pub openai_base_url: Option<String>,
    /// Models served by the OpenAI-compatible API; empty: every model but `mock`.
    pub openai_models: Vec<String>,
    /// Longest wait for the LLM provider's connection, in milliseconds.
    pub llm_connect_timeout_ms: u64,
    /// Longest silence between two chunks of a streamed reply, in milliseconds.
    pub llm_idle_timeout_ms: u64,
    /// How long an external tool call waits for its result unless its tool says, in milliseconds.
    pub external_tool_timeout_ms: u64,
    /// Where Prometheus metrics are served (`GET /metrics`), a listener of their own; `off`: none.
    pub metrics_listen: String,
    /// OTLP/gRPC endpoint that receives traces (e.g. `http://127.0.0.1:4317`); none: no traces.
    pub otlp_endpoint: Option<String>,
    /// File holding the shared secret of HS256 JWTs (a trailing newline is ignored).
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// JWKS document with the public keys of RS256/ES256/EdDSA JWTs; re-read when it changes.
    pub jwt_jwks_file: Option<PathBuf>,
    /// The `iss` a JWT must carry; none: not checked.
    pub jwt_issuer: Option<String>,
    /// The `aud` a JWT must carry; none: not checked.
    pub jwt_audience: Option<String>,
    /// The JWT claim naming the caller's tenant; a token without it is refused.
    pub jwt_tenant_claim: String,
    /// Clock skew tolerated on a JWT's `exp` and `nbf`, in seconds; a stream opened with a
    /// JWT ends this long after its `exp`.
    pub jwt_leeway_secs: u64,
    /// API keys, one a line: `tenant scopes sha256-hex-of-key`; re-read when it changes.
    pub api_keys_file: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address (anyone who reaches the port
    /// reads and changes everything).
    pub insecure_no_auth: bool,
    /// Without authentication, the `Host` names (host or host:port; `*`: any) requests may
    /// carry besides loopback names and addresses; others are refused, so that a web page
    /// whose domain is rebound to 127.0.0.1 cannot reach ctxd.
    pub allowed_hosts: Vec<String>,
    /// Runs one tenant may have in progress at once; more are refused until one ends. None:
    /// 32 with authentication on; no limit without it (one implicit tenant, as before tenants).
    pub max_active_runs_per_tenant: Option<usize>,
    /// Contexts one tenant may keep; none: no limit.
    pub max_contexts_per_tenant: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            store: StoreKind::Rocksdb,
            data_dir: PathBuf::from("./data"),
            nats_url: vec!["nats://127.0.0.1:4222".into()],
            nats_creds: None,
            nats_nkey_file: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            cluster_secret_file: None,
            insecure_cluster: false,
            tls_cert: None,
            tls_key: None,
            peer_tls_ca: None,
            nats_prefix: "ctxd".into(),
            nats_replicas: 3,
            node_id: None,
            advertise_addr: None,
            lease_ttl_ms: 15_000,
            mock_delay_ms: 20,
            workspace: None,
            max_message_bytes: 256 * 1024,
            sync_writes: true,
            llm_max_attempts: 3,
            llm_retry_base_ms: 500,
            llm_retry_max_ms: 10_000,
            tool_timeout_ms: 30_000,
            tool_max_output_bytes: 64 * 1024,
            idle_unload_secs: 300,
            log: "info".into(),
            log_format: LogFormat::Text,
            web_dir: None,
            cors_origins: [
                "http://localhost:5173",
                "http://127.0.0.1:5173",
                "http://localhost:4173",
                "http://127.0.0.1:4173",
            ]
            .map(String::from)
            .to_vec(),
            default_model: crate::llm::MOCK_MODEL.into(),
            openai_base_url: None,
            openai_models: Vec::new(),
            llm_connect_timeout_ms: 10_000,
            llm_idle_timeout_ms: 60_000,
            external_tool_timeout_ms: 300_000,
            metrics_listen: "127.0.0.1:9464".into(),
            otlp_endpoint: None,
            jwt_hs256_secret_file: None,
            jwt_jwks_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_tenant_claim: "tenant".into(),
            jwt_leeway_secs: 30,
            api_keys_file: None,
            insecure_no_auth: false,
            allowed_hosts: Vec::new(),
            max_active_runs_per_tenant: None,
            max_contexts_per_tenant: None,
        }
    }
}

impl Config {
    /// Each setting's default as a person reads it (lists comma-separated), by its
    /// kebab-case name; settings that default to nothing are left out.
    pub fn defaults_shown() -> std::collections::BTreeMap<String, String> {
        let Ok(toml::Value::Table(table)) = toml::Value::try_from(Self::default()) else {
            return Default::default();
        };
        let shown = |value: &toml::Value| match value {
            toml::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        table
            .into_iter()
            .filter_map(|(name, value)| match &value {
                toml::Value::Array(items) if items.is_empty() => None,
                toml::Value::Array(items) => Some((name, items.iter().map(shown).collect::<Vec<_>>().join(","))),
                other => Some((name, shown(other))),
            })
            .collect()
    }

    /// Runs one tenant may have in progress at once (see `max_active_runs_per_tenant`).
    pub fn runs_per_tenant(&self) -> usize {
        match self.max_active_runs_per_tenant {
            Some(max) => max,
            None if self.auth_configured() => DEFAULT_RUNS_PER_TENANT,
            None => usize::MAX,
        }
    }

    /// Whether any way to authenticate callers is configured.
    pub fn auth_configured(&self) -> bool {
        self.jwt_hs256_secret_file.is_some() || self.jwt_jwks_file.is_some() || self.api_keys_file.is_some()
    }

    /// The metrics listener's address; `None` when metrics are off.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, Error> {
        match self.metrics_listen.as_str() {
            "off" => Ok(None),
            addr => addr
                .parse()
                .map(Some)
                .map_err(|_| Error::Invalid(format!("metrics-listen {addr:?} is neither an IP:port nor \"off\""))),
        }
    }

    pub fn mock_delay(&self) -> Duration {
        Duration::from_millis(self.mock_delay_ms)
    }

    /// How to reach the NATS cluster: the settings, and credentials from the environment.
    pub fn nats_options(&self) -> crate::store::NatsOptions {
        crate::store::NatsOptions {
            urls: self.nats_url.clone(),
            creds: self.nats_creds.clone(),
            nkey_file: self.nats_nkey_file.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            tls_client: self.nats_tls_cert.clone().zip(self.nats_tls_key.clone()),
            user: secret_from_env(&["CTXD_NATS_USER", "NATS_USER"]),
            password: secret_from_env(&["CTXD_NATS_PASSWORD", "NATS_PASSWORD"]),
            token: secret_from_env(&["CTXD_NATS_TOKEN", "NATS_TOKEN"]),
            prefix: self.nats_prefix.clone(),
            replicas: self.nats_replicas,
        }
    }

    /// This node's name in a cluster: `node-id`, or the host name and the port it listens on.
    pub fn node_id(&self, port: u16) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "ctxd".into());
        let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(48).collect();
        format!("{}-{port}", if host.is_empty() { "ctxd" } else { &host })
    }

    /// Where the other nodes reach this one: `advertise-addr`, or the address it listens on.
    pub fn advertise_addr(&self, bound: SocketAddr) -> Result<String, Error> {
        match &self.advertise_addr {
            Some(addr) => Ok(addr.clone()),
            None if bound.ip().is_unspecified() => Err(Error::Invalid(format!(
                "listening on {bound}, this node cannot tell the others where to reach it: set --advertise-addr                  (host:port)"
            ))),
            None => Ok(bound.to_string()),
        }
    }

    /// The OpenAI API key, from the environment only.
    pub fn openai_api_key() -> Option<String> {
        secret_from_env(&["CTXD_OPENAI_API_KEY", "OPENAI_API_KEY"])
    }
}

/// The first of `names` set to something in the environment (secrets never come from files
/// of settings or flags, where they would show in `ps` or be committed).
fn secret_from_env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
}

#[cfg(test)]
mod tests;
