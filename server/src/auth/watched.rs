//! A file whose parsed contents are kept in memory and re-read when it changes, so keys
//! rotate without a restart. A change that does not parse is logged and ignored: the last
//! good contents stay in force (refusing everyone because of a typo would be an outage).
//!
//! A change is told by the contents' SHA-256, not by modification time and size: a rewrite
//! within the same second to the same length (one key's line swapped for another's) is a
//! change too. The files are small, so reading one each poll costs nothing worth measuring.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::telemetry::names;

/// How often the file is looked at for a change.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The contents of a file, parsed by `parse`.
pub struct Watched<T> {
    path: PathBuf,
    current: RwLock<Arc<T>>,
}

/// What tells a changed file from an unchanged one: its contents' digest (none: unreadable).
type Stamp = Option<[u8; 32]>;

fn stamp(text: &std::io::Result<String>) -> Stamp {
    text.as_ref().ok().map(|text| Sha256::digest(text.as_bytes()).into())
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Reads and parses `path` now (an error stops the server from starting), then re-reads
    /// it whenever it changes until `stop`, counting each change in force on `changes`.
    /// `what` names the file in logs and metrics.
    pub fn start(
        what: &'static str,
        path: &Path,
        parse: impl Fn(&str) -> Result<T, String> + Send + 'static,
        changes: watch::Sender<u64>,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, String> {
        let read = std::fs::read_to_string(path);
        let mut seen = stamp(&read);
        let text = read.map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
        let first = parse(&text).map_err(|e| format!("{what} {} is invalid: {e}", path.display()))?;
        let watched = Arc::new(Self { path: path.to_owned(), current: RwLock::new(Arc::new(first)) });
        let weak = Arc::downgrade(&watched);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(POLL_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let Some(watched) = weak.upgrade() else { return };
                let read = std::fs::read_to_string(&watched.path);
                let now = stamp(&read);
                if now == seen {
                    continue;
                }
                seen = now;
                if watched.reload(what, read, &parse) {
                    changes.send_modify(|n| *n += 1);
                }
            }
        });
        Ok(watched)
    }

    /// Puts the file's new contents in force; false if they cannot be used.
    fn reload(
        &self,
        what: &'static str,
        read: std::io::Result<String>,
        parse: &impl Fn(&str) -> Result<T, String>,
    ) -> bool {
        let path = self.path.display();
        match read.map_err(|e| e.to_string()).and_then(|text| parse(&text)) {
            Ok(value) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
                metrics::counter!(names::AUTH_RELOADS, "file" => what, "outcome" => "ok").increment(1);
                tracing::info!(file = %path, "re-read {what}");
                true
            }
            Err(error) => {
                metrics::counter!(names::AUTH_RELOADS, "file" => what, "outcome" => "error").increment(1);
                tracing::warn!(file = %path, %error, "{what} changed but cannot be used; keeping the previous one");
                false
            }
        }
    }

    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}
