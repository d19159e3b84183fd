//! Configuration: defaults, overridden by a TOML file, overridden by `CTXD_*` environment
//! variables, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod args;

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
            default_model: "mock".into(),
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

    /// Defaults, then the config file, then flags and environment.
    pub fn load(args: Args) -> Result<Self, Error> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        let Args {
            config: _,
            listen,
            store,
            data_dir,
            nats_url,
            nats_creds,
            nats_nkey_file,
            nats_tls_ca,
            nats_tls_cert,
            nats_tls_key,
            cluster_secret_file,
            insecure_cluster,
            tls_cert,
            tls_key,
            peer_tls_ca,
            nats_prefix,
            nats_replicas,
            node_id,
            advertise_addr,
            lease_ttl_ms,
            mock_delay_ms,
            workspace,
            max_message_bytes,
            sync_writes,
            llm_max_attempts,
            llm_retry_base_ms,
            llm_retry_max_ms,
            tool_timeout_ms,
            tool_max_output_bytes,
            idle_unload_secs,
            log,
            log_format,
            web_dir,
            cors_origins,
            default_model,
            openai_base_url,
            openai_models,
            llm_connect_timeout_ms,
            llm_idle_timeout_ms,
            external_tool_timeout_ms,
            metrics_listen,
            otlp_endpoint,
            jwt_hs256_secret_file,
            jwt_jwks_file,
            jwt_issuer,
            jwt_audience,
            jwt_tenant_claim,
            jwt_leeway_secs,
            api_keys_file,
            insecure_no_auth,
            allowed_hosts,
            max_active_runs_per_tenant,
            max_contexts_per_tenant,
            command: _,
        } = args;
        macro_rules! overlay {
            ($($field:ident),*) => { $( if let Some(value) = $field { config.$field = value; } )* };
        }
        // Settings that default to nothing: a flag sets them.
        macro_rules! overlay_optional {
            ($($field:ident),*) => { $( if $field.is_some() { config.$field = $field; } )* };
        }
        overlay!(
            listen,
            store,
            data_dir,
            nats_url,
            nats_prefix,
            nats_replicas,
            lease_ttl_ms,
            mock_delay_ms,
            max_message_bytes,
            sync_writes,
            llm_max_attempts,
            llm_retry_base_ms,
            llm_retry_max_ms,
            tool_timeout_ms,
            tool_max_output_bytes,
            idle_unload_secs,
            log,
            log_format,
            cors_origins,
            default_model,
            openai_models,
            llm_connect_timeout_ms,
            llm_idle_timeout_ms,
            external_tool_timeout_ms,
            metrics_listen,
            jwt_tenant_claim,
            jwt_leeway_secs,
            allowed_hosts
        );
        overlay_optional!(
            openai_base_url,
            nats_creds,
            nats_nkey_file,
            nats_tls_ca,
            nats_tls_cert,
            nats_tls_key,
            cluster_secret_file,
            tls_cert,
            tls_key,
            peer_tls_ca,
            node_id,
            advertise_addr,
            workspace,
            web_dir,
            otlp_endpoint,
            jwt_hs256_secret_file,
            jwt_jwks_file,
            jwt_issuer,
            jwt_audience,
            api_keys_file,
            max_active_runs_per_tenant,
            max_contexts_per_tenant
        );
        config.insecure_no_auth |= insecure_no_auth;
        config.insecure_cluster |= insecure_cluster;
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text)
            .map_err(|source| Error::Parse { path: path.display().to_string(), source: Box::new(source) })
    }

    fn validate(&self) -> Result<(), Error> {
        if self.max_message_bytes == 0 {
            return Err(Error::Invalid("max-message-bytes must be at least 1".into()));
        }
        if self.default_model != "mock" && self.openai_base_url.is_none() {
            return Err(Error::Invalid(format!(
                "default-model {:?} needs openai-base-url (only \"mock\" is built in)",
                self.default_model
            )));
        }
        self.metrics_addr()?;
        if self.llm_max_attempts == 0 {
            return Err(Error::Invalid("llm-max-attempts must be at least 1".into()));
        }
        if let Some(workspace) = &self.workspace
            && !workspace.is_dir()
        {
            return Err(Error::Invalid(format!("workspace {} is not a directory", workspace.display())));
        }
        if let Some(web_dir) = &self.web_dir
            && !web_dir.join("index.html").is_file()
        {
            return Err(Error::Invalid(format!("web-dir {} has no index.html", web_dir.display())));
        }
        if self.max_active_runs_per_tenant == Some(0) {
            return Err(Error::Invalid("max-active-runs-per-tenant must be at least 1".into()));
        }
        if self.max_contexts_per_tenant == Some(0) {
            return Err(Error::Invalid("max-contexts-per-tenant must be at least 1".into()));
        }
        if self.nats_url.is_empty() {
            return Err(Error::Invalid("nats-url must name at least one server".into()));
        }
        if self.nats_prefix.is_empty()
            || !self.nats_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::Invalid(format!(
                "nats-prefix {:?} must be letters, digits, '_' or '-' (it names streams and subjects)",
                self.nats_prefix
            )));
        }
        if !(1..=5).contains(&self.nats_replicas) {
            return Err(Error::Invalid(format!("nats-replicas is {}; JetStream allows 1 to 5", self.nats_replicas)));
        }
        if let Some(node_id) = &self.node_id
            && (node_id.is_empty()
                || node_id.len() > 64
                || !node_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return Err(Error::Invalid(format!(
                "node-id {node_id:?} must be 1 to 64 letters, digits, '_' or '-' (it names a key in the cluster)"
            )));
        }
        if !(300..=600_000).contains(&self.lease_ttl_ms) {
            return Err(Error::Invalid(format!(
                "lease-ttl-ms is {}; it must be between 300 (0.3 s) and 600000 (10 min)",
                self.lease_ttl_ms
            )));
        }
        if self.jwt_tenant_claim.is_empty() {
            return Err(Error::Invalid("jwt-tenant-claim must name a claim".into()));
        }
        if !self.listen.ip().is_loopback() && !self.auth_configured() && !self.insecure_no_auth {
            return Err(Error::Invalid(format!(
                "refusing to listen on {} without authentication: anyone who can reach that address could read and \
                 change every conversation. Configure --jwt-hs256-secret-file, --jwt-jwks-file or --api-keys-file (the \
                 README's \"Authentication\" section says how), listen on a loopback address such as 127.0.0.1, or \
                 pass --insecure-no-auth to serve without authentication anyway",
                self.listen
            )));
        }
        self.validate_cluster()?;
        Ok(())
    }

    /// A cluster off loopback authenticates its nodes to each other; TLS settings come in pairs.
    fn validate_cluster(&self) -> Result<(), Error> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(Error::Invalid("tls-cert and tls-key go together".into()));
        }
        if self.nats_tls_cert.is_some() != self.nats_tls_key.is_some() {
            return Err(Error::Invalid("nats-tls-cert and nats-tls-key go together".into()));
        }
        let advertised_off_loopback = match &self.advertise_addr {
            Some(addr) => !addr.rsplit_once(':').map(|(host, _)| host.trim_matches(['[', ']'])).is_some_and(|host| {
                host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }),
            None => false,
        };
        let off_loopback = !self.listen.ip().is_loopback() || advertised_off_loopback;
        if self.store == StoreKind::Nats && off_loopback && self.cluster_secret_file.is_none() && !self.insecure_cluster
        {
            return Err(Error::Invalid(format!(
                "refusing to serve other ctxd nodes on {} without a cluster secret: whoever can reach NATS could register \
                 as a node and be sent callers' credentials. Configure --cluster-secret-file (the same file on every \
                 node; docs/security.md says how), or pass --insecure-cluster to run without one anyway",
                self.advertise_addr.as_deref().map_or_else(|| self.listen.to_string(), str::to_owned)
            )));
        }
        Ok(())
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
