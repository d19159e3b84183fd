//! Where the configuration comes from: defaults, overridden by a TOML file, overridden by
//! `CTXD_*` environment variables and flags (which clap reads together).

use std::path::Path;

use super::{Args, Config, Error};

impl Config {
    /// Defaults, then the config file, then flags and environment.
    pub fn load(args: Args) -> Result<Self, Error> {
        let config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        let config = config.overlay(args);
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text)
            .map_err(|source| Error::Parse { path: path.display().to_string(), source: Box::new(source) })
    }
}
