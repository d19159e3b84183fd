//! `ctxd migrate`: copies every context from one store to another (RocksDB → NATS when one
//! machine is not enough, or back), checking each copy against its source.
//!
//! Each context is read whole ([`Dump`]), restored in the destination (one atomic write on
//! RocksDB; on NATS a run of records of which only the last names the context), read back
//! and compared by message count and SHA-256. A context already at the destination is
//! compared, not written again, so the command can be re-run after a failure or a crash.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::domain::ContextKey;
use crate::store::{self, Backend, Inserted, Nats, NatsOptions, Rocks};

/// One side of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// `rocksdb:PATH`: a ctxd data directory.
    Rocksdb(PathBuf),
    /// `nats://host:port[,nats://...]` (or `tls://`): a JetStream cluster.
    Nats(Vec<String>),
}

impl FromStr for Place {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("rocksdb:") {
            if path.is_empty() {
                return Err("rocksdb: needs the data directory, e.g. rocksdb:/var/lib/ctxd".into());
            }
            return Ok(Self::Rocksdb(PathBuf::from(path)));
        }
        let urls: Vec<String> = text.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect();
        if !urls.is_empty() && urls.iter().all(|u| u.starts_with("nats://") || u.starts_with("tls://")) {
            return Ok(Self::Nats(urls));
        }
        Err(format!("{text:?} is neither rocksdb:PATH nor nats://HOST:PORT[,...] (or tls://)"))
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rocksdb(path) => write!(f, "rocksdb:{}", path.display()),
            // Without credentials a URL may carry: this is printed.
            Self::Nats(urls) => f.write_str(&store::nats::shown_urls(urls)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Store(#[from] store::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Place {
    /// Opens the store. `source`: it must exist already (a typo must not read as an empty
    /// store), and on NATS it may be in the previous layout (layout 1, read only; then the
    /// second value is `true`). A RocksDB directory a running ctxd holds is refused
    /// (RocksDB's lock).
    pub async fn open(&self, nats: &NatsOptions, source: bool) -> Result<(Arc<dyn Backend>, bool), Error> {
        match self {
            Self::Rocksdb(dir) => {
                if source && !dir.join("CURRENT").is_file() {
                    return Err(Error::Invalid(format!("{} holds no ctxd data (no RocksDB database)", dir.display())));
                }
                // Synced: a copy reported done survives a crash of this machine.
                Ok((Arc::new(Rocks::open_dir(dir.clone(), true).await?), false))
            }
            Self::Nats(urls) if source => Ok(store::nats::open_source(&self.nats_options(urls, nats)).await?),
            // Beside layout-1 streams under the same prefix: copying them in place.
            Self::Nats(urls) => {
                let options = NatsOptions { beside_layout_1: true, ..self.nats_options(urls, nats) };
                Ok((Arc::new(Nats::open(&options).await?), false))
            }
        }
    }

    fn nats_options(&self, urls: &[String], nats: &NatsOptions) -> NatsOptions {
        NatsOptions { urls: urls.to_vec(), ..nats.clone() }
    }

    /// After every context of the layout-1 streams of this place was copied into layout 2
    /// beside them and checked: deletes them (ctxd nodes refuse to start beside them).
    pub async fn retire_layout_1(&self, nats: &NatsOptions) -> Result<(), Error> {
        match self {
            Self::Nats(urls) => Ok(store::nats::delete_layout_1(&self.nats_options(urls, nats)).await?),
            Self::Rocksdb(_) => Ok(()),
        }
    }
}

/// What a migration did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Copied now, and verified.
    pub copied: u64,
    /// At the destination already, and identical to the source.
    pub present: u64,
    /// Messages of the contexts copied or present (every branch).
    pub messages: u64,
    /// Contexts that could not be copied, and why.
    pub failed: Vec<(ContextKey, String)>,
}

/// Copies every context of `from` into `to`, verifying each. `progress` hears of each
/// context done (its key, and the report so far).
pub async fn run(
    from: &dyn Backend,
    to: &dyn Backend,
    mut progress: impl FnMut(&ContextKey, &Report),
) -> Result<Report, Error> {
    let mut keys = from.keys().await?;
    keys.sort_by_cached_key(ToString::to_string);
    let mut report = Report::default();
    for key in keys {
        match copy(from, to, &key).await {
            Ok(Some((outcome, messages))) => {
                match outcome {
                    Inserted::Saved => report.copied += 1,
                    Inserted::Taken => report.present += 1,
                }
                report.messages += messages;
            }
            // Deleted since it was listed.
            Ok(None) => {}
            // Either store gone: nothing after this would copy either.
            Err(error @ store::Error::Unavailable(_)) => return Err(error.into()),
            Err(error) => report.failed.push((key.clone(), error.to_string())),
        }
        progress(&key, &report);
    }
    Ok(report)
}

/// Copies one context; `None` if the source no longer has it. Returns what restoring did
/// and how many messages the context holds.
async fn copy(from: &dyn Backend, to: &dyn Backend, key: &ContextKey) -> store::Result<Option<(Inserted, u64)>> {
    let Some(dump) = from.dump(key).await? else { return Ok(None) };
    let outcome = to.restore(&dump).await?;
    let copy = to.dump(key).await?;
    let mismatch = |what: &str| {
        store::Error::Corrupt(match outcome {
            Inserted::Taken => {
                format!("context {key}: a different context with this id is at the destination ({what})")
            }
            Inserted::Saved => format!("context {key}: the copy differs from the source ({what})"),
        })
    };
    let Some(copy) = copy else { return Err(mismatch("it reads as missing")) };
    if copy.messages.len() != dump.messages.len() {
        return Err(mismatch(&format!("{} messages, not {}", copy.messages.len(), dump.messages.len())));
    }
    if copy.checksum() != dump.checksum() {
        return Err(mismatch("checksums differ"));
    }
    Ok(Some((outcome, dump.messages.len() as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_parse_or_say_what_is_expected() {
        assert_eq!("rocksdb:/var/lib/ctxd".parse(), Ok(Place::Rocksdb("/var/lib/ctxd".into())));
        assert_eq!(
            "nats://a:4222, tls://b:4222".parse(),
            Ok(Place::Nats(vec!["nats://a:4222".into(), "tls://b:4222".into()]))
        );
        for bad in ["rocksdb:", "/var/lib/ctxd", "http://a:4222", "nats://a:4222,b:4222", ""] {
            assert!(bad.parse::<Place>().is_err(), "{bad:?}");
        }
    }
}
