//! The embedded store: RocksDB. `store` saves every change of a context as one atomic,
//! (by default) synced `WriteBatch`; `writer` is the thread that group-commits the saves of
//! all contexts; `tree` reads a context's tree; `keys` is the layout on disk (big-endian keys in column families);
//! `migrate` upgrades older layouts at open.
//!
//! RocksDB calls block on disk, so [`Rocks`] runs each on a blocking thread.

mod keys;
mod migrate;
mod store;
mod tree;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

pub use store::Store;
pub use tree::Tree;
pub use writer::Writer;

use super::backend::{Backend, Inserted};
use super::dump::Dump;
use super::error::{Error, Result};
use super::save::Save;
use crate::domain::{Child, Context, ContextKey, ContextSummary, ListPosition, Message, MessageId, NodeId, TenantId};

/// RocksDB's errors, in the engine's own words: nothing of RocksDB crosses the boundary.
impl From<rocksdb::Error> for Error {
    fn from(error: rocksdb::Error) -> Self {
        Error::Engine(error.into_string())
    }
}

/// The RocksDB backend: the database and its writer thread.
pub struct Rocks {
    store: Store,
    writer: Writer,
    dir: PathBuf,
}

impl Rocks {
    /// Opens (creating if needed) the database in `dir` and starts its writer. Blocks.
    pub fn open(dir: &Path, sync: bool) -> Result<Self> {
        let store = Store::open(dir, sync)?;
        Self::with(store, dir)
    }

    /// Creates `dir` if it is missing and opens the database in it, on a blocking thread
    /// (opening replays the write-ahead log).
    pub async fn open_dir(dir: PathBuf, sync: bool) -> Result<Self> {
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::Unavailable(format!("cannot create data dir {}: {e}", dir.display())))?;
            Self::open(&dir, sync)
        })
        .await
        .map_err(|e| Error::Unavailable(format!("opening the store failed: {e}")))?
    }

    /// The backend over a store already open in `dir`.
    pub fn with(store: Store, dir: &Path) -> Result<Self> {
        let writer = Writer::start(store.clone())
            .map_err(|e| Error::Unavailable(format!("could not start the storage writer: {e}")))?;
        Ok(Self { store, writer, dir: dir.to_path_buf() })
    }

    /// Runs `work` on the store on a blocking thread.
    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce(&Store) -> Result<T> + Send + 'static) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| Error::Unavailable(format!("storage task failed: {e}")))?
    }
}

#[async_trait]
impl Backend for Rocks {
    async fn insert(&self, ctx: Arc<Context>) -> Result<Inserted> {
        // The runtime inserts one context at a time, so "exists? then insert" cannot race here.
        self.blocking(move |store| {
            if store.exists(&ctx.key())? {
                return Ok(Inserted::Taken);
            }
            store.insert(&ctx).map(|()| Inserted::Saved)
        })
        .await
    }

    async fn commit(&self, save: Save) -> Result<usize> {
        self.writer.commit(save).await
    }

    async fn load(&self, key: &ContextKey) -> Result<Option<Context>> {
        let key = key.clone();
        self.blocking(move |store| store.load(&key)).await
    }

    async fn delete(&self, ctx: Arc<Context>) -> Result<()> {
        self.blocking(move |store| store.delete(&ctx)).await
    }

    async fn exists(&self, key: &ContextKey) -> Result<bool> {
        let key = key.clone();
        self.blocking(move |store| store.exists(&key)).await
    }

    async fn count(&self, tenant: &TenantId) -> Result<u64> {
        let tenant = tenant.clone();
        self.blocking(move |store| store.count(&tenant)).await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        after: Option<ListPosition>,
        limit: usize,
    ) -> Result<(Vec<ContextSummary>, Option<ListPosition>)> {
        let tenant = tenant.clone();
        self.blocking(move |store| store.list(&tenant, after, limit)).await
    }

    async fn interrupted(&self) -> Result<Vec<ContextKey>> {
        self.blocking(Store::interrupted).await
    }

    async fn keys(&self) -> Result<Vec<ContextKey>> {
        self.blocking(Store::keys).await
    }

    async fn restore(&self, dump: &Dump) -> Result<Inserted> {
        let dump = dump.clone();
        let saved = self.blocking(move |store| store.restore(&dump)).await?;
        Ok(if saved { Inserted::Saved } else { Inserted::Taken })
    }

    async fn node_of(&self, key: &ContextKey, id: MessageId) -> Result<Option<NodeId>> {
        let key = key.clone();
        self.blocking(move |store| store.tree(&key).node_of(id)).await
    }

    async fn messages(&self, key: &ContextKey, nodes: &[NodeId]) -> Result<Vec<Message>> {
        let (key, nodes) = (key.clone(), nodes.to_vec());
        self.blocking(move |store| store.tree(&key).messages(&nodes)).await
    }

    async fn children(&self, key: &ContextKey, parent: Option<NodeId>) -> Result<Vec<Child>> {
        let key = key.clone();
        self.blocking(move |store| store.tree(&key).children(parent)).await
    }

    fn figures(&self) -> Vec<(&'static str, u64)> {
        self.store.figures(&self.dir)
    }

    async fn close(&self) {
        let writer = self.writer.clone();
        if tokio::task::spawn_blocking(move || writer.stop()).await.is_err() {
            tracing::error!("could not stop the storage writer");
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tree_tests;
