//! The NATS store as the runtime's `Backend`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use futures::TryStreamExt;

use super::layout::{StoredJoined, StoredNodeMessage, StoredRecord};
use super::{Nats, PATIENCE, RESTORE_RECORD_BYTES, unavailable};
use crate::domain::{
    Child, Context, ContextKey, ContextSummary, ListPosition, Message, MessageId, NodeId, Seq, Sibling, TenantId,
};
use crate::store::backend::{Backend, Change, Inserted};
use crate::store::codec::{self, StoredNode};
use crate::store::dump::Dump;
use crate::store::error::{Error, Result};
use crate::store::save::Save;

#[async_trait]
impl Backend for Nats {
    async fn insert(&self, ctx: Arc<Context>) -> Result<Inserted> {
        let key = ctx.key();
        let Some(expect) = self.free_log(&key).await? else { return Ok(Inserted::Taken) };
        let save = Save::new_context(Arc::clone(&ctx));
        match self.save(&key, StoredRecord::of(&save), expect, Some(Arc::clone(&ctx))).await {
            Ok(_) => Ok(Inserted::Saved),
            Err(Error::Conflict { .. }) => Ok(Inserted::Taken),
            Err(e) => Err(e),
        }
    }

    async fn commit(&self, save: Save) -> Result<usize> {
        let key = save.after.key();
        let expect = self.expected(&key).await?;
        let after = Arc::clone(&save.after);
        self.save(&key, StoredRecord::of(&save), expect, Some(after)).await
    }

    async fn load(&self, key: &ContextKey) -> Result<Option<Context>> {
        let Some((_, record)) = self.current(key).await? else { return Ok(None) };
        let stored = record.context.ok_or_else(|| {
            Error::Unavailable(format!("context {key}: its copy by `ctxd migrate` did not finish; run it again"))
        })?;
        let segments = codec::segments_from_stored(record.path.as_ref());
        let length = Seq::new(stored.message_count);
        let mut nodes = Vec::with_capacity(length.index());
        for (i, segment) in segments.iter().enumerate() {
            let end = segments.get(i + 1).map_or(length, |next| next.seq);
            nodes.extend((0..segment.seq.until(end)).map(|k| segment.node.plus(k)));
        }
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
        let fork_depths = record.path.map(|p| p.forks).unwrap_or_default();
        let forks = futures::future::try_join_all(fork_depths.into_iter().map(Seq::new).map(|seq| {
            let parent = codec::parent_at(&messages, seq);
            async move {
                let list = self.children_list(key, parent).await?;
                let siblings = list.children.into_iter().map(|c| {
                    Ok(Sibling {
                        node: NodeId::new(c.node),
                        id: codec::message_id(&c.id, format_args!("child {}", c.node))?,
                    })
                });
                Ok::<_, Error>((seq, siblings.collect::<Result<Arc<[Sibling]>>>()?))
            }
        }))
        .await?;
        codec::context_from_stored(key.clone(), stored, messages, forks).map(Some)
    }

    async fn delete(&self, ctx: Arc<Context>) -> Result<()> {
        let key = ctx.key();
        let expect = self.expected(&key).await?;
        self.bury(&key, Some(codec::context_to_stored(&ctx)), expect).await.map(|_| ())
    }

    async fn exists(&self, key: &ContextKey) -> Result<bool> {
        Ok(self.tail(key).await?.is_some_and(|(_, record)| !record.deleted))
    }

    async fn count(&self, tenant: &TenantId) -> Result<u64> {
        Ok(self.view.count(tenant))
    }

    async fn list(
        &self,
        tenant: &TenantId,
        after: Option<ListPosition>,
        limit: usize,
    ) -> Result<(Vec<ContextSummary>, Option<ListPosition>)> {
        Ok(self.view.list(tenant, after, limit))
    }

    async fn interrupted(&self) -> Result<Vec<ContextKey>> {
        Ok(self.view.interrupted())
    }

    async fn keys(&self) -> Result<Vec<ContextKey>> {
        // From the log, the truth: a context whose snapshot a crash cut off is there too.
        let mut subjects = self.log.info_with_subjects(self.layout.log_subjects()).await.map_err(unavailable)?;
        let mut keys = Vec::new();
        while let Some((subject, _)) = subjects.try_next().await.map_err(unavailable)? {
            keys.extend(self.layout.parse_log(&subject));
        }
        Ok(keys)
    }

