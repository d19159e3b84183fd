//! The command line: every setting as a flag (and its `CTXD_*` variable), and the
//! subcommands that do something other than serve.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};

use super::{Config, LogFormat, StoreKind};
use crate::migrate::Place;

/// Command-line flags; each can also be set by the environment variable it names.
#[derive(Debug, Parser)]
#[command(name = "ctxd", version, about = "A context server for LLM chat applications")]
pub struct Args {
    /// TOML file with settings (kebab-case keys, e.g. `data-dir = "/var/lib/ctxd"`).
    #[arg(long, env = "CTXD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address (IP:port) to serve on.
    #[arg(long, env = "CTXD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Storage engine.
    #[arg(long, env = "CTXD_STORE", value_enum)]
    pub store: Option<StoreKind>,
    /// Data directory (RocksDB).
    #[arg(long, env = "CTXD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated NATS servers (nats:// or tls://).
    #[arg(long, env = "CTXD_NATS_URL", value_delimiter = ',')]
    pub nats_url: Option<Vec<String>>,
    /// NATS credentials file (.creds).
    #[arg(long, env = "CTXD_NATS_CREDS", global = true)]
    pub nats_creds: Option<PathBuf>,
    /// File with an NKey seed to authenticate to NATS with.
    #[arg(long, env = "CTXD_NATS_NKEY_FILE", global = true)]
    pub nats_nkey_file: Option<PathBuf>,
    /// CA certificate (PEM) for the NATS servers; set, TLS to NATS is required.
    #[arg(long, env = "CTXD_NATS_TLS_CA", global = true)]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) to present to NATS.
    #[arg(long, env = "CTXD_NATS_TLS_CERT", global = true)]
    pub nats_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the NATS client certificate.
    #[arg(long, env = "CTXD_NATS_TLS_KEY", global = true)]
    pub nats_tls_key: Option<PathBuf>,
    /// File with the secret the nodes of a cluster share (at least 32 bytes).
    #[arg(long, env = "CTXD_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Allow a cluster on a non-loopback address without a cluster secret.
    #[arg(long, env = "CTXD_INSECURE_CLUSTER")]
    pub insecure_cluster: bool,
    /// Certificate chain (PEM) to serve the API over TLS.
    #[arg(long, env = "CTXD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of that certificate.
    #[arg(long, env = "CTXD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate (PEM) of the other nodes; set, calls to them go over TLS.
    #[arg(long, env = "CTXD_PEER_TLS_CA")]
    pub peer_tls_ca: Option<PathBuf>,
    /// Prefix of ctxd's NATS streams and subjects.
    #[arg(long, env = "CTXD_NATS_PREFIX", global = true)]
    pub nats_prefix: Option<String>,
    /// Servers holding each NATS stream.
    #[arg(long, env = "CTXD_NATS_REPLICAS", global = true)]
    pub nats_replicas: Option<usize>,
    /// This node's name among ctxd nodes on one NATS cluster (default: host name and port).
    #[arg(long, env = "CTXD_NODE_ID")]
    pub node_id: Option<String>,
    /// host:port the other nodes reach this one at (default: the listen address).
    #[arg(long, env = "CTXD_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// How long a dead node keeps its contexts before another takes them over, ms.
    #[arg(long, env = "CTXD_LEASE_TTL_MS")]
    pub lease_ttl_ms: Option<u64>,
    /// Mock LLM delay per streamed word, ms.
    #[arg(long, env = "CTXD_MOCK_DELAY_MS")]
    pub mock_delay_ms: Option<u64>,
    /// Root directory of the file tools (none: file tools off).
    #[arg(long, env = "CTXD_WORKSPACE")]
    pub workspace: Option<PathBuf>,
    /// Largest accepted message, bytes.
    #[arg(long, env = "CTXD_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Sync the WAL on every save.
    #[arg(long, env = "CTXD_SYNC_WRITES")]
    pub sync_writes: Option<bool>,
    /// LLM attempts per call before failing.
    #[arg(long, env = "CTXD_LLM_MAX_ATTEMPTS")]
    pub llm_max_attempts: Option<u32>,
    /// Backoff before the first LLM retry, ms.
    #[arg(long, env = "CTXD_LLM_RETRY_BASE_MS")]
    pub llm_retry_base_ms: Option<u64>,
    /// Longest backoff between LLM attempts, ms.
    #[arg(long, env = "CTXD_LLM_RETRY_MAX_MS")]
    pub llm_retry_max_ms: Option<u64>,
    /// Tool call timeout, ms.
    #[arg(long, env = "CTXD_TOOL_TIMEOUT_MS")]
    pub tool_timeout_ms: Option<u64>,
    /// Tool output limit, bytes.
    #[arg(long, env = "CTXD_TOOL_MAX_OUTPUT_BYTES")]
    pub tool_max_output_bytes: Option<usize>,
    /// Unload idle contexts after this many seconds.
    #[arg(long, env = "CTXD_IDLE_UNLOAD_SECS")]
    pub idle_unload_secs: Option<u64>,
    /// Log filter.
    #[arg(long, env = "CTXD_LOG")]
    pub log: Option<String>,
    /// Log line format.
    #[arg(long, env = "CTXD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Directory to serve at / (the web client).
    #[arg(long, env = "CTXD_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Comma-separated origins allowed to call over grpc-web, or * for any.
    #[arg(long, env = "CTXD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Model of contexts that name none.
    #[arg(long, env = "CTXD_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// Base URL of an OpenAI-compatible API, e.g. http://localhost:11434/v1.
    #[arg(long, env = "CTXD_OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,
    /// Comma-separated models served by that API (none: every model but mock).
    #[arg(long, env = "CTXD_OPENAI_MODELS", value_delimiter = ',')]
    pub openai_models: Option<Vec<String>>,
    /// LLM connect timeout, ms.
    #[arg(long, env = "CTXD_LLM_CONNECT_TIMEOUT_MS")]
    pub llm_connect_timeout_ms: Option<u64>,
    /// Longest silence between streamed chunks, ms.
    #[arg(long, env = "CTXD_LLM_IDLE_TIMEOUT_MS")]
    pub llm_idle_timeout_ms: Option<u64>,
    /// Default wait for an external tool's result, ms.
    #[arg(long, env = "CTXD_EXTERNAL_TOOL_TIMEOUT_MS")]
    pub external_tool_timeout_ms: Option<u64>,
    /// Address (IP:port) of the Prometheus metrics listener, or off.
    #[arg(long, env = "CTXD_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// OTLP/gRPC endpoint to export traces to (none: no traces).
    #[arg(long, env = "CTXD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// File with the HS256 JWT secret.
    #[arg(long, env = "CTXD_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// JWKS file with JWT public keys (re-read on change).
    #[arg(long, env = "CTXD_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// Required JWT issuer (iss).
    #[arg(long, env = "CTXD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required JWT audience (aud).
    #[arg(long, env = "CTXD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// JWT claim that names the tenant.
    #[arg(long, env = "CTXD_JWT_TENANT_CLAIM")]
    pub jwt_tenant_claim: Option<String>,
    /// Tolerated JWT clock skew on exp and nbf, seconds.
    #[arg(long, env = "CTXD_JWT_LEEWAY_SECS")]
    pub jwt_leeway_secs: Option<u64>,
    /// API keys file (re-read on change).
    #[arg(long, env = "CTXD_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Allow serving without authentication on a non-loopback address.
    #[arg(long, env = "CTXD_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Without authentication: comma-separated Host names accepted besides loopback ones (* for any).
    #[arg(long, env = "CTXD_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,
    /// Runs a tenant may have in progress at once (32 with authentication on, no limit without).
    #[arg(long, env = "CTXD_MAX_ACTIVE_RUNS_PER_TENANT")]
    pub max_active_runs_per_tenant: Option<usize>,
    /// Contexts a tenant may keep (none: no limit).
    #[arg(long, env = "CTXD_MAX_CONTEXTS_PER_TENANT")]
    pub max_contexts_per_tenant: Option<u64>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What ctxd does other than serve.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Manage API keys.
    #[command(name = "api-key", subcommand)]
    ApiKey(ApiKeyCommand),
    /// Copy every context from one store to another, verifying each copy (re-runnable: what
    /// is there already is checked, not copied twice). Stop the ctxd using the source first.
    Migrate {
        /// Where the contexts are: rocksdb:PATH or nats://HOST:PORT[,...].
        #[arg(long)]
        from: Place,
        /// Where they go: rocksdb:PATH or nats://HOST:PORT[,...] (with --nats-prefix,
        /// --nats-replicas, --nats-creds).
        #[arg(long)]
        to: Place,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ApiKeyCommand {
    /// Print a new random API key (once) and the line that grants it in the API keys file.
    New {
        /// The tenant the key acts for.
        #[arg(long)]
        tenant: String,
        /// A scope the key grants (repeat for several); none: ctxd:read and ctxd:write.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
}

impl Args {
    /// Parses the command line (and environment); `--help` shows each flag's default as
    /// [`Config::default`] has it, the one place defaults are written.
    pub fn parse_with_defaults() -> Self {
        let matches = Self::command_with_defaults().get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }

    /// The command, with every flag's help naming its default.
    pub fn command_with_defaults() -> clap::Command {
        let defaults = Config::defaults_shown();
        Self::command().mut_args(|arg| match arg.get_long().and_then(|long| defaults.get(long)) {
            Some(value) => {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {value}]"))
            }
            None => arg,
        })
    }
}
