//! The actor of one live context: the only writer of that context. It applies commands
//! through the state machine, saves each change before anything else sees it, publishes
//! the new state, then hands the effects the change asked for to its driver.
//!
//! Here: starting (loading what is saved), stopping (answering what is queued, giving the
//! lease up) and the gauges; `live` loads the context and serves it.

mod live;

use std::collections::VecDeque;
use std::sync::Arc;

use metrics::gauge;
use tokio::sync::{mpsc, watch};

use super::driver::{Driver, Event};
use super::error::Error;
use super::feed::{EventKind, Feed};
use super::handle::{ActorHandle, Gone, Request, Slot};
use super::shared::Shared;
use crate::cluster::Lease;
use crate::domain::{ContextId, ContextKey, FsmState};
use crate::fsm::Command;
use crate::telemetry::names;

/// Actions that may wait in one context's queue.
const MAILBOX_CAPACITY: usize = 256;

pub(super) struct Actor {
    key: ContextKey,
    instance: u64,
    shared: Arc<Shared>,
    mailbox: mpsc::Receiver<Request>,
    state: watch::Sender<Slot>,
    feed: Arc<Feed>,
    /// Runs the effects; their results arrive on `results`.
    driver: Driver,
    results: mpsc::Receiver<Event>,
    /// Commands to apply before taking the next request (automatic steps of a run).
    queue: VecDeque<Command>,
    /// Counted in the loaded-contexts gauge.
    loaded: bool,
    /// The state this context is counted under in the active-runs gauge, mid-run.
    counted_run: Option<FsmState>,
    /// This node's right to run the context (given up when the actor stops).
    lease: Option<Lease>,
    /// The node's standing: when it changes, the lease is void.
    standing: watch::Receiver<u64>,
}

impl Actor {
    /// The actor of `key`, which this node took under `lease`: only the node that holds a
    /// context may load it (another would not see its saves).
    pub(super) fn new(key: ContextKey, instance: u64, shared: Arc<Shared>, lease: Lease) -> (ActorHandle, Self) {
        let (mailbox_tx, mailbox) = mpsc::channel(MAILBOX_CAPACITY);
        let (state, state_rx) = watch::channel(Slot::Loading);
        let feed = Arc::new(Feed::new());
        let handle = ActorHandle { mailbox: mailbox_tx, state: state_rx, feed: Arc::clone(&feed), instance };
        let (driver, results) = Driver::new(Arc::clone(&shared));
        let standing = shared.placement.standing();
        let actor = Self {
            key,
            instance,
            shared,
            mailbox,
            state,
            feed,
            driver,
            results,
            queue: VecDeque::new(),
            loaded: false,
            counted_run: None,
            lease: Some(lease),
            standing,
        };
        (handle, actor)
    }

    /// Stops because something failed; callers are told `reason`, and the next access
    /// starts a new actor that loads what is saved.
    fn fail(&mut self, reason: String) {
        self.stop(Gone::Stopped(reason.clone()), |id| Error::Stopped { id, reason: reason.clone() });
    }

    /// Keeps the active-runs gauge at `state` for this context (nothing while it rests).
    fn count_run(&mut self, state: FsmState) {
        let next = (!state.is_resting()).then_some(state);
        if next == self.counted_run {
            return;
        }
        if let Some(old) = self.counted_run {
            gauge!(names::RUNS_ACTIVE, "state" => old.name()).decrement(1.0);
        }
        if let Some(new) = next {
            gauge!(names::RUNS_ACTIVE, "state" => new.name()).increment(1.0);
        }
        self.counted_run = next;
    }

    /// Leaves the registry, answers every queued request with `error`, and tells watchers.
    fn stop(&mut self, gone: Gone, error: impl Fn(ContextId) -> Error) {
        if std::mem::take(&mut self.loaded) {
            gauge!(names::CONTEXTS_LOADED).decrement(1.0);
        }
        if let Some(state) = self.counted_run.take() {
            gauge!(names::RUNS_ACTIVE, "state" => state.name()).decrement(1.0);
        }
        self.shared.unregister(&self.key, self.instance);
        self.mailbox.close();
        while let Ok(request) = self.mailbox.try_recv() {
            // A caller that went away needs no answer.
            let _ = match request {
                Request::Act { reply, .. } => reply.send(Err(error(self.key.id))).map_err(drop),
                Request::Delete { reply } => reply.send(Err(error(self.key.id))).map_err(drop),
            };
        }
        self.driver.abort_all();
        if let Some(lease) = self.lease.take() {
            self.shared.release(self.key.clone(), lease);
        }
        self.feed.end(if matches!(gone, Gone::Deleted) { EventKind::Deleted } else { EventKind::Closed });
        self.state.send_replace(Slot::Gone(gone));
    }

    /// Whether the lease this actor runs under is still good.
    fn in_standing(&self) -> bool {
        self.lease.is_some_and(|lease| self.shared.placement.valid(&self.key, lease))
    }
}
