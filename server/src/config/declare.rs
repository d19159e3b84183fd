//! Each setting is declared once (in `config/mod.rs`): its meaning, its type, its default and
//! any flag detail. From that one list this macro makes the `Config` struct (the TOML file's
//! keys, kebab-case), its `Default`, the command line's `Args` (a `--flag` each, whose
//! `CTXD_*` variable `Args::command_with_defaults` adds) and the overlay of flags on a config.
//!
//! A setting is one of three kinds:
//! - `value`: always has a value (`T`); a flag replaces it;
//! - `optional`: none unless set (`Option<T>`, default `None`); a flag sets it;
//! - a switch (listed apart): off unless turned on (`bool`); a flag (no value) turns it on.

macro_rules! settings {
    (
        settings {
            $(
                $(#[doc = $doc:literal])*
                $(#[arg($($arg:tt)*)])?
                $kind:ident $name:ident : $ty:ty = $default:expr;
            )*
        }
        switches {
            $(
                $(#[doc = $switch_doc:literal])*
                $switch:ident;
            )*
        }
    ) => {
        /// Everything ctxd can be configured with.
        #[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $name: settings!(@config $kind $ty), )*
            $( $(#[doc = $switch_doc])* pub $switch: bool, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $( $name: $default, )* $( $switch: false, )* }
            }
        }

        /// Command-line flags; each can also be set by the `CTXD_*` environment variable it
        /// names.
        #[derive(Debug, clap::Parser)]
        #[command(name = "ctxd", version, about = "A context server for LLM chat applications")]
        pub struct Args {
            /// TOML file with settings (kebab-case keys, e.g. `data-dir = "/var/lib/ctxd"`).
            #[arg(long)]
            pub config: Option<std::path::PathBuf>,
            // clap reads `Option` from the field's type as written: every value or optional
            // setting is an optional flag.
            $( $(#[doc = $doc])* #[arg(long $(, $($arg)*)?)] pub $name: Option<$ty>, )*
            $( $(#[doc = $switch_doc])* #[arg(long)] pub $switch: bool, )*
            #[command(subcommand)]
            pub command: Option<Command>,
        }

        impl Config {
            /// This configuration with every setting `args` gives put over it.
            fn overlay(mut self, args: Args) -> Self {
                $( settings!(@overlay $kind self, args, $name); )*
                $( self.$switch |= args.$switch; )*
                self
            }
        }
    };
    (@config value $ty:ty) => { $ty };
    (@config optional $ty:ty) => { Option<$ty> };
    (@overlay value $config:ident, $args:ident, $name:ident) => {
        if let Some(value) = $args.$name {
            $config.$name = value;
        }
    };
    (@overlay optional $config:ident, $args:ident, $name:ident) => {
        if $args.$name.is_some() {
            $config.$name = $args.$name;
        }
    };
}

pub(super) use settings;