    async fn restore(&self, dump: &Dump) -> Result<Inserted> {
        dump.check()?;
        let ctx = &dump.context;
        let key = ctx.key();
        let Some(mut expect) = self.free_log(&key).await? else { return Ok(Inserted::Taken) };
        // A record is one publish: a long context takes several, and only the last names it.
        let mut chunks: Vec<Vec<StoredNodeMessage>> = vec![Vec::new()];
        let mut bytes = 0;
        for message in &dump.messages {
            let stored = codec::message_to_stored(message);
            let size = prost::Message::encoded_len(&stored);
            if bytes + size > RESTORE_RECORD_BYTES && !chunks.last().is_none_or(Vec::is_empty) {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(StoredNodeMessage { node: message.node.get(), message: Some(stored) });
            }
        }
        let last = chunks.len() - 1;
        for (i, messages) in chunks.into_iter().enumerate() {
            let mut record = StoredRecord { messages, new_from_node: 0, ..Default::default() };
            if i == last {
                record.context = Some(codec::context_to_stored(ctx));
                record.path = Some(codec::path_to_stored(&ctx.shape));
                record.joined = dump
                    .active_at
                    .iter()
                    .map(|&(node, active_at)| {
                        let parent = dump.message(node).and_then(|m| m.parent);
                        StoredJoined { node: node.get(), parent: parent.map(NodeId::get), active_at: Some(active_at) }
                    })
                    .collect();
            }
            self.save(&key, record, expect, None).await?;
            expect = self.head(&key).map_or(expect, |h| h.last);
        }
        Ok(Inserted::Saved)
    }

    async fn node_of(&self, key: &ContextKey, id: MessageId) -> Result<Option<NodeId>> {
        if !self.derived(key).await? {
            return Ok(None);
        }
        match self.last(&self.tree, &self.layout.message_id(key, &id)).await? {
            Some(found) => Ok(Some(NodeId::new(codec::decode::<StoredNode>("message id", &found.payload)?.node))),
            None => Ok(None),
        }
    }

    async fn messages(&self, key: &ContextKey, nodes: &[NodeId]) -> Result<Vec<Message>> {
        self.derived(key).await?;
        self.read_messages(key, nodes).await
    }

    async fn children(&self, key: &ContextKey, parent: Option<NodeId>) -> Result<Vec<Child>> {
        if !self.derived(key).await? {
            return Ok(Vec::new());
        }
        self.children_list(key, parent)
            .await?
            .children
            .into_iter()
            .map(|c| {
                let id = codec::message_id(&c.id, format_args!("child {}", c.node))?;
                Ok(Child { node: NodeId::new(c.node), id, active_at: c.active_at })
            })
            .collect()
    }

    async fn settle(&self, key: &ContextKey) {
        // The derivations behind this process's saves of `key` hold its lock: once it is
        // free and the tree is at the head, nothing of it is left to write.
        let settled = async {
            drop(self.derivation_lock(key).lock().await);
            if self.head(key).is_some_and(|head| head.derived < head.last)
                && let Err(error) = self.derived(key).await
            {
                tracing::warn!(context = %key.id, %error, "handing the context over with its tree behind; the next holder derives it");
            }
        };
        if tokio::time::timeout(PATIENCE, settled).await.is_err() {
            tracing::warn!(context = %key.id, "handing the context over with its tree behind; the next holder derives it");
        }
        // Whoever holds it next may save it: what this process knew of its log is stale then.
        self.set_head(key, None);
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        Some(self.inner.changes.subscribe())
    }

    fn figures(&self) -> Vec<(&'static str, u64)> {
        // The NATS servers export their own figures (their monitoring port).
        Vec::new()
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.stopping.cancel();
        // Let the derivations behind the last saves finish (a load would redo them anyway).
        self.derivations.close();
        if tokio::time::timeout(PATIENCE, self.derivations.wait()).await.is_err() {
            tracing::warn!("the tree is behind the last saves; the next load derives it");
        }
        if let Err(error) = self.client.flush().await {
            tracing::warn!(%error, "could not flush the NATS connection");
        }
    }
}
