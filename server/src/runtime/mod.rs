//! Live contexts: one actor (a task) per loaded context is its only writer. Actors load on
//! demand, resume runs interrupted by a restart, and unload after resting idle.

mod actor;
mod batch;
mod feed;
mod prompt;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{Context, ContextConfig, ContextId, ContextSummary, Timestamp};

use crate::fsm::{Command, Rejection};
use crate::llm::LlmProvider;
use crate::store::{self, ListCursor, Store, Writer};
use crate::tools::ToolRegistry;
pub use feed::{Event, EventKind, Feed, Subscription, Update};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("context {0} not found")]
    NotFound(ContextId),
    #[error("context {0} already exists")]
    AlreadyExists(ContextId),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Storage(#[from] store::Error),
    #[error("too many actions are queued for context {0}; try again later")]
    Overloaded(ContextId),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("context {id} stopped: {reason}")]
    Stopped { id: ContextId, reason: String },
    /// The request reached an actor that was unloading and was not applied: send it to the
    /// context's next actor. Never leaves the runtime.
    #[error("the context was unloaded; try again")]
    Unloaded,
    #[error(
        "the action was saved (revision {revision}), but context {id} did not come to rest before the deadline; \
         GetState or WatchState show how it ends"
    )]
    DeadlineExceeded { id: ContextId, revision: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Knobs of the runtime.
#[derive(Debug, Clone)]
pub struct Settings {
    /// LLM attempts per call (the first try included) before a run fails.
    pub max_llm_attempts: u32,
    /// Backoff before the first retry; doubles each attempt, with jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// A resting context with no watchers unloads after this long.
    pub idle_unload: Duration,
    /// Actions that may wait in one context's queue.
    pub mailbox_capacity: usize,
    /// The model of contexts whose config names none.
    pub default_model: String,
    /// How long an external tool call waits for SubmitToolResult unless its tool says.
    pub external_tool_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_llm_attempts: 3,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(10),
            idle_unload: Duration::from_secs(300),
            mailbox_capacity: 256,
            default_model: "mock".into(),
            external_tool_timeout: Duration::from_secs(300),
        }
    }
}

/// What a live context's watchers see.
#[derive(Debug, Clone)]
pub enum Slot {
    Loading,
    Live(Arc<Context>),
    Gone(Gone),
}

#[derive(Debug, Clone)]
pub enum Gone {
    NotFound,
    Deleted,
    /// Unloaded while idle: the next request starts a new actor.
    Unloaded,
    /// The server is stopping, or a load or save failed.
    Stopped(String),
}

enum Request {
    Act { command: Command, reply: oneshot::Sender<Result<Arc<Context>>> },
    Delete { reply: oneshot::Sender<Result<()>> },
}

#[derive(Clone)]
struct ActorHandle {
    mailbox: mpsc::Sender<Request>,
    state: watch::Receiver<Slot>,
    feed: Arc<Feed>,
    instance: u64,
}

/// A change to the list of contexts, for list watchers.
#[derive(Debug, Clone, PartialEq)]
pub enum ListEvent {
    /// A context was created or saved; replaces any older summary of it.
    Upserted(ContextSummary),
    Removed(ContextId),
}

/// List events a list watcher may fall behind by before it is sent the list again.
const LIST_CHANNEL_CAPACITY: usize = 1024;

struct Shared {
    store: Store,
    /// Every save of a running context goes through here (group commit).
    writer: Writer,
    llm: Arc<dyn LlmProvider>,
    tools: Arc<ToolRegistry>,
    settings: Settings,
    actors: Mutex<HashMap<ContextId, ActorHandle>>,
    next_instance: AtomicU64,
    create_lock: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    list_events: tokio::sync::broadcast::Sender<ListEvent>,
}

/// All contexts: the entry point the API layer talks to.
#[derive(Clone)]
pub struct Contexts {
    shared: Arc<Shared>,
}

