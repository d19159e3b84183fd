//! A file whose parsed contents are kept in memory and re-read when it changes, so keys
//! rotate without a restart. A change that does not parse is logged and ignored: the last
//! good contents stay in force (refusing everyone because of a typo would be an outage).

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::telemetry::names;

/// How often the file is looked at for a change.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The contents of a file, parsed by `parse`.
pub struct Watched<T> {
    path: PathBuf,
    current: RwLock<Arc<T>>,
}

/// What tells a changed file from an unchanged one without reading it.
type Stamp = (Option<SystemTime>, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| (m.modified().ok(), m.len()))
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Reads and parses `path` now (an error stops the server from starting), then re-reads
    /// it whenever it changes until `stop`. `what` names the file in logs and metrics.
    pub fn start(
        what: &'static str,
        path: &Path,
        parse: impl Fn(&str) -> Result<T, String> + Send + 'static,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, String> {
        let mut seen = stamp(path);
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
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
                let now = stamp(&watched.path);
                if now == seen {
                    continue;
                }
                seen = now;
                watched.reload(what, &parse);
            }
        });
        Ok(watched)
    }

    fn reload(&self, what: &'static str, parse: &impl Fn(&str) -> Result<T, String>) {
        let path = self.path.display();
        match std::fs::read_to_string(&self.path).map_err(|e| e.to_string()).and_then(|text| parse(&text)) {
            Ok(value) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
                metrics::counter!(names::AUTH_RELOADS, "file" => what, "outcome" => "ok").increment(1);
                tracing::info!(file = %path, "re-read {what}");
            }
            Err(error) => {
                metrics::counter!(names::AUTH_RELOADS, "file" => what, "outcome" => "error").increment(1);
                tracing::warn!(file = %path, %error, "{what} changed but cannot be used; keeping the previous one");
            }
        }
    }

    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}
