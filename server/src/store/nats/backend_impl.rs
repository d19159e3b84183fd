//! The NATS store as the runtime's `Backend`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;

use super::batch::{MAX_BYTES, MAX_MESSAGES, Put};
use super::layout::StoredHead;
use super::{Head, Nats, path, unavailable};
use crate::domain::{
    Child, Context, ContextKey, ContextSummary, ListPosition, Message, MessageId, NodeId, Seq, TenantId,
};
use crate::store::backend::{Backend, Change, Inserted};
use crate::store::codec::{self, StoredJoined, StoredNode, StoredRecord};
use crate::store::dump::Dump;
use crate::store::error::{Error, Result};
use crate::store::save::Save;

impl Nats {
    /// The context's head and its sequence; `None` if there is no such context (a deleted
    /// context whose subjects were not purged yet has a head without one).
    async fn current(&self, key: &ContextKey) -> Result<Option<(u64, StoredHead)>> {
        let Some(last) = self.last(key, &self.layout.head(key)).await? else {
            self.set_head(key, None);
            return Ok(None);
        };
        let head: StoredHead = codec::decode("head", &last.payload)?;
        if head.context.is_none() {
            return Ok(None);
        }
        self.set_head(key, Some(Head { last: last.sequence, fenced: false }));
        Ok(Some((last.sequence, head)))
    }

    /// The sequence a new context of `key` is saved after: 0 once nothing of it is left;
    /// `None` if the key holds a context. What a deleted context left (its purge failed) is
    /// purged first.
    async fn free(&self, key: &ContextKey) -> Result<Option<u64>> {
        match self.last(key, &self.layout.head(key)).await? {
            None => Ok(Some(0)),
            Some(last) if codec::decode::<StoredHead>("head", &last.payload)?.context.is_none() => {
                self.purge(key).await?;
                Ok(Some(0))
            }
            Some(_) => Ok(None),
        }
    }

    /// Frees every subject of `key`.
    async fn purge(&self, key: &ContextKey) -> Result<()> {
        let stream = &self.streams[self.layout.partition(key) as usize];
        stream.purge().filter(self.layout.all(key)).await.map_err(unavailable)?;
        self.set_head(key, None);
        Ok(())
    }

    /// Saves `record` of a context that is new here (created, forked, or copied whole) if its
    /// key is free: its tree in batches of a bounded size, then its head and entry, so that
    /// a copy cut short is never a context (the next attempt writes it all again).
    async fn create(&self, key: &ContextKey, record: StoredRecord) -> Result<Inserted> {
        let Some(expect) = self.free(key).await? else { return Ok(Inserted::Taken) };
        let mut puts = self.tree_writes(key, &record, None).await?;
        let mut start = 0;
        let mut bytes = 0;
        for (i, put) in puts.iter().enumerate() {
            if i - start >= MAX_MESSAGES || bytes + put.payload.len() > MAX_BYTES {
                self.publish_chunk(&puts[start..i]).await?;
                (start, bytes) = (i, 0);
            }
            bytes += put.payload.len();
        }
        // The last batch: what is left of the tree, then the entry, the marker and the head.
        let mut last = puts.split_off(start);
        last.extend(self.head_writes(key, &record, None)?);
        // A new context needs no lease: its head's condition (none yet) is enough, and the
        // node holding its partition runs it from its next call on.
        match self.save(key, last, expect, false).await {
            Ok(sequence) => {
                let summary = codec::summary_from_stored(key.id, record.context.as_ref().ok_or_else(no_context)?)?;
                self.listed(key, sequence, Some(summary));
                Ok(Inserted::Saved)
            }
            Err(Error::Conflict { .. }) => Ok(Inserted::Taken),
            Err(e) => Err(e),
        }
    }

    /// A part of a new context's tree: nothing names it until its head is saved.
    async fn publish_chunk(&self, puts: &[Put]) -> Result<()> {
        match self.publish_batch(puts).await? {
            super::batch::Stored::At(_) => Ok(()),
            refused => Err(Error::Unavailable(format!("NATS refused part of a new context ({refused:?})"))),
        }
    }
}

/// How long a deleted context's empty list entry and run marker stay (every list watcher has
/// had the entry by then).
const GONE_TTL: &str = "60s";

fn no_context() -> Error {
    Error::Corrupt("a save without its context".into())
}

#[async_trait]
impl Backend for Nats {
    async fn insert(&self, ctx: Arc<Context>) -> Result<Inserted> {
        let key = ctx.key();
        let save = Save::new_context(Arc::clone(&ctx));
        self.create(&key, StoredRecord::of(&save)).await
    }

    async fn commit(&self, save: Save) -> Result<usize> {
        let key = save.after.key();
        let expect = self.expected(&key).await?;
        let record = StoredRecord::of(&save);
        let was_running = save.before.as_ref().map(|before| !before.state().is_resting());
        let puts = self.writes(&key, &record, Some(&save.after), was_running).await?;
        let bytes = puts.iter().map(|p| p.payload.len()).sum();
        let sequence = self.save(&key, puts, expect, true).await?;
        self.listed(&key, sequence, Some(save.after.summary()));
        Ok(bytes)
    }

