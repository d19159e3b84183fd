//! The two server-streaming RPCs: a context's changes, and the list of contexts.

use std::pin::Pin;
use std::sync::Arc;

use ctxd_proto::v1 as pb;
use futures::{Stream, StreamExt};
use metrics::{counter, gauge};
use pb::watch_contexts_response::Kind as ListKind;
use pb::watch_state_response::Kind;
use tokio::sync::broadcast;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::{convert, request};
use crate::auth::Credential;
use crate::cluster::{self, Forwarder, Peer, Retry, forward};
use crate::domain::{ContextKey, ContextSummary, TenantId};
use crate::runtime::{Contexts, EventKind, Subscription, Update};
use crate::store::Change;
use crate::telemetry::names;

pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// One open stream in the metrics: counted while it lives, and each message it sends.
struct Open {
    method: &'static str,
}

impl Open {
    fn new(method: &'static str) -> Self {
        gauge!(names::WATCH_STREAMS, "grpc_method" => method).increment(1.0);
        Self { method }
    }

    fn sent(&self) {
        let labels = [("grpc_type", "server_stream"), ("grpc_service", SERVICE), ("grpc_method", self.method)];
        counter!(names::GRPC_MSG_SENT, &labels).increment(1);
        counter!(names::WATCH_EVENTS_SENT, "grpc_method" => self.method).increment(1);
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        gauge!(names::WATCH_STREAMS, "grpc_method" => self.method).decrement(1.0);
    }
}

const SERVICE: &str = "ctxd.v1.ContextService";

/// Where a watch starts, and how much of the path its snapshots carry.
#[derive(Debug, Clone, Copy)]
pub struct WatchFrom {
    /// 0: a snapshot; else the last revision the client holds.
    pub revision: u64,
    /// Snapshots carry at most this many of the last messages (0: all).
    pub message_limit: u32,
}

/// The wire form of one update; `None` for updates that end the stream unseen.
fn state_response(context_id: &str, update: &Update, limit: Option<usize>) -> Option<pb::WatchStateResponse> {
    let (revision, updated_at, usage, kind) = match update {
        Update::Snapshot(ctx) => {
            let state = convert::context_state_view(ctx, pb::StateView::Full, limit);
            (ctx.revision, ctx.updated_at, None, Kind::Snapshot(state))
        }
        Update::Event(event) => (
            event.revision,
            event.updated_at,
            event.usage.as_ref().map(convert::usage),
            match &event.kind {
                EventKind::MessageAppended(m) => Kind::MessageAppended(convert::message(&m.message, m.versions)),
                EventKind::MessageUpdated(m) => Kind::MessageUpdated(convert::message(&m.message, m.versions)),
                EventKind::BranchSwitched { kept, messages } => Kind::BranchSwitched(pb::BranchSwitched {
                    kept: kept.get(),
                    messages: messages.iter().map(|m| convert::message(&m.message, m.versions)).collect(),
                }),
                EventKind::MessageDelta { message_id, text } => {
                    Kind::MessageDelta(pb::MessageDelta { message_id: message_id.to_string(), text: text.clone() })
                }
                EventKind::StateChanged { state, last_error, pending } => Kind::StateChanged(pb::StateChanged {
                    state: convert::fsm_state(*state) as i32,
                    last_error: last_error.clone(),
                    pending_tool_calls: pending.iter().map(convert::tool_call).collect(),
                }),
                EventKind::Updated { title, config } => Kind::ContextUpdated(pb::ContextUpdated {
                    title: title.clone(),
                    config: Some(convert::config(config)),
                }),
                EventKind::QueueChanged(queued) => {
                    Kind::QueueChanged(pb::QueueChanged { messages: convert::queued(queued) })
                }
                EventKind::Deleted => Kind::ContextDeleted(pb::ContextDeleted {}),
                EventKind::Closed => return None,
            },
        ),
    };
    Some(pb::WatchStateResponse {
        context_id: context_id.to_owned(),
        revision,
        kind: Some(kind),
        updated_at: Some(convert::timestamp(updated_at)),
        context_usage: usage,
    })
}

