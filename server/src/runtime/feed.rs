//! What watchers of one context receive: every saved change as events, streamed text as
//! deltas, and a snapshot whenever events cannot bring a watcher up to date (a first
//! subscription, a revision too old to replay, a watcher too slow to keep up).
//!
//! One broadcast channel per context fans events out; its bounded ring is shared by all
//! watchers, so a slow watcher costs nothing but its own lag, and an idle one costs a
//! receiver. A short history of saved events lets a watcher that reconnects replay what it
//! missed instead of downloading the whole conversation again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::counter;
use tokio::sync::broadcast;

use crate::domain::{
    Context, ContextConfig, ContextUsage, FsmState, Message, MessageId, PathMove, Phase, Seq, Timestamp, ToolCall,
    Versions,
};
use crate::telemetry::names;

/// Events a watcher may fall behind by before it is sent a snapshot instead.
const CHANNEL_CAPACITY: usize = 256;
/// Saved events kept for replay.
const HISTORY_LIMIT: usize = 512;

/// A message of the active path, with how it stands among its versions then.
#[derive(Debug, Clone, PartialEq)]
pub struct OnPath {
    pub message: Arc<Message>,
    pub versions: Versions,
}

impl OnPath {
    pub fn of(ctx: &Context, message: &Arc<Message>) -> Self {
        Self { message: Arc::clone(message), versions: ctx.versions(message.seq) }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    MessageAppended(OnPath),
    /// Text appended to a streaming message (not saved on its own).
    MessageDelta {
        message_id: MessageId,
        text: String,
    },
    MessageUpdated(OnPath),
    /// The active path changed: keep its first `kept` messages, then `messages`.
    BranchSwitched {
        kept: Seq,
        messages: Vec<OnPath>,
    },
    StateChanged {
        state: FsmState,
        last_error: String,
        pending: Vec<ToolCall>,
    },
    /// The messages waiting for the next turn changed: these are all of them now.
    QueueChanged(Vec<Arc<Message>>),
    /// The title or config changed.
    Updated {
        title: String,
        config: ContextConfig,
    },
    Deleted,
    /// The context was unloaded or the server is stopping: the feed ends.
    Closed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Position in this feed; watchers skip what a snapshot already covers.
    pub seq: u64,
    /// The revision after this change (for deltas: the last saved revision).
    pub revision: u64,
    /// The context's updated_at after this change.
    pub updated_at: Timestamp,
    pub kind: EventKind,
    /// On the last event of a change that moved it: what the next request takes of the
    /// model's window now.
    pub usage: Option<ContextUsage>,
}

/// What a watcher is sent next.
#[derive(Debug, Clone)]
pub enum Update {
    Event(Arc<Event>),
    Snapshot(Arc<Context>),
}

pub struct Feed {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
}

struct Inner {
    seq: u64,
    current: Option<Arc<Context>>,
    history: VecDeque<Arc<Event>>,
    /// Every saved event with a revision above this one is in `history`.
    complete_after: u64,
    /// The feed sent its last event; new watchers must find the context's next actor.
    ended: bool,
}

impl Feed {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                seq: 0,
                current: None,
                history: VecDeque::new(),
                complete_after: u64::MAX,
                ended: false,
            }),
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The context was loaded: history starts here.
    pub fn start(&self, ctx: Arc<Context>) {
        let mut inner = self.lock();
        inner.complete_after = ctx.revision;
        inner.current = Some(ctx);
    }

    /// A saved change: `ctx` is the new state, `kinds` what changed. The last event carries
    /// the window's usage if the change moved it.
    pub fn saved(&self, ctx: Arc<Context>, kinds: Vec<EventKind>) {
        let (revision, updated_at) = (ctx.revision, ctx.updated_at);
        let mut inner = self.lock();
        let moved = inner.current.as_ref().is_none_or(|held| held.usage != ctx.usage);
        let mut usage = moved.then_some(ctx.usage);
        inner.current = Some(ctx);
        let last = kinds.len().saturating_sub(1);
        for (i, kind) in kinds.into_iter().enumerate() {
            let usage = if i == last { usage.take() } else { None };
            let event = inner.next(revision, updated_at, kind, usage);
            inner.history.push_back(Arc::clone(&event));
            if inner.history.len() > HISTORY_LIMIT
                && let Some(evicted) = inner.history.pop_front()
            {
                inner.complete_after = inner.complete_after.max(evicted.revision);
            }
            // No receivers is fine: nobody is watching.
            let _ = self.tx.send(event);
        }
    }

    /// Streamed text: `ctx` already holds it.
    pub fn streamed(&self, ctx: Arc<Context>, message_id: MessageId, text: String) {
        let (revision, updated_at) = (ctx.revision, ctx.updated_at);
        let mut inner = self.lock();
        inner.current = Some(ctx);
        let event = inner.next(revision, updated_at, EventKind::MessageDelta { message_id, text }, None);
        let _ = self.tx.send(event);
    }

    /// The last event of this feed (`Deleted` or `Closed`).
    pub fn end(&self, kind: EventKind) {
        let mut inner = self.lock();
        inner.ended = true;
        let (revision, updated_at) =
            inner.current.as_ref().map_or((0, Timestamp::default()), |c| (c.revision, c.updated_at));
        let event = inner.next(revision, updated_at, kind, None);
        let _ = self.tx.send(event);
    }

    /// Starts a watcher. With `from_revision` > 0 it first gets the saved events after that
    /// revision when they are all still in the history, else a snapshot. `None` when the
    /// feed has not started or has already ended.
    pub fn subscribe(self: &Arc<Self>, from_revision: u64) -> Option<(Vec<Update>, Subscription)> {
        let inner = self.lock();
        if inner.ended {
            return None;
        }
        let current = Arc::clone(inner.current.as_ref()?);
        let rx = self.tx.subscribe();
        let replayable =
            from_revision > 0 && from_revision >= inner.complete_after && from_revision <= current.revision;
        let first = if replayable {
            let mut updates: Vec<Update> = inner
                .history
                .iter()
                .filter(|e| e.revision > from_revision)
                .map(|e| Update::Event(Arc::clone(e)))
                .collect();
            // The watcher's copy of a streaming message lacks the text streamed since.
            if let Phase::StreamingLlmResponse { message, .. } = current.phase
                && let Some(streaming) = current.message(message)
            {
                let kind = EventKind::MessageUpdated(OnPath {
                    message: Arc::new(streaming.clone()),
                    versions: current.versions(streaming.seq),
                });
                let (seq, revision, updated_at) = (inner.seq, current.revision, current.updated_at);
                updates.push(Update::Event(Arc::new(Event { seq, revision, updated_at, kind, usage: None })));
            }
            updates
        } else {
            vec![Update::Snapshot(current)]
        };
        let subscription = Subscription { feed: Arc::clone(self), rx, last_seq: inner.seq };
        Some((first, subscription))
    }
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Inner {
    fn next(
        &mut self,
        revision: u64,
        updated_at: Timestamp,
        kind: EventKind,
        usage: Option<ContextUsage>,
    ) -> Arc<Event> {
        self.seq += 1;
        Arc::new(Event { seq: self.seq, revision, updated_at, kind, usage })
    }
}

