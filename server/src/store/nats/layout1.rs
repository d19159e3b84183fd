//! Reading the previous NATS layout (layout 1), for `ctxd migrate` only: a log stream of
//! records per save (`{prefix}_log`), the tree derived from it (`{prefix}_tree`) and each
//! context's snapshot (`{prefix}_contexts`, which says how far the tree is derived). It is
//! read, never written: copy it into layout 2 (or RocksDB) and start ctxd on that.
//!
//! A context whose tree lags its log (its ctxd was killed before deriving it) is refused
//! with the way out: start the previous version once, which derives it, then copy again.

use std::sync::Arc;

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, context::GetStreamErrorKind};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};

use super::{path, unavailable};
use crate::domain::{Child, Context, ContextKey, ContextSummary, ListPosition, Message, MessageId, NodeId, TenantId};
use crate::store::backend::{Backend, Inserted};
use crate::store::codec::{self, StoredChildren, StoredNode, StoredRecord, StoredSnapshot};
use crate::store::dump::Dump;
use crate::store::error::{Error, Result};
use crate::store::save::Save;

/// Reads in flight at once when loading a path.
const READ_AHEAD: usize = 64;

/// A layout-1 store, read only.
pub struct Layout1 {
    prefix: String,
    log: Stream,
    tree: Stream,
    contexts: Stream,
}