    async fn load(&self, key: &ContextKey) -> Result<Option<Context>> {
        let Some((_, head)) = self.current(key).await? else { return Ok(None) };
        let stored = head.context.ok_or_else(no_context)?;
        let nodes = path::nodes(head.path.as_ref(), stored.message_count);
        let messages = self.read_messages(key, &nodes).await?;
        for (index, message) in messages.iter().enumerate() {
            let follows = index.checked_sub(1).map(|above| messages[above].node);
            if message.seq != Seq::of_index(index) || message.parent != follows {
                return Err(Error::Corrupt(format!(
                    "context {key}: message {} is not on the saved path",
                    message.node
                )));
            }
        }
        let forks = path::forks(&messages, head.path, |parent| self.children_list(key, parent)).await?;
        codec::context_from_stored(key.clone(), stored, messages, forks).map(Some)
    }

    async fn delete(&self, ctx: Arc<Context>) -> Result<()> {
        let key = ctx.key();
        let expect = self.expected(&key).await?;
        // The head without a context says it is gone; the empty entry tells every list. Both
        // the entry and the marker then expire (the purge below frees the context's data).
        let puts = vec![
            Put::new(self.layout.entry(&key), bytes::Bytes::new()).header("Nats-TTL", GONE_TTL),
            Put::new(self.layout.running(&key), bytes::Bytes::new()).header("Nats-TTL", GONE_TTL),
            Put::new(self.layout.head(&key), codec::encode(&StoredHead::default())),
        ];
        let sequence = self.save(&key, puts, expect, true).await?;
        self.listed(&key, sequence, None);
        // What follows only frees space: a load reads the head first.
        if let Err(error) = self.purge(&key).await {
            tracing::warn!(context = %key.id, %error, "deleted; its messages were not purged (the next create of the id does)");
        }
        self.set_head(&key, None);
        Ok(())
    }

    async fn exists(&self, key: &ContextKey) -> Result<bool> {
        match self.last(key, &self.layout.head(key)).await? {
            Some(last) => Ok(codec::decode::<StoredHead>("head", &last.payload)?.context.is_some()),
            None => Ok(false),
        }
    }

    async fn count(&self, tenant: &TenantId) -> Result<u64> {
        Ok(self.inner.listing(tenant).await?.count())
    }

    async fn list(
        &self,
        tenant: &TenantId,
        after: Option<ListPosition>,
        limit: usize,
    ) -> Result<(Vec<ContextSummary>, Option<ListPosition>)> {
        Ok(self.inner.listing(tenant).await?.page(after, limit))
    }

    async fn interrupted(&self) -> Result<Vec<ContextKey>> {
        let scans = (0..self.layout.partitions).map(|p| {
            let filter = self.layout.runs(p);
            async move { self.scan(p, &filter).await }
        });
        let found = futures::future::try_join_all(scans).await?;
        Ok(found
            .into_iter()
            .flatten()
            .filter(|f| !f.payload.is_empty())
            .filter_map(|f| self.layout.parse(&f.subject))
            .collect())
    }

    async fn keys(&self) -> Result<Vec<ContextKey>> {
        let mut keys = Vec::new();
        for p in 0..self.layout.partitions {
            let heads = self.scan(p, &self.layout.heads(p)).await?;
            keys.extend(heads.iter().filter_map(|f| self.layout.parse(&f.subject)));
        }
        Ok(keys)
    }

    async fn restore(&self, dump: &Dump) -> Result<Inserted> {
        dump.check()?;
        let ctx = &dump.context;
        // Every message of every branch is new here; each child keeps when it was last active.
        let whole = Save { before: None, after: Arc::clone(ctx), messages: dump.messages.clone(), joined: Vec::new() };
        let mut record = StoredRecord::of(&whole);
        record.joined = dump
            .active_at
            .iter()
            .map(|&(node, active_at)| {
                let parent = dump.message(node).and_then(|m| m.parent);
                StoredJoined { node: node.get(), parent: parent.map(NodeId::get), active_at: Some(active_at) }
            })
            .collect();
        self.create(&ctx.key(), record).await
    }

    async fn node_of(&self, key: &ContextKey, id: MessageId) -> Result<Option<NodeId>> {
        match self.last(key, &self.layout.message_id(key, &id)).await? {
            Some(found) => Ok(Some(NodeId::new(codec::decode::<StoredNode>("message id", &found.payload)?.node))),
            None => Ok(None),
        }
    }

    async fn messages(&self, key: &ContextKey, nodes: &[NodeId]) -> Result<Vec<Message>> {
        self.read_messages(key, nodes).await
    }

    async fn children(&self, key: &ContextKey, parent: Option<NodeId>) -> Result<Vec<Child>> {
        path::children(self.children_list(key, parent).await?)
    }

    async fn settle(&self, key: &ContextKey) {
        // Every save is whole once acknowledged; but whoever holds the context next may save
        // it, so what this process knew of its head is stale then.
        self.set_head(key, None);
    }

    fn shared(&self) -> bool {
        true
    }

    async fn watch(&self, tenant: &TenantId) -> Result<Option<tokio::sync::broadcast::Receiver<Change>>> {
        Ok(Some(self.inner.listing(tenant).await?.watch()))
    }

    fn figures(&self) -> Vec<(&'static str, u64)> {
        // The NATS servers export their own figures (their monitoring port).
        Vec::new()
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.stopping.cancel();
        if let Err(error) = self.client.flush().await {
            tracing::warn!(%error, "could not flush the NATS connection");
        }
    }
}
