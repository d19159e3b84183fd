//! The storage boundary: what the runtime needs of a store, whichever engine holds the data.
//! RocksDB (embedded, the default) and NATS JetStream (replicated) implement it; the runtime
//! holds an `Arc<dyn Backend>` and never knows which.
//!
//! Every method is a whole operation of the runtime (a save, a load, a page of a list), so
//! that each engine can do it in as few round trips as it allows.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::dump::Dump;
use super::error::Result;
use super::save::Save;
use crate::domain::{
    Child, Context, ContextKey, ContextSummary, ListPosition, Message, MessageId, NodeId, TenantId, TreeReader,
};

/// Messages read from a store at once while dumping a context.
const DUMP_BATCH: u64 = 1024;

/// A change to a tenant's list of contexts, for list watchers: as the store reports it to
/// every process that shares it (see [`Backend::watch`]), or as an actor tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A context was created or saved; replaces any older summary of it.
    Saved {
        key: ContextKey,
        summary: ContextSummary,
    },
    Removed(ContextKey),
}

impl Change {
    pub fn tenant(&self) -> &TenantId {
        match self {
            Change::Saved { key, .. } | Change::Removed(key) => &key.tenant,
        }
    }
}

/// What inserting a new context did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Saved,
    /// A context with that key exists already; nothing was written.
    Taken,
}

#[async_trait]
pub trait Backend: Send + Sync {
    /// Saves a new context with the messages it starts with (a fork's), in one atomic write,
    /// unless its key is taken.
    async fn insert(&self, ctx: Arc<Context>) -> Result<Inserted>;

    /// Saves one change of a context atomically. Returns the bytes it wrote. Once it returns
    /// `Ok` the change survives a crash (as configured: synced or replicated).
    async fn commit(&self, save: Save) -> Result<usize>;

    /// A context with the messages of its active path; `None` if there is no such context.
    async fn load(&self, key: &ContextKey) -> Result<Option<Context>>;

    /// Deletes the context and everything it holds.
    async fn delete(&self, ctx: Arc<Context>) -> Result<()>;

    async fn exists(&self, key: &ContextKey) -> Result<bool>;

    /// How many contexts `tenant` has (for limits: counted once, then kept by the runtime).
    async fn count(&self, tenant: &TenantId) -> Result<u64>;

    /// Up to `limit` contexts of `tenant`, most recently updated first, starting after
    /// `after`. Returns the position of the page's end, if there may be a next page.
    async fn list(
        &self,
        tenant: &TenantId,
        after: Option<ListPosition>,
        limit: usize,
    ) -> Result<(Vec<ContextSummary>, Option<ListPosition>)>;

    /// Contexts saved in the middle of a run, to resume after a restart.
    async fn interrupted(&self) -> Result<Vec<ContextKey>>;

    /// Every context of every tenant, for copying them all (a scan, never on a request).
    /// May name contexts deleted since: loading those finds nothing.
    async fn keys(&self) -> Result<Vec<ContextKey>>;

    /// Saves a context copied whole from another store, unless its key is taken. Once it
    /// returns `Saved`, the store holds exactly what `dump` does (a copy cut short by a
    /// crash is never taken for a context: the next restore of it starts again).
    async fn restore(&self, dump: &Dump) -> Result<Inserted>;

    /// Reads context `key` whole, as [`Backend::restore`] takes it; `None` if there is no
    /// such context.
    async fn dump(&self, key: &ContextKey) -> Result<Option<Dump>> {
        let Some(context) = self.load(key).await? else { return Ok(None) };
        let end = context.next_node.get();
        let mut messages = Vec::with_capacity(usize::try_from(end).unwrap_or(0));
        let mut from = 0;
        while from < end {
            let nodes: Vec<NodeId> = (from..end.min(from + DUMP_BATCH)).map(NodeId::new).collect();
            messages.extend(self.messages(key, &nodes).await?.into_iter().map(Arc::new));
            from += DUMP_BATCH;
        }
        let mut families: BTreeMap<Option<NodeId>, usize> = BTreeMap::new();
        for message in &messages {
            *families.entry(message.parent).or_default() += 1;
        }
        let mut active_at = Vec::new();
        for (parent, _) in families.into_iter().filter(|(_, children)| *children > 1) {
            active_at.extend(self.children(key, parent).await?.into_iter().map(|c| (c.node, c.active_at)));
        }
        active_at.sort_unstable();
        let dump = Dump { context: Arc::new(context), messages, active_at };
        dump.check()?;
        Ok(Some(dump))
    }

    /// The node of message `id` of context `key`, on any branch.
    async fn node_of(&self, key: &ContextKey, id: MessageId) -> Result<Option<NodeId>>;

    /// The messages of context `key` numbered `nodes`, in that order (each must exist).
    async fn messages(&self, key: &ContextKey, nodes: &[NodeId]) -> Result<Vec<Message>>;

    /// The children of `parent` (`None`: the first messages) of context `key`, oldest first.
    async fn children(&self, key: &ContextKey, parent: Option<NodeId>) -> Result<Vec<Child>>;

    /// Waits until everything saved of `key` by this process is written in full (a store that
    /// finishes a save behind it, like NATS, is done with it), so another process may take the
    /// context over. Bounded: a store that cannot finish leaves it to the next reader.
    async fn settle(&self, _key: &ContextKey) {}

    /// Whether other processes write the store too (NATS): the runtime then learns of saves,
    /// its own and theirs, from [`Backend::watch`], not from its actors.
    fn shared(&self) -> bool {
        false
    }

    /// Every later save of `tenant`'s contexts, by any process sharing the store, once it is
    /// saved; `None` for a store this process alone writes (RocksDB), whose saves the
    /// runtime already knows of.
    async fn watch(&self, _tenant: &TenantId) -> Result<Option<tokio::sync::broadcast::Receiver<Change>>> {
        Ok(None)
    }

    /// The engine's own figures worth exporting as gauges: (metric name, value).
    fn figures(&self) -> Vec<(&'static str, u64)>;

    /// Writes what is pending and releases the engine; later saves fail.
    async fn close(&self);
}

/// One context's tree in a backend, as a switch reads it.
pub struct Tree<'a> {
    backend: &'a dyn Backend,
    key: &'a ContextKey,
}

impl<'a> Tree<'a> {
    pub fn new(backend: &'a dyn Backend, key: &'a ContextKey) -> Self {
        Self { backend, key }
    }
}

impl TreeReader for Tree<'_> {
    type Error = super::Error;

    async fn node_of(&self, id: MessageId) -> Result<Option<NodeId>> {
        self.backend.node_of(self.key, id).await
    }

    async fn message(&self, node: NodeId) -> Result<Message> {
        let mut found = self.backend.messages(self.key, &[node]).await?;
        found.pop().ok_or_else(|| super::Error::Corrupt(format!("context {}: message {node} is missing", self.key)))
    }

    async fn children(&self, parent: Option<NodeId>) -> Result<Vec<Child>> {
        self.backend.children(self.key, parent).await
    }
}
