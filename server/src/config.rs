//! Configuration: defaults, overridden by a TOML file, overridden by `CTXD_*` environment
//! variables, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is invalid: {source}")]
    Parse { path: String, source: Box<toml::de::Error> },
    #[error("{0}")]
    Invalid(String),
}

/// Everything ctxd can be configured with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// How long one tool call may run, in milliseconds.
    pub tool_timeout_ms: u64,
    /// Tool output beyond this many bytes is cut.
    pub tool_max_output_bytes: usize,
    /// A resting context with no watchers is unloaded from memory after this many seconds.
    pub idle_unload_secs: u64,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log: String,
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
            tool_timeout_ms: 30_000,
            tool_max_output_bytes: 64 * 1024,
            idle_unload_secs: 300,
            log: "info".into(),
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
    /// Address (IP:port) to serve on [default: 127.0.0.1:50051].
    #[arg(long, env = "CTXD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: ./data].
    #[arg(long, env = "CTXD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Mock LLM delay per streamed word, ms [default: 20].
    #[arg(long, env = "CTXD_MOCK_DELAY_MS")]
    pub mock_delay_ms: Option<u64>,
    /// Root directory of the file tools [default: none, file tools off].
    #[arg(long, env = "CTXD_WORKSPACE")]
    pub workspace: Option<PathBuf>,
    /// Largest accepted message, bytes [default: 262144].
    #[arg(long, env = "CTXD_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Sync the WAL on every save [default: true].
    #[arg(long, env = "CTXD_SYNC_WRITES")]
    pub sync_writes: Option<bool>,
    /// LLM attempts per call before failing [default: 3].
    #[arg(long, env = "CTXD_LLM_MAX_ATTEMPTS")]
    pub llm_max_attempts: Option<u32>,
    /// Backoff before the first LLM retry, ms [default: 500].
    #[arg(long, env = "CTXD_LLM_RETRY_BASE_MS")]
    pub llm_retry_base_ms: Option<u64>,
    /// Tool call timeout, ms [default: 30000].
    #[arg(long, env = "CTXD_TOOL_TIMEOUT_MS")]
    pub tool_timeout_ms: Option<u64>,
    /// Tool output limit, bytes [default: 65536].
    #[arg(long, env = "CTXD_TOOL_MAX_OUTPUT_BYTES")]
    pub tool_max_output_bytes: Option<usize>,
    /// Unload idle contexts after this many seconds [default: 300].
    #[arg(long, env = "CTXD_IDLE_UNLOAD_SECS")]
    pub idle_unload_secs: Option<u64>,
    /// Log filter [default: info].
    #[arg(long, env = "CTXD_LOG")]
    pub log: Option<String>,
    /// Directory to serve at / (the web client) [default: none].
    #[arg(long, env = "CTXD_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Comma-separated origins allowed to call over grpc-web, or * [default: Vite's localhost dev origins].
    #[arg(long, env = "CTXD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Model of contexts that name none [default: mock].
    #[arg(long, env = "CTXD_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// Base URL of an OpenAI-compatible API, e.g. http://localhost:11434/v1 [default: none].
    #[arg(long, env = "CTXD_OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,
    /// Comma-separated models served by that API [default: every model but mock].
    #[arg(long, env = "CTXD_OPENAI_MODELS", value_delimiter = ',')]
    pub openai_models: Option<Vec<String>>,
    /// LLM connect timeout, ms [default: 10000].
    #[arg(long, env = "CTXD_LLM_CONNECT_TIMEOUT_MS")]
    pub llm_connect_timeout_ms: Option<u64>,
    /// Longest silence between streamed chunks, ms [default: 60000].
    #[arg(long, env = "CTXD_LLM_IDLE_TIMEOUT_MS")]
    pub llm_idle_timeout_ms: Option<u64>,
    /// Default wait for an external tool's result, ms [default: 300000].
    #[arg(long, env = "CTXD_EXTERNAL_TOOL_TIMEOUT_MS")]
    pub external_tool_timeout_ms: Option<u64>,
}

impl Config {
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
            tool_timeout_ms,
            tool_max_output_bytes,
            idle_unload_secs,
            log,
            web_dir,
            cors_origins,
            default_model,
            openai_base_url,
            openai_models,
            llm_connect_timeout_ms,
            llm_idle_timeout_ms,
            external_tool_timeout_ms,
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
            tool_timeout_ms,
            tool_max_output_bytes,
            idle_unload_secs,
            log,
            cors_origins,
            default_model,
            openai_models,
            llm_connect_timeout_ms,
            llm_idle_timeout_ms,
            external_tool_timeout_ms
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
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ctxd.toml");
        std::fs::write(&file, "data-dir = \"/from/file\"\nmock-delay-ms = 5\nsync-writes = false\n").expect("write");
        let args = Args::parse_from(["ctxd", "--config", file.to_str().expect("utf-8"), "--mock-delay-ms", "7"]);
        let config = Config::load(args).expect("valid config");
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.mock_delay_ms, 7);
        assert!(!config.sync_writes);
        assert_eq!(config.listen, Config::default().listen);

        std::fs::write(&file, "no-such-key = 1\n").expect("write");
        let args = Args::parse_from(["ctxd", "--config", file.to_str().expect("utf-8")]);
        assert!(matches!(Config::load(args), Err(Error::Parse { .. })));
    }
}