/// One watcher's position in a feed.
pub struct Subscription {
    feed: Arc<Feed>,
    rx: broadcast::Receiver<Arc<Event>>,
    last_seq: u64,
}

impl Subscription {
    /// The present as a snapshot; every event it already holds is skipped from here on.
    pub fn snapshot(&mut self) -> Option<Update> {
        let inner = self.feed.lock();
        self.last_seq = inner.seq;
        inner.current.as_ref().map(|ctx| Update::Snapshot(Arc::clone(ctx)))
    }

    /// The next update; `None` once the feed has ended (after `Deleted` or `Closed`).
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            match self.rx.recv().await {
                Ok(event) if event.seq <= self.last_seq => continue,
                Ok(event) => {
                    self.last_seq = event.seq;
                    return Some(Update::Event(event));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    counter!(names::WATCH_LAGGED, "grpc_method" => "WatchState").increment(1);
                    // Too far behind: what was queued is gone; start again from the present.
                    return self.snapshot();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The events that describe going from `before` to `after` by moving the path (`moved`) and
/// saving `changed`. A moved path is one event holding the new path's messages from where it
/// leaves the old one: never more than a snapshot would hold, usually one message or none.
pub fn change_events(
    before: &Context,
    after: &Context,
    moved: Option<&PathMove>,
    changed: &[Arc<Message>],
) -> Vec<EventKind> {
    let kept = match moved {
        Some(PathMove::Cut(kept)) => Some(*kept),
        Some(PathMove::Switch(branch)) => Some(branch.keep),
        None => None,
    };
    let mut events: Vec<EventKind> = Vec::new();
    if let Some(kept) = kept {
        let tail = after.path_from(kept).map(|m| OnPath::of(after, m)).collect();
        events.push(EventKind::BranchSwitched { kept, messages: tail });
    }
    let unseen = kept.unwrap_or_else(|| before.next_seq());
    events.extend(changed.iter().filter(|m| kept.is_none() || m.seq < unseen).map(|m| {
        if m.seq < unseen {
            EventKind::MessageUpdated(OnPath::of(after, m))
        } else {
            EventKind::MessageAppended(OnPath::of(after, m))
        }
    }));
    // By ids: a queue only grows by one or empties, and `ptr_eq` is false for small vectors
    // that are equal.
    if !before.queued.iter().map(|m| m.id).eq(after.queued.iter().map(|m| m.id)) {
        events.push(EventKind::QueueChanged(after.queued.iter().cloned().collect()));
    }
    if before.title != after.title || before.config != after.config {
        events.push(EventKind::Updated { title: after.title.clone(), config: after.config.clone() });
    }
    let pending = after.pending_tool_calls();
    if events.is_empty()
        || before.state() != after.state()
        || before.phase.error() != after.phase.error()
        || before.pending_tool_calls() != pending
    {
        events.push(EventKind::StateChanged {
            state: after.state(),
            last_error: after.phase.error().unwrap_or_default().to_owned(),
            pending,
        });
    }
    events
}