/// `stream`, ended with UNAUTHENTICATED as soon as the credential that opened it lapses
/// (expired, or revoked in the keys or JWKS file).
pub fn until_lapsed<T: Send + 'static>(mut stream: ResponseStream<T>, credential: Credential) -> ResponseStream<T> {
    Box::pin(async_stream::stream! {
        let lapsed = credential.lapsed();
        tokio::pin!(lapsed);
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(item) => yield item,
                    None => return,
                },
                error = &mut lapsed => {
                    counter!(names::WATCH_LAPSED, "reason" => error.reason()).increment(1);
                    yield Err(Status::unauthenticated(format!("{error}; this stream has ended")));
                    return;
                }
            }
        }
    })
}

fn ends_feed(update: &Update) -> bool {
    matches!(update, Update::Event(event) if matches!(event.kind, EventKind::Deleted | EventKind::Closed))
}

/// Whether a watcher that holds only the last `limit` messages is better sent a snapshot
/// than `update`: a branch switch bringing more new messages than it holds.
fn too_long(update: &Update, limit: Option<usize>) -> bool {
    matches!((update, limit), (Update::Event(event), Some(limit))
        if matches!(&event.kind, EventKind::BranchSwitched { messages, .. } if messages.len() > limit))
}

pub async fn state(
    contexts: &Contexts,
    key: &ContextKey,
    from: WatchFrom,
) -> Result<ResponseStream<pb::WatchStateResponse>, Status> {
    let (first, subscription) = contexts.watch(key, from.revision).await?;
    let limit = request::message_limit(from.message_limit);
    let context_id = key.id.to_string();
    struct Pump {
        pending: std::vec::IntoIter<Update>,
        subscription: Subscription,
        ended: bool,
        open: Open,
    }
    let pump = Pump { pending: first.into_iter(), subscription, ended: false, open: Open::new("WatchState") };
    // The stream produces only when the client reads, so a client that stops reading
    // holds a place in the feed's ring and nothing else; when it reads again after
    // falling behind, it gets a snapshot.
    let stream = futures::stream::unfold(pump, move |mut pump| {
        let context_id = context_id.clone();
        async move {
            loop {
                if pump.ended {
                    return None;
                }
                let mut update = match pump.pending.next() {
                    Some(update) => update,
                    None => pump.subscription.next().await?,
                };
                if too_long(&update, limit) {
                    // The present instead; anything still to replay is older than it.
                    pump.pending = Vec::new().into_iter();
                    update = pump.subscription.snapshot()?;
                }
                pump.ended = ends_feed(&update);
                if let Some(response) = state_response(&context_id, &update, limit) {
                    pump.open.sent();
                    return Some((Ok(response), pump));
                }
            }
        }
    });
    Ok(Box::pin(stream))
}

/// A context's changes on a cluster, from whichever node runs it: from this node's feed when
/// it runs here, else relayed from the node that does. When that node goes away (it stopped,
/// or died) the stream goes on from the node that takes the context over, from the last
/// revision it sent, so the watcher sees no gap (a snapshot, at worst) and nothing twice.
pub async fn anywhere(
    contexts: &Contexts,
    forwarder: &Arc<Forwarder>,
    key: ContextKey,
    from: WatchFrom,
    metadata: MetadataMap,
) -> Result<ResponseStream<pb::WatchStateResponse>, Status> {
    let Some(first) = upstream(contexts, forwarder, &key, from, &metadata, false).await? else {
        return state(contexts, &key, from).await;
    };
    let (contexts, forwarder) = (contexts.clone(), Arc::clone(forwarder));
    let stopping = contexts.stopping();
    let stream = async_stream::stream! {
        let open = Open::new("WatchState");
        let mut relayed = first;
        let mut last = from.revision;
        loop {
            loop {
                let next = tokio::select! {
                    () = stopping.cancelled() => return,
                    next = relayed.message() => next,
                };
                let Ok(Some(response)) = next else { break };
                last = response.revision;
                let deleted = matches!(response.kind, Some(Kind::ContextDeleted(_)));
                open.sent();
                yield Ok(response);
                if deleted {
                    return;
                }
            }
            // The node that ran it went away: follow the context to its next node.
            let from = WatchFrom { revision: last, ..from };
            match upstream(&contexts, &forwarder, &key, from, &metadata, true).await {
                Ok(Some(next)) => relayed = next,
                Ok(None) => {
                    match state(&contexts, &key, from).await {
                        Ok(mut here) => {
                            while let Some(item) = here.next().await {
                                yield item;
                            }
                        }
                        Err(status) => yield Err(status),
                    }
                    return;
                }
                Err(status) => {
                    yield Err(status);
                    return;
                }
            }
        }
    };
    Ok(Box::pin(stream))
}

