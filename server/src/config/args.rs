//! The command line: every setting as a flag (and its `CTXD_*` variable), and the
//! subcommands that do something other than serve.

use clap::{CommandFactory, FromArgMatches};

use super::{Args, Config};
use crate::migrate::Place;

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

    /// The command, with every flag's `CTXD_*` environment variable, and its help naming
    /// its default.
    pub fn command_with_defaults() -> clap::Command {
        let defaults = Config::defaults_shown();
        Self::command().mut_args(|arg| {
            let Some(long) = arg.get_long().map(str::to_owned) else { return arg };
            let arg = arg.env(format!("CTXD_{}", long.to_uppercase().replace('-', "_")));
            match defaults.get(&long) {
                Some(value) => {
                    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                    arg.help(format!("{help} [default: {value}]"))
                }
                None => arg,
            }
        })
    }
}
