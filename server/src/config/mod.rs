//! Configuration: defaults, overridden by a TOML file, overridden by `CTXD_*` environment
//! variables, overridden by command-line flags. Here: every setting with its default and
//! what is derived from it; `args` the command line, `load` the layering, `validate` what
//! makes a configuration unusable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod args;
mod declare;
mod load;
mod validate;

pub use args::{ApiKeyCommand, Command};
use declare::settings;

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

settings! {
    settings {
        /// Address (IP:port) to serve gRPC on; port 0 picks a free one.
        value listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 50051));
        /// Which engine holds the contexts.
        #[arg(value_enum)]
        value store: StoreKind = StoreKind::Rocksdb;
        /// Where RocksDB keeps the contexts.
        value data_dir: PathBuf = PathBuf::from("./data");
        /// NATS servers of the JetStream cluster (`nats://` or `tls://`), for `store = "nats"`.
        /// User and password or a token come from the environment (`NATS_USER`, `NATS_PASSWORD`,
        /// `NATS_TOKEN`), never from here.
        #[arg(value_delimiter = ',')]
        value nats_url: Vec<String> = vec!["nats://127.0.0.1:4222".into()];
        /// A NATS `.creds` file (user JWT and NKey seed).
        #[arg(global = true)]
        optional nats_creds: PathBuf = None;
        /// A file holding an NKey seed (`SU...`) to authenticate to NATS with.
        #[arg(global = true)]
        optional nats_nkey_file: PathBuf = None;
        /// CA certificate (PEM) the NATS servers' certificates are checked against; set, TLS to
        /// NATS is required.
        #[arg(global = true)]
        optional nats_tls_ca: PathBuf = None;
        /// Client certificate (PEM) for NATS servers that verify clients (with `nats-tls-key`).
        #[arg(global = true)]
        optional nats_tls_cert: PathBuf = None;
        /// The client certificate's private key (PEM).
        #[arg(global = true)]
        optional nats_tls_key: PathBuf = None;
        /// Names ctxd's streams and subjects, so that several deployments share a cluster.
        #[arg(global = true)]
        value nats_prefix: String = "ctxd".into();
        /// Servers that hold each stream; a save is acknowledged once a majority has it.
        #[arg(global = true)]
        value nats_replicas: usize = 3;
        /// How many partition streams contexts are hashed over; fixed when the streams are
        /// made (a node told another number refuses to start). More partitions spread the
        /// saves over more stream leaders and let more nodes share the work.
        #[arg(global = true)]
        value nats_partitions: u32 = 16;
        /// This node's name among the ctxd nodes sharing a NATS cluster (letters, digits, '-',
        /// '_'); none: derived from the host name and the port.
        optional node_id: String = None;
        /// host:port the other nodes reach this one at; none: the address it listens on (which
        /// must then not be 0.0.0.0 or [::]).
        optional advertise_addr: String = None;
        /// A file holding the secret the nodes of a cluster share (at least 32 bytes): a node signs
        /// its membership record and every call it sends on with it, and ignores records and
        /// refuses forwarded calls that are not signed with it.
        optional cluster_secret_file: PathBuf = None;
        /// Certificate chain (PEM) to serve the API port over TLS with (with `tls-key`); the other
        /// nodes then call this one over TLS too.
        optional tls_cert: PathBuf = None;
        /// The TLS certificate's private key (PEM).
        optional tls_key: PathBuf = None;
        /// CA certificate (PEM) the other nodes' certificates are checked against: set, calls sent
        /// on to another node go over TLS.
        optional peer_tls_ca: PathBuf = None;
        /// How long a node's heartbeats may stop (it died, or was cut off) before the other
        /// nodes take its partitions over, in milliseconds. The same on every node. Heartbeats
        /// go over core NATS, which keeps flowing while a stream elects a leader, so this need
        /// not outlast an election; it must outlast a client's reconnect to another NATS
        /// server.
        value lease_ttl_ms: u64 = 1_500;
        /// Pause of the mock LLM before each streamed word, in milliseconds.
        value mock_delay_ms: u64 = 20;
        /// Root directory of the file tools; without it they are not offered.
        optional workspace: PathBuf = None;
        /// Largest user message (and system prompt) accepted, in bytes.
        value max_message_bytes: usize = 256 * 1024;
        /// Wait for the write-ahead log to reach the disk on every save. Turning it off keeps
        /// data safe from process crashes but not from power loss.
        value sync_writes: bool = true;
        /// LLM attempts per call (the first included) before a run fails.
        value llm_max_attempts: u32 = 3;
        /// Backoff before the first LLM retry, in milliseconds; doubles per attempt, with jitter.
        value llm_retry_base_ms: u64 = 500;
        /// Longest backoff between two LLM attempts, in milliseconds (before jitter).
        value llm_retry_max_ms: u64 = 10_000;
        /// How long one tool call may run, in milliseconds.
        value tool_timeout_ms: u64 = 30_000;
        /// Tool output beyond this many bytes is cut.
        value tool_max_output_bytes: usize = 64 * 1024;
        /// A resting context with no watchers is unloaded from memory after this many seconds.
        value idle_unload_secs: u64 = 300;
        /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
        value log: String = "info".into();
        /// How log lines are written: `text` for people, `json` (one object a line) for collectors.
        #[arg(value_enum)]
        value log_format: LogFormat = LogFormat::Text;
        /// Directory served at `/` on the gRPC port (the web client); none: no static files.
        optional web_dir: PathBuf = None;
        /// Origins whose pages may call ctxd over grpc-web (`*`: any). Pages served by ctxd
        /// itself are same-origin and need no entry.
        #[arg(value_delimiter = ',')]
        value cors_origins: Vec<String> =
            ["http://localhost:5173", "http://127.0.0.1:5173", "http://localhost:4173", "http://127.0.0.1:4173"]
                .map(String::from)
                .to_vec();
        /// The model of contexts that name none. `mock` is the built-in mock LLM.
        value default_model: String = crate::llm::MOCK_MODEL.into();
        /// Base URL of an OpenAI-compatible API (e.g. `http://localhost:11434/v1` for Ollama).
        /// The API key comes from `CTXD_OPENAI_API_KEY` or `OPENAI_API_KEY`, never from here.
        optional openai_base_url: String = None;
        /// Models served by the OpenAI-compatible API; empty: every model but `mock`.
        #[arg(value_delimiter = ',')]
        value openai_models: Vec<String> = Vec::new();
        /// A model's context window in tokens, as `MODEL=TOKENS`; repeat for more models (in the
        /// file: a list). Models not named: tiktoken's table for OpenAI's, else
        /// `default-context-window`.
        value model_context_window: Vec<String> = Vec::new();
        /// The context window assumed for models nobody names, in tokens. 8192 fits every current
        /// chat model (Ollama's own default is smaller, but its OpenAI API cuts silently rather
        /// than failing); too small only summarises early, and a provider that refuses a request
        /// as too long makes ctxd shrink it and retry.
        value default_context_window: u32 = 8192;
        /// The model that writes summaries of long conversations; none: each context's own.
        optional summary_model: String = None;
        /// A context window for the mock LLM, in tokens: it then counts each request, reports the
        /// count as its prompt tokens, and refuses a request over it as OpenAI does. None: the mock
        /// answers anything.
        optional mock_context_window: u32 = None;
        /// Longest wait for the LLM provider's connection, in milliseconds.
        value llm_connect_timeout_ms: u64 = 10_000;
        /// Longest silence between two chunks of a streamed reply, in milliseconds.
        value llm_idle_timeout_ms: u64 = 60_000;
        /// How long an external tool call waits for its result unless its tool says, in milliseconds.
        value external_tool_timeout_ms: u64 = 300_000;
        /// Where Prometheus metrics are served (`GET /metrics`), a listener of their own; `off`: none.
        value metrics_listen: String = "127.0.0.1:9464".into();
        /// OTLP/gRPC endpoint that receives traces (e.g. `http://127.0.0.1:4317`); none: no traces.
        optional otlp_endpoint: String = None;
        /// File holding the shared secret of HS256 JWTs (a trailing newline is ignored).
        optional jwt_hs256_secret_file: PathBuf = None;
        /// JWKS document with the public keys of RS256/ES256/EdDSA JWTs; re-read when it changes.
        optional jwt_jwks_file: PathBuf = None;
        /// The `iss` a JWT must carry; none: not checked.
        optional jwt_issuer: String = None;
        /// The `aud` a JWT must carry; none: not checked.
        optional jwt_audience: String = None;
        /// The JWT claim naming the caller's tenant; a token without it is refused.
        value jwt_tenant_claim: String = "tenant".into();
        /// Clock skew tolerated on a JWT's `exp` and `nbf`, in seconds; a stream opened with a
        /// JWT ends this long after its `exp`.
        value jwt_leeway_secs: u64 = 30;
        /// API keys, one a line: `tenant scopes sha256-hex-of-key`; re-read when it changes.
        optional api_keys_file: PathBuf = None;
        /// Without authentication, the `Host` names (host or host:port; `*`: any) requests may
        /// carry besides loopback names and addresses; others are refused, so that a web page
        /// whose domain is rebound to 127.0.0.1 cannot reach ctxd.
        #[arg(value_delimiter = ',')]
        value allowed_hosts: Vec<String> = Vec::new();
        /// Runs one tenant may have in progress at once; more are refused until one ends. None:
        /// 32 with authentication on; no limit without it (one implicit tenant, as before tenants).
        optional max_active_runs_per_tenant: usize = None;
        /// Contexts one tenant may keep; none: no limit.
        optional max_contexts_per_tenant: u64 = None;
    }
    switches {
        /// Run a cluster on a non-loopback address without `cluster-secret-file` (anyone who can
        /// write to NATS or reach the port could pose as a node).
        insecure_cluster;
        /// Serve without authentication on a non-loopback address (anyone who reaches the port
        /// reads and changes everything).
        insecure_no_auth;
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
            partitions: self.nats_partitions,
            beside_layout_1: false,
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
                "listening on {bound}, this node cannot tell the others where to reach it: set --advertise-addr (host:port)"
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
