//! The registry of live contexts: the entry point the API layer talks to. It starts an
//! actor per context on demand, routes requests to it, and waits on it for callers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::actor::Actor;
use super::error::{Error, Result};
use super::feed::{Subscription, Update};
use super::handle::{Action, ActorHandle, Gone, Request, Slot};
use super::settings::Settings;
use super::shared::Shared;
use crate::cluster::{Claim, Lease, Placement};
use crate::domain::{Context, ContextConfig, ContextId, ContextKey, ContextSummary, MessageId, TenantId, Timestamp};
use crate::fsm::ContextWindow as _;
use crate::llm::LlmProvider;
use crate::store::{Backend, Change, Inserted};
use crate::telemetry::names;
use crate::tools::ToolRegistry;

/// All contexts: the entry point the API layer talks to.
#[derive(Clone)]
pub struct Contexts {
    pub(super) shared: Arc<Shared>,
}

impl Contexts {
    /// Starts the runtime and resumes every context that was saved in the middle of a run
    /// (on a cluster: that no live node runs).
    pub async fn start(
        store: Arc<dyn Backend>,
        llm: Arc<dyn LlmProvider>,
        tools: Arc<ToolRegistry>,
        settings: Settings,
        placement: Arc<dyn Placement>,
    ) -> Result<Self> {
        let shared = store.shared();
        let shared = Shared::new(store, llm, tools, settings, placement, shared);
        Ok(Self { shared: Arc::new(shared) })
    }

    /// Whether an actor of this node has (or is loading) `key`.
    pub fn runs(&self, key: &ContextKey) -> bool {
        self.live(key).is_some()
    }

    /// Where contexts run: asked by routing and by the sweep for runs to take over.
    pub fn placement(&self) -> &dyn Placement {
        &*self.shared.placement
    }

    /// The contexts saved in the middle of a run.
    pub async fn interrupted(&self) -> Result<Vec<ContextKey>> {
        Ok(self.shared.store.interrupted().await?)
    }

    /// Loads `key` here in the background, so that its run saved mid-way goes on: unless a
    /// live node holds it (that node runs it).
    pub fn resume(&self, key: ContextKey) {
        let contexts = self.clone();
        self.shared.tasks.spawn(async move {
            match contexts.handle(&key).await {
                Ok(_) | Err(Error::Elsewhere { .. } | Error::ShuttingDown) => {}
                Err(error) => tracing::warn!(context = %key.id, tenant = %key.tenant, %error, "could not resume a run"),
            }
        });
    }