impl Layout1 {
    /// The layout-1 streams under `prefix`, if there are any.
    pub async fn find(js: &jetstream::Context, prefix: &str) -> Result<Option<Self>> {
        let get = |name: String| async move {
            match js.get_stream(&name).await {
                Ok(stream) => Ok(Some(stream)),
                Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(ref js) if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) => {
                    Ok(None)
                }
                Err(e) => Err(unavailable(e)),
            }
        };
        let (log, tree, contexts) = futures::try_join!(
            get(format!("{prefix}_log")),
            get(format!("{prefix}_tree")),
            get(format!("{prefix}_contexts"))
        )?;
        match (log, tree, contexts) {
            (Some(log), Some(tree), Some(contexts)) => {
                Ok(Some(Self { prefix: prefix.to_owned(), log, tree, contexts }))
            }
            (None, _, _) => Ok(None),
            _ => Err(Error::Corrupt(format!("stream {prefix}_log exists without {prefix}_tree or {prefix}_contexts"))),
        }
    }

    /// Deletes the layout-1 streams (once everything in them was copied and checked).
    pub async fn delete(self, js: &jetstream::Context) -> Result<()> {
        for name in ["log", "tree", "contexts"] {
            js.delete_stream(format!("{}_{name}", self.prefix)).await.map_err(unavailable)?;
        }
        Ok(())
    }

    fn subject(&self, kind: &str, key: &ContextKey, rest: &str) -> String {
        format!("{}.{kind}.{}{rest}", self.prefix, key.tokens())
    }

    async fn last(stream: &Stream, subject: &str) -> Result<Option<(u64, bytes::Bytes)>> {
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => Ok(Some((message.sequence, message.payload))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn read_only() -> Error {
        Error::Misconfigured("the previous NATS layout (layout 1) is only read, by `ctxd migrate`".into())
    }

    async fn children_list(&self, key: &ContextKey, parent: Option<NodeId>) -> Result<StoredChildren> {
        let rest = parent.map_or_else(|| ".k.root".to_owned(), |node| format!(".k.{node}"));
        match Self::last(&self.tree, &self.subject("tree", key, &rest)).await? {
            Some((_, payload)) => codec::decode("children", &payload),
            None => Ok(StoredChildren::default()),
        }
    }
}

#[async_trait]
impl Backend for Layout1 {
    async fn insert(&self, _ctx: Arc<Context>) -> Result<Inserted> {
        Err(Self::read_only())
    }

    async fn commit(&self, _save: Save) -> Result<usize> {
        Err(Self::read_only())
    }

    async fn load(&self, key: &ContextKey) -> Result<Option<Context>> {
        let Some((sequence, record)) = Self::last(&self.log, &self.subject("log", key, "")).await? else {
            return Ok(None);
        };
        let record: StoredRecord = codec::decode("record", &record)?;
        if record.deleted {
            return Ok(None);
        }
        let Some(stored) = record.context else {
            return Err(Error::Unavailable(format!("context {key}: its copy by `ctxd migrate` did not finish")));
        };
        let derived = match Self::last(&self.contexts, &self.subject("ctx", key, "")).await? {
            Some((_, snapshot)) => codec::decode::<StoredSnapshot>("snapshot", &snapshot)?.log_seq,
            None => 0,
        };
        if derived < sequence {
            return Err(Error::Unavailable(format!(
                "context {key}: its tree lags its log (the ctxd that saved it was stopped before writing it); start the previous ctxd version once on this cluster, stop it, and copy again"
            )));
        }
        let nodes = path::nodes(record.path.as_ref(), stored.message_count);
        let messages = self.messages(key, &nodes).await?;
        let forks = path::forks(&messages, record.path, |parent| self.children_list(key, parent)).await?;
        codec::context_from_stored(key.clone(), stored, messages, forks).map(Some)
    }

    async fn delete(&self, _ctx: Arc<Context>) -> Result<()> {
        Err(Self::read_only())
    }

    async fn exists(&self, key: &ContextKey) -> Result<bool> {
        Ok(self.load(key).await?.is_some())
    }

    async fn count(&self, _tenant: &TenantId) -> Result<u64> {
        Err(Self::read_only())
    }

    async fn list(
        &self,
        _tenant: &TenantId,
        _after: Option<ListPosition>,
        _limit: usize,
    ) -> Result<(Vec<ContextSummary>, Option<ListPosition>)> {
        Err(Self::read_only())
    }

    async fn interrupted(&self) -> Result<Vec<ContextKey>> {
        Err(Self::read_only())
    }

    async fn keys(&self) -> Result<Vec<ContextKey>> {
        let mut subjects =
            self.log.clone().info_with_subjects(format!("{}.log.>", self.prefix)).await.map_err(unavailable)?;
        let mut keys = Vec::new();
        let prefix = format!("{}.log.", self.prefix);
        while let Some((subject, _)) = subjects.try_next().await.map_err(unavailable)? {
            keys.extend(subject.strip_prefix(&prefix).and_then(ContextKey::from_tokens));
        }
        Ok(keys)
    }

    async fn restore(&self, _dump: &Dump) -> Result<Inserted> {
        Err(Self::read_only())
    }

    async fn node_of(&self, key: &ContextKey, id: MessageId) -> Result<Option<NodeId>> {
        let subject = self.subject("tree", key, &format!(".i.{}", hex::encode(id.as_bytes())));
        match Self::last(&self.tree, &subject).await? {
            Some((_, payload)) => Ok(Some(NodeId::new(codec::decode::<StoredNode>("message id", &payload)?.node))),
            None => Ok(None),
        }
    }

    async fn messages(&self, key: &ContextKey, nodes: &[NodeId]) -> Result<Vec<Message>> {
        futures::stream::iter(nodes.iter().copied())
            .map(|node| async move {
                let found = Self::last(&self.tree, &self.subject("tree", key, &format!(".m.{node}"))).await?;
                let (_, payload) =
                    found.ok_or_else(|| Error::Corrupt(format!("context {key}: message {node} is missing")))?;
                codec::message_from_stored(node, codec::decode("message", &payload)?)
            })
            .buffered(READ_AHEAD)
            .try_collect()
            .await
    }

    async fn children(&self, key: &ContextKey, parent: Option<NodeId>) -> Result<Vec<Child>> {
        path::children(self.children_list(key, parent).await?)
    }

    fn figures(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    async fn close(&self) {}
}

/// What a migration copies from on a NATS cluster: the layout-1 streams under the prefix if
/// there are any (read only; `true`), else the store in layout 2.
pub async fn open_source(options: &super::NatsOptions) -> Result<(Arc<dyn Backend>, bool)> {
    let (client, _) = super::connect::client(options).await?;
    let js = jetstream::new(client);
    match Layout1::find(&js, &options.prefix).await? {
        Some(old) => Ok((Arc::new(old), true)),
        None => Ok((Arc::new(super::Nats::open(options).await?), false)),
    }
}

/// Deletes the layout-1 streams under the prefix, once everything in them was copied.
pub async fn delete_layout_1(options: &super::NatsOptions) -> Result<()> {
    let (client, _) = super::connect::client(options).await?;
    let js = jetstream::new(client);
    match Layout1::find(&js, &options.prefix).await? {
        Some(old) => old.delete(&js).await,
        None => Ok(()),
    }
}