/// The watch of `key` on the node that runs it, looked for again (with patience) until it
/// answers; `None` when the context runs here. `fresh`: ask the engine who runs it, not this
/// node's view (which pointed at a node that went away).
async fn upstream(
    contexts: &Contexts,
    forwarder: &Forwarder,
    key: &ContextKey,
    from: WatchFrom,
    metadata: &MetadataMap,
    fresh: bool,
) -> Result<Option<tonic::Streaming<pb::WatchStateResponse>>, Status> {
    if forward::is_forwarded(metadata) {
        // One hop only: if the context is not run here, the sender looks for it again.
        cluster::route_forwarded(contexts, key).await?;
        return Ok(None);
    }
    let send = |peer: Peer| {
        let message = pb::WatchStateRequest {
            context_id: key.id.to_string(),
            from_revision: from.revision,
            message_limit: from.message_limit,
        };
        let (client, request) = (forwarder.client(&peer), forwarder.request(metadata, message, None));
        async move { Ok(client?.watch_state(request).await?.into_inner()) }
    };
    cluster::reach(contexts, forwarder, key, "WatchState", Retry::Safe, None, fresh, send).await
}

fn summaries(page: &[ContextSummary]) -> pb::WatchContextsResponse {
    pb::WatchContextsResponse {
        kind: Some(ListKind::Reset(pb::ContextList { contexts: page.iter().map(convert::summary).collect() })),
    }
}

/// `tenant`'s list of contexts, then every change to it (other tenants' changes are skipped).
pub async fn list(
    contexts: &Contexts,
    tenant: TenantId,
    limit: usize,
) -> Result<ResponseStream<pb::WatchContextsResponse>, Status> {
    let (page, events) = contexts.watch_list(&tenant, limit).await?;
    let first = summaries(&page);
    let stopping = contexts.stopping();
    let state = (Some(first), events, contexts.clone(), Open::new("WatchContexts"));
    let stream = futures::stream::unfold(state, move |(first, mut events, contexts, open)| {
        let (stopping, tenant) = (stopping.clone(), tenant.clone());
        async move {
            if let Some(first) = first {
                open.sent();
                return Some((Ok(first), (None, events, contexts, open)));
            }
            let response = loop {
                let event = tokio::select! {
                    () = stopping.cancelled() => return None,
                    event = events.recv() => event,
                };
                match event {
                    Ok(event) if *event.tenant() != tenant => continue,
                    Ok(Change::Saved { summary, .. }) => {
                        break pb::WatchContextsResponse { kind: Some(ListKind::Upserted(convert::summary(&summary))) };
                    }
                    Ok(Change::Removed(key)) => {
                        break pb::WatchContextsResponse { kind: Some(ListKind::RemovedContextId(key.id.to_string())) };
                    }
                    // Too far behind: send the list again instead of what was missed.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        counter!(names::WATCH_LAGGED, "grpc_method" => "WatchContexts").increment(1);
                        match contexts.list(&tenant, None, limit).await {
                            Ok((page, _)) => break summaries(&page),
                            Err(error) => return Some((Err(Status::from(error)), (None, events, contexts, open))),
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            };
            open.sent();
            Some((Ok(response), (None, events, contexts, open)))
        }
    });
    Ok(Box::pin(stream))
}