    /// Runs `task` beside the actors: shutdown waits for it. It should end when
    /// [`Contexts::stopping`] is cancelled.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.shared.tasks.spawn(task);
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
        self.shared.store.close().await;
    }

    /// Creates a context of `tenant`, recording who created it. A config that names no model
    /// gets the server's default model now, so a later change of the default does not switch
    /// existing conversations.
    pub async fn create(
        &self,
        tenant: TenantId,
        created_by: String,
        id: Option<ContextId>,
        title: String,
        mut config: ContextConfig,
    ) -> Result<Arc<Context>> {
        let key = ContextKey::new(tenant, id.unwrap_or_default());
        config.model = config.model_or(&self.shared.settings.default_model).to_owned();
        self.insert_new(Context::new(key, created_by, title, config, Timestamp::now())).await
    }

    /// A new context of `tenant` holding copies of `source`'s messages through `through` (none:
    /// all), with its config; `source` is untouched. An empty title keeps the source's.
    pub async fn fork(
        &self,
        source: &ContextKey,
        through: Option<MessageId>,
        tenant: TenantId,
        created_by: String,
        id: Option<ContextId>,
        title: String,
    ) -> Result<Arc<Context>> {
        let from = self.get(source).await?;
        let messages = from.fork_messages(through, &MessageId::new)?;
        let title = if title.is_empty() { from.title.clone() } else { title };
        let key = ContextKey::new(tenant, id.unwrap_or_default());
        let mut ctx = Context::new(key, created_by, title, from.config.clone(), Timestamp::now());
        for message in messages {
            ctx.put_message(message);
        }
        let forked = self.insert_new(ctx).await?;
        tracing::info!(context = %forked.id, from = %source.id, messages = forked.messages.len(), "forked");
        Ok(forked)
    }

    /// Saves a context that does not exist yet, with its messages, in one write: ALREADY_EXISTS
    /// if its id is taken in its tenant, RESOURCE_EXHAUSTED if the tenant has its most contexts.
    async fn insert_new(&self, mut ctx: Context) -> Result<Arc<Context>> {
        ctx.usage = ctx.usage(&self.shared.windows.budget(&ctx));
        let key = ctx.key();
        // On a cluster a new context is written by whichever node was asked (the store's
        // condition on its head refuses a taken id); the node holding its partition runs it
        // from its next call on. Held here meanwhile when that is this node.
        let lease = match self.shared.placement.claim(&key).await? {
            Claim::Mine(lease) => Some(lease),
            Claim::Elsewhere(_) => None,
        };
        let inserted = self.insert_held(ctx).await;
        if let Some(lease) = lease {
            self.shared.release(key, lease);
        }
        inserted
    }

    async fn insert_held(&self, ctx: Context) -> Result<Arc<Context>> {
        let key = ctx.key();
        // Creation is rare; one lock makes "exists? then insert" atomic and the counts exact.
        let _membership = self.shared.membership.lock().await;
        let max = self.shared.settings.max_contexts_per_tenant;
        // A store other processes write counts their contexts too: ask it each time.
        let counted = match max {
            Some(_) if !self.shared.store_reports => self.shared.members.get(&key.tenant),
            _ => None,
        };
        let store = &self.shared.store;
        // A taken id is ALREADY_EXISTS even for a tenant at its limit; without a limit the
        // insert itself finds out, in the same read.
        if max.is_some() && store.exists(&key).await? {
            return Err(Error::AlreadyExists(key.id));
        }
        // The tenant's count, read from storage the first time it matters.
        let count = match (max, counted) {
            (Some(_), None) => Some(store.count(&key.tenant).await?),
            _ => counted,
        };
        if let (Some(max), Some(count)) = (max, count)
            && count >= max
        {
            self.shared.members.set(&key.tenant, count);
            metrics::counter!(names::LIMIT_REFUSALS, "limit" => "contexts").increment(1);
            return Err(Error::TooManyContexts { tenant: key.tenant, max });
        }
        let ctx = Arc::new(ctx);
        // The engine has the last word: another process may have taken the key meanwhile.
        if store.insert(Arc::clone(&ctx)).await? == Inserted::Taken {
            return Err(Error::AlreadyExists(key.id));
        }
        if let Some(count) = count
            && !self.shared.store_reports
        {
            self.shared.members.set(&key.tenant, count + 1);
        }
        tracing::info!(context = %key.id, tenant = %key.tenant, revision = ctx.revision, from = "-", to = %ctx.state(), "auto-saved");
        metrics::counter!(names::SAVES).increment(1);
        self.shared.list_changed(Change::Saved { key, summary: ctx.summary() });
        Ok(ctx)
    }

    /// The current state of a context (loading it if needed).
    pub async fn get(&self, key: &ContextKey) -> Result<Arc<Context>> {
        self.loaded(key).await.map(|(_, ctx)| ctx)
    }

    /// The live actor of a context once it has loaded, with its state then.
    async fn loaded(&self, key: &ContextKey) -> Result<(ActorHandle, Arc<Context>)> {
        loop {
            let handle = self.handle(key).await?;
            let mut state = handle.state.clone();
            let slot = state
                .wait_for(|slot| !matches!(slot, Slot::Loading))
                .await
                .map(|slot| slot.clone())
                .unwrap_or_else(|_| Slot::Gone(Gone::Unloaded));
            match slot {
                Slot::Live(ctx) => return Ok((handle, ctx)),
                Slot::Loading => continue,
                Slot::Gone(gone) => self.gone_error(key.id, gone)?,
            }
        }
    }

    /// Follows a context: the first updates (a snapshot, or the saved events after
    /// `from_revision`), then a subscription to every later change.
    pub async fn watch(&self, key: &ContextKey, from_revision: u64) -> Result<(Vec<Update>, Subscription)> {
        loop {
            let (handle, _) = self.loaded(key).await?;
            match handle.feed.subscribe(from_revision) {
                Some(subscription) => return Ok(subscription),
                // The actor ended between the two looks; its successor is found next turn.
                None => tokio::task::yield_now().await,
            }
        }
    }

    /// Follows `tenant`'s list of contexts: a receiver of every later change (of every
    /// tenant, from a store this process alone writes: the caller keeps its own), then the
    /// first page. Subscribing first means no change between the two is missed (some may
    /// repeat what the page already shows; summaries carry revisions for that).
    pub async fn watch_list(
        &self,
        tenant: &TenantId,
        limit: usize,
    ) -> Result<(Vec<ContextSummary>, tokio::sync::broadcast::Receiver<Change>)> {
        let events = match self.shared.store.watch(tenant).await? {
            Some(changes) => changes,
            None => self.shared.list_events.subscribe(),
        };
        let (page, _) = self.list(tenant, None, limit).await?;
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

    pub async fn delete(&self, key: &ContextKey) -> Result<()> {
        loop {
            let (reply, response) = oneshot::channel();
            match self.send(key, Request::Delete { reply }, response).await {
                Err(Error::Unloaded) => continue,
                other => return other.map(|_| ()),
            }
        }
    }

    /// Dispatches an action. Returns once its first transition is saved, or with `wait`, once
    /// the context rests (bounded by `deadline`).
    pub async fn act(
        &self,
        key: &ContextKey,
        action: impl Into<Action>,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<Arc<Context>> {
        let action = action.into();
        let (ctx, mut state) = loop {
            let (reply, response) = oneshot::channel();
            match self
                .send(key, Request::Act { action: action.clone(), reply, span: tracing::Span::current() }, response)
                .await
            {
                Err(Error::Unloaded) => continue,
                other => break other?,
            }
        };
        if !wait || ctx.awaits_client() {
            return Ok(ctx);
        }
        let (id, revision) = (key.id, ctx.revision);
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
            Slot::Gone(Gone::Unloaded) => self.get(key).await,
            Slot::Gone(Gone::Stopped(reason)) if !self.shared.shutdown.is_cancelled() => {
                Err(Error::Stopped { id, reason })
            }
            _ => Err(Error::ShuttingDown),
        }
    }

    async fn send<T>(
        &self,
        key: &ContextKey,
        request: Request,
        response: oneshot::Receiver<Result<T>>,
    ) -> Result<(T, watch::Receiver<Slot>)> {
        let handle = self.handle(key).await?;
        match handle.mailbox.try_send(request) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(Error::Overloaded(key.id)),
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
            Err(_) => Err(Error::Internal(format!("context {} dropped a request", key.id))),
        }
    }

    /// The live actor of a context, started if there is none: once this node took the
    /// context (on a cluster, [`Error::Elsewhere`] if a live node holds it).
    async fn handle(&self, key: &ContextKey) -> Result<ActorHandle> {
        if let Some(handle) = self.live(key) {
            return Ok(handle);
        }
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        match self.shared.placement.claim(key).await? {
            Claim::Mine(lease) => self.spawn_actor(key, lease),
            Claim::Elsewhere(peer) => Err(Error::Elsewhere { id: key.id, peer }),
        }
    }

    fn live(&self, key: &ContextKey) -> Option<ActorHandle> {
        let actors = self.shared.actors.lock().unwrap_or_else(PoisonError::into_inner);
        running(&actors, key)
    }

    /// Runs `key` here from now on, taking it if no actor does: [`Error::Elsewhere`] if a live
    /// node holds it.
    pub async fn take(&self, key: &ContextKey) -> Result<()> {
        self.handle(key).await.map(drop)
    }

    /// Starts the actor of `key` under `lease`, which this node's caller just took. If an
    /// actor runs already (another caller started it meanwhile), that one serves and the
    /// lease is given back: a node's claims of a context are counted.
    pub fn start_claimed(&self, key: &ContextKey, lease: Lease) -> Result<()> {
        self.spawn_actor(key, lease).map(drop)
    }

    fn spawn_actor(&self, key: &ContextKey, lease: Lease) -> Result<ActorHandle> {
        let mut actors = self.shared.actors.lock().unwrap_or_else(PoisonError::into_inner);
        let running = running(&actors, key);
        if running.is_some() || self.shared.shutdown.is_cancelled() {
            drop(actors);
            self.shared.release(key.clone(), lease);
            return running.ok_or(Error::ShuttingDown);
        }
        let instance = self.shared.next_instance.fetch_add(1, Ordering::Relaxed);
        let (handle, actor) = Actor::new(key.clone(), instance, Arc::clone(&self.shared), lease);
        actors.insert(key.clone(), handle.clone());
        self.shared.tasks.spawn(actor.run());
        Ok(handle)
    }
}

/// The actor of `key` in `actors`, unless it has ended.
fn running(actors: &HashMap<ContextKey, ActorHandle>, key: &ContextKey) -> Option<ActorHandle> {
    actors.get(key).filter(|handle| !handle.mailbox.is_closed()).cloned()
}
