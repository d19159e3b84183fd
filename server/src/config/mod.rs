//! Configuration: defaults, overridden by a TOML file, overridden by `CTXD_*` environment
//! variables, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use serde::{Deserialize, Serialize};

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

/// Everything ctxd can be configured with.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// Address (IP:port) to serve gRPC on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where RocksDB keeps the contexts.
    pub data_dir: PathBuf,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("./data"),
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
        }
    }
}

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
    /// Data directory.
    #[arg(long, env = "CTXD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
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
            data_dir,
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
        } = args;
        macro_rules! overlay {
            ($($field:ident),*) => { $( if let Some(value) = $field { config.$field = value; } )* };
        }
        overlay!(
            listen,
            data_dir,
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
            metrics_listen
        );
        if openai_base_url.is_some() {
            config.openai_base_url = openai_base_url;
        }
        if workspace.is_some() {
            config.workspace = workspace;
        }
        if web_dir.is_some() {
            config.web_dir = web_dir;
        }
        if otlp_endpoint.is_some() {
            config.otlp_endpoint = otlp_endpoint;
        }
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
        Ok(())
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

    /// The OpenAI API key, from the environment only.
    pub fn openai_api_key() -> Option<String> {
        ["CTXD_OPENAI_API_KEY", "OPENAI_API_KEY"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|key| !key.is_empty()))
    }
}

#[cfg(test)]
mod tests;
