//! What every actor shares: storage, the LLM and tools, settings, the registry of live
//! actors and the list watchers' channel.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handle::ActorHandle;
use super::settings::Settings;
use super::tenants::{Members, Runs};
use super::window::Windows;
use crate::cluster::{Lease, Placement};
use crate::domain::ContextKey;
use crate::llm::LlmProvider;
use crate::store::Backend;
use crate::store::Change;
use crate::tools::ToolRegistry;

/// List events a list watcher may fall behind by before it is sent the list again.
const LIST_CHANNEL_CAPACITY: usize = 1024;

pub(super) struct Shared {
    pub(super) store: Arc<dyn Backend>,
    pub(super) llm: Arc<dyn LlmProvider>,
    pub(super) tools: Arc<ToolRegistry>,
    pub(super) settings: Settings,
    pub(super) windows: Windows,
    pub(super) actors: Mutex<HashMap<ContextKey, ActorHandle>>,
    pub(super) next_instance: AtomicU64,
    /// Held while a context is created or deleted: makes "exists? then insert" atomic, and
    /// keeps `members` exact.
    pub(super) membership: tokio::sync::Mutex<()>,
    pub(super) members: Members,
    pub(super) runs: Arc<Runs>,
    pub(super) shutdown: CancellationToken,
    pub(super) tasks: TaskTracker,
    pub(super) list_events: tokio::sync::broadcast::Sender<Change>,
    pub(super) placement: Arc<dyn Placement>,
    /// The store reports every save, this process's and other processes': list watchers are
    /// told from there, not by the actors (which would tell this process's twice).
    pub(super) store_reports: bool,
}

impl Shared {
    pub(super) fn new(
        store: Arc<dyn Backend>,
        llm: Arc<dyn LlmProvider>,
        tools: Arc<ToolRegistry>,
        settings: Settings,
        placement: Arc<dyn Placement>,
        store_reports: bool,
    ) -> Self {
        let windows = Windows::new(&settings, tools.definitions());
        Self {
            store,
            llm,
            tools,
            settings,
            windows,
            actors: Mutex::new(HashMap::new()),
            next_instance: AtomicU64::new(1),
            membership: tokio::sync::Mutex::new(()),
            members: Members::default(),
            runs: Arc::new(Runs::default()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            list_events: tokio::sync::broadcast::channel(LIST_CHANNEL_CAPACITY).0,
            placement,
            store_reports,
        }
    }

    /// A change this process made; told to list watchers unless the store reports it.
    pub(super) fn list_changed(&self, event: Change) {
        if !self.store_reports {
            self.announce_list(event);
        }
    }

    pub(super) fn announce_list(&self, event: Change) {
        // Nobody watching the list is fine.
        let _ = self.list_events.send(event);
    }

    /// Gives up the lease of `key` once what was saved of it is written in full (a next
    /// holder must not find the store still being written behind a save).
    pub(super) fn release(self: &Arc<Self>, key: ContextKey, lease: Lease) {
        let shared = Arc::clone(self);
        self.tasks.spawn(async move {
            shared.store.settle(&key).await;
            shared.placement.release(&key, lease).await;
        });
    }

    /// Forgets `instance` as the actor of `key`, if it still is.
    pub(super) fn unregister(&self, key: &ContextKey, instance: u64) {
        let mut actors = self.actors.lock().unwrap_or_else(PoisonError::into_inner);
        if actors.get(key).is_some_and(|h| h.instance == instance) {
            actors.remove(key);
        }
    }
}