impl Contexts {
    /// Starts the runtime and resumes every context that was saved in the middle of a run.
    pub async fn start(
        store: Store,
        llm: Arc<dyn LlmProvider>,
        tools: Arc<ToolRegistry>,
        settings: Settings,
    ) -> Result<Self> {
        let contexts = Self {
            shared: Arc::new(Shared {
                writer: Writer::start(store.clone())
                    .map_err(|e| Error::Internal(format!("could not start the storage writer: {e}")))?,
                store,
                llm,
                tools,
                settings,
                actors: Mutex::new(HashMap::new()),
                next_instance: AtomicU64::new(1),
                create_lock: tokio::sync::Mutex::new(()),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                list_events: tokio::sync::broadcast::channel(LIST_CHANNEL_CAPACITY).0,
            }),
        };
        let interrupted = contexts.blocking(|store| store.interrupted()).await?;
        if !interrupted.is_empty() {
            tracing::info!(count = interrupted.len(), "resuming contexts interrupted mid-run");
        }
        for id in interrupted {
            contexts.handle(id);
        }
        Ok(contexts)
    }

    /// Cancelled when the server starts shutting down; long-lived calls end then.
    pub fn stopping(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// Stops every actor after the transition it is saving, and waits for them.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        // Every actor has ended: no save can come any more.
        let writer = self.shared.writer.clone();
        if tokio::task::spawn_blocking(move || writer.stop()).await.is_err() {
            tracing::error!("could not stop the storage writer");
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> store::Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| Error::Internal(format!("storage task failed: {e}")))?
            .map_err(Error::from)
    }

    pub async fn create(&self, id: Option<ContextId>, title: String, config: ContextConfig) -> Result<Arc<Context>> {
        let id = id.unwrap_or_default();
        let ctx = Context::new(id, title, config, Timestamp::now());
        // Creation is rare; one lock makes "exists? then insert" atomic.
        let _guard = self.shared.create_lock.lock().await;
        let saved = ctx.clone();
        let created = self
            .blocking(move |store| {
                if store.exists(saved.id)? {
                    return Ok(false);
                }
                store.insert(&saved).map(|()| true)
            })
            .await?;
        if !created {
            return Err(Error::AlreadyExists(id));
        }
        tracing::info!(context = %id, revision = ctx.revision, from = "-", to = %ctx.state(), "auto-saved");
        self.shared.list_changed(ListEvent::Upserted(ctx.summary()));
        Ok(Arc::new(ctx))
    }

    pub async fn list(
        &self,
        cursor: Option<ListCursor>,
        limit: usize,
    ) -> Result<(Vec<ContextSummary>, Option<ListCursor>)> {
        self.blocking(move |store| store.list(cursor, limit)).await
    }

    /// The current state of a context (loading it if needed).
    pub async fn get(&self, id: ContextId) -> Result<Arc<Context>> {
        self.loaded(id).await.map(|(_, ctx)| ctx)
    }

    /// The live actor of a context once it has loaded, with its state then.
    async fn loaded(&self, id: ContextId) -> Result<(ActorHandle, Arc<Context>)> {
        loop {
            let handle = self.handle(id);
            let mut state = handle.state.clone();
            let slot = state
                .wait_for(|slot| !matches!(slot, Slot::Loading))
                .await
                .map(|slot| slot.clone())
                .unwrap_or_else(|_| Slot::Gone(Gone::Unloaded));
            match slot {
                Slot::Live(ctx) => return Ok((handle, ctx)),
                Slot::Loading => continue,
                Slot::Gone(gone) => self.gone_error(id, gone)?,
            }
        }
    }

    /// Follows a context: the first updates (a snapshot, or the saved events after
    /// `from_revision`), then a subscription to every later change.
    pub async fn watch(&self, id: ContextId, from_revision: u64) -> Result<(Vec<Update>, Subscription)> {
        loop {
            let (handle, _) = self.loaded(id).await?;
            match handle.feed.subscribe(from_revision) {
                Some(subscription) => return Ok(subscription),
                // The actor ended between the two looks; its successor is found next turn.
                None => tokio::task::yield_now().await,
            }
        }
    }

    /// Follows the list of contexts: a receiver of every later change, then the first page.
    /// Subscribing first means no change between the two is missed (some may repeat what
    /// the page already shows; summaries carry revisions for that).
    pub async fn watch_list(
        &self,
        limit: usize,
    ) -> Result<(Vec<ContextSummary>, tokio::sync::broadcast::Receiver<ListEvent>)> {
        let events = self.shared.list_events.subscribe();
        let (page, _) = self.list(None, limit).await?;
        Ok((page, events))
    }

    /// Turns a departed actor into an error, or `Ok` when the caller should try the next one.
    fn gone_error(&self, id: ContextId, gone: Gone) -> Result<()> {
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        match gone {
            Gone::NotFound | Gone::Deleted => Err(Error::NotFound(id)),
            Gone::Unloaded => Ok(()),
            Gone::Stopped(reason) => Err(Error::Stopped { id, reason }),
        }
    }

    pub async fn delete(&self, id: ContextId) -> Result<()> {
        loop {
            let (reply, response) = oneshot::channel();
            match self.send(id, Request::Delete { reply }, response).await {
                Err(Error::Unloaded) => continue,
                other => return other.map(|_| ()),
            }
        }
    }

    /// Dispatches an action. Returns once its first transition is saved, or with `wait`, once
    /// the context rests (bounded by `deadline`).
    pub async fn act(
        &self,
        id: ContextId,
        command: Command,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<Arc<Context>> {
        let (ctx, mut state) = loop {
            let (reply, response) = oneshot::channel();
            match self.send(id, Request::Act { command: command.clone(), reply }, response).await {
                Err(Error::Unloaded) => continue,
                other => break other?,
            }
        };
        if !wait || ctx.awaits_client() {
            return Ok(ctx);
        }
        let revision = ctx.revision;
        let rested = state.wait_for(|slot| match slot {
            Slot::Live(now) => now.revision >= revision && now.awaits_client(),
            Slot::Loading => false,
            Slot::Gone(_) => true,
        });
        let slot = match deadline {
            Some(deadline) => {
                tokio::time::timeout_at(deadline, rested).await.map_err(|_| Error::DeadlineExceeded { id, revision })?
            }
            None => rested.await,
        }
        .map(|slot| slot.clone())
        .map_err(|_| Error::ShuttingDown)?;
        match slot {
            Slot::Live(ctx) => Ok(ctx),
            Slot::Gone(Gone::NotFound | Gone::Deleted) => Err(Error::NotFound(id)),
            // It came to rest and was unloaded: what it saved is what the caller waited for.
            Slot::Gone(Gone::Unloaded) => self.get(id).await,
            Slot::Gone(Gone::Stopped(reason)) if !self.shared.shutdown.is_cancelled() => {
                Err(Error::Stopped { id, reason })
            }
            _ => Err(Error::ShuttingDown),
        }
    }

    async fn send<T>(
        &self,
        id: ContextId,
        request: Request,
        response: oneshot::Receiver<Result<T>>,
    ) -> Result<(T, watch::Receiver<Slot>)> {
        let handle = self.handle(id);
        match handle.mailbox.try_send(request) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(Error::Overloaded(id)),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                if self.shared.shutdown.is_cancelled() {
                    return Err(Error::ShuttingDown);
                }
                return Err(Error::Unloaded);
            }
        }
        match response.await {
            Ok(result) => result.map(|value| (value, handle.state)),
            Err(_) if self.shared.shutdown.is_cancelled() => Err(Error::ShuttingDown),
            Err(_) => Err(Error::Internal(format!("context {id} dropped a request"))),
        }
    }

    /// The live actor of a context, started if there is none.
    fn handle(&self, id: ContextId) -> ActorHandle {
        let mut actors = self.shared.actors.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = actors.get(&id)
            && !handle.mailbox.is_closed()
        {
            return handle.clone();
        }
        let instance = self.shared.next_instance.fetch_add(1, Ordering::Relaxed);
        let (handle, actor) = actor::Actor::new(id, instance, Arc::clone(&self.shared));
        actors.insert(id, handle.clone());
        if self.shared.shutdown.is_cancelled() {
            // No new work once stopping; the actor reports that at once.
            self.shared.tasks.spawn(actor.refuse());
        } else {
            self.shared.tasks.spawn(actor.run());
        }
        handle
    }
}

impl Shared {
    fn list_changed(&self, event: ListEvent) {
        // Nobody watching the list is fine.
        let _ = self.list_events.send(event);
    }

    /// Forgets `instance` as the actor of `id`, if it still is.
    fn unregister(&self, id: ContextId, instance: u64) {
        let mut actors = self.actors.lock().unwrap_or_else(PoisonError::into_inner);
        if actors.get(&id).is_some_and(|h| h.instance == instance) {
            actors.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests;
