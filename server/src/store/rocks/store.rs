//! RocksDB persistence. Every change of a context is one atomic, (by default) synced
//! `WriteBatch` holding its metadata and only the messages that changed, so saving
//! message N costs the same at N = 10 and N = 100,000.
//!
//! All calls block on disk: call them from blocking threads, never on the async executor.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions};

use super::keys;
use super::migrate;
use crate::domain::{Child, Context, ContextKey, ContextSummary, ListPosition, Message, Seq, Sibling, TenantId};
use crate::store::codec;
use crate::store::dump::Dump;
use crate::store::error::{Error, Result};
use crate::store::save::Save;
use crate::telemetry::names;

/// RocksDB properties exported as metrics: (metric name, property).
const FIGURES: &[(&str, &str)] = &[
    (names::ROCKSDB_PENDING_COMPACTION_BYTES, "rocksdb.estimate-pending-compaction-bytes"),
    (names::ROCKSDB_MEMTABLE_BYTES, "rocksdb.cur-size-all-mem-tables"),
    (names::ROCKSDB_SST_BYTES, "rocksdb.live-sst-files-size"),
    (names::ROCKSDB_BLOCK_CACHE_BYTES, "rocksdb.block-cache-usage"),
    (names::ROCKSDB_ESTIMATED_KEYS, "rocksdb.estimate-num-keys"),
];

#[derive(Clone)]
pub struct Store {
    pub(super) db: Arc<DB>,
    sync: bool,
}

impl Store {
    /// Opens (creating if needed) the database in `dir`. With `sync`, every write waits for
    /// the WAL to reach the disk.
    pub fn open(dir: &Path, sync: bool) -> Result<Self> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_keep_log_file_num(4);
        options.set_max_background_jobs(2);
        // A new directory has no families yet: nothing to migrate.
        let present = DB::list_cf(&options, dir).unwrap_or_default();
        let legacy = keys::legacy::MOVES.iter().map(|(old, _)| *old).filter(|old| present.iter().any(|p| p == old));
        let families = keys::ALL_FAMILIES
            .into_iter()
            .chain(legacy)
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let mut db = DB::open_cf_descriptors(&options, dir, families).map_err(|e| {
            // RocksDB reports a held LOCK file as an IO error naming the file; say what it means.
            if e.as_ref().starts_with("IO error") && e.as_ref().contains("/LOCK") {
                Error::Locked { path: dir.display().to_string() }
            } else {
                Error::from(e)
            }
        })?;
        migrate::legacy_into_default_tenant(&mut db, &present)?;
        migrate::index_the_tree(&db)?;
        Ok(Self { db: Arc::new(db), sync })
    }

    pub(super) fn family(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| Error::Corrupt(format!("column family {name} is missing")))
    }

    pub(super) fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(self.sync);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    pub fn exists(&self, key: &ContextKey) -> Result<bool> {
        Ok(self.db.get_pinned_cf(self.family(keys::CF_CONTEXTS)?, keys::context_key(key))?.is_some())
    }

    /// Saves a new context with the messages it starts with (a fork's), in one write.
    pub fn insert(&self, ctx: &Context) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.put_save(&mut batch, &Save::new_context(Arc::new(ctx.clone())))?;
        self.write(batch)
    }

    /// Saves one change atomically.
    pub fn commit(&self, save: &Save) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.put_save(&mut batch, save)?;
        self.write(batch)
    }

    /// Adds `save` to `batch`.
    pub(super) fn put_save(&self, batch: &mut WriteBatch, save: &Save) -> Result<()> {
        let ctx = &save.after;
        let context = ctx.key();
        let key = keys::context_key(&context);
        batch.put_cf(self.family(keys::CF_CONTEXTS)?, &key, codec::encode(&codec::context_to_stored(ctx)));
        let (messages, children, ids) =
            (self.family(keys::CF_MESSAGES)?, self.family(keys::CF_CHILDREN)?, self.family(keys::CF_MESSAGE_IDS)?);
        let child = |message: &Message| {
            let stored = codec::StoredChild { id: message.id.as_bytes().to_vec(), active_at: ctx.revision };
            (keys::child_key(&key, message.parent, message.node), codec::encode(&stored))
        };
        for message in &save.messages {
            batch.put_cf(
                messages,
                keys::message_key(&key, message.node),
                codec::encode(&codec::message_to_stored(message)),
            );
            if message.node >= save.new_from_node() {
                let (edge, value) = child(message);
                batch.put_cf(children, edge, value);
                let node = codec::StoredNode { node: message.node.get() };
                batch.put_cf(ids, keys::message_id_key(&key, &message.id), codec::encode(&node));
            }
        }
        for message in &save.joined {
            let (edge, value) = child(message);
            batch.put_cf(children, edge, value);
        }
        // A path record is rewritten only when the path's shape changed (shapes are shared
        // until they change).
        if save.before.as_ref().is_none_or(|before| !Arc::ptr_eq(&before.shape, &ctx.shape)) {
            batch.put_cf(self.family(keys::CF_PATHS)?, &key, codec::encode(&codec::path_to_stored(&ctx.shape)));
        }
        let by_updated = self.family(keys::CF_BY_UPDATED)?;
        if let Some(before) = save.before.as_ref().filter(|before| before.updated_at != ctx.updated_at) {
            batch.delete_cf(by_updated, keys::by_updated_key(&ctx.tenant, before.updated_at, ctx.id));
        }
        batch.put_cf(by_updated, keys::by_updated_key(&ctx.tenant, ctx.updated_at, ctx.id), []);
        let active = self.family(keys::CF_ACTIVE)?;
        if ctx.phase.is_resting() {
            batch.delete_cf(active, &key);
        } else {
            batch.put_cf(active, &key, []);
        }
        Ok(())
    }

    /// Loads a context with the messages of its active path; `None` if there is no such
    /// context. Reads only the active path: one range per segment, and the versions at the
    /// depths that have them, whatever the branches beside it hold.
    pub fn load(&self, key: &ContextKey) -> Result<Option<Context>> {
        let context = keys::context_key(key);
        let Some(meta) = self.db.get_pinned_cf(self.family(keys::CF_CONTEXTS)?, &context)? else {
            return Ok(None);
        };
        let stored: codec::StoredContext = codec::decode("context", &meta)?;
        let path = match self.db.get_pinned_cf(self.family(keys::CF_PATHS)?, &context)? {
            Some(bytes) => Some(codec::decode::<codec::StoredPath>("path", &bytes)?),
            None => None,
        };
        let length = Seq::new(stored.message_count);
        let segments = codec::segments_from_stored(path.as_ref());
        let mut messages: Vec<Message> = Vec::with_capacity(length.index());
        let family = self.family(keys::CF_MESSAGES)?;
        for (i, segment) in segments.iter().enumerate() {
            let end = segments.get(i + 1).map_or(length, |next| next.seq);
            let count = segment.seq.until(end);
            if segment.seq != Seq::of_index(messages.len()) {
                return Err(Error::Corrupt(format!(
                    "context {key}: path segment at depth {} out of order",
                    segment.seq
                )));
            }
            let iter = self.db.iterator_cf(
                family,
                IteratorMode::From(&keys::message_key(&context, segment.node), Direction::Forward),
            );
            for (k, item) in iter.take(usize::try_from(count).unwrap_or(usize::MAX)).enumerate() {
                let (bytes, value) = item?;
                let node = segment.node.plus(k as u64);
                if keys::node_after(&context, &bytes) != Some(node) {
                    return Err(Error::Corrupt(format!("context {key}: message {node} is missing")));
                }
                let message = codec::message_from_stored(node, codec::decode("message", &value)?)?;
                let follows = messages.last().map(|m| m.node);
                if message.seq != Seq::of_index(messages.len()) || message.parent != follows {
                    return Err(Error::Corrupt(format!("context {key}: message {node} is not on the saved path")));
                }
                messages.push(message);
            }
        }
        let mut forks = Vec::new();
        for seq in path.map(|p| p.forks).unwrap_or_default().into_iter().map(Seq::new) {
            let parent = codec::parent_at(&messages, seq);
            let siblings: Arc<[Sibling]> = self.children_of(&context, parent)?.iter().map(Child::sibling).collect();
            forks.push((seq, siblings));
        }
        codec::context_from_stored(key.clone(), stored, messages, forks).map(Some)
    }

    /// Deletes every key of the context atomically.
    pub fn delete(&self, ctx: &Context) -> Result<()> {
        let key = keys::context_key(&ctx.key());
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.family(keys::CF_CONTEXTS)?, &key);
        batch.delete_cf(self.family(keys::CF_PATHS)?, &key);
        // Only a key of all 0xff bytes has no end, and tenant names are not made of them.
        let end =
            keys::prefix_end(&key).ok_or_else(|| Error::Corrupt(format!("context {} has no key range", ctx.key())))?;
        for family in [keys::CF_MESSAGES, keys::CF_CHILDREN, keys::CF_MESSAGE_IDS] {
            batch.delete_range_cf(self.family(family)?, &key, &end);
        }
        batch.delete_cf(self.family(keys::CF_BY_UPDATED)?, keys::by_updated_key(&ctx.tenant, ctx.updated_at, ctx.id));
        batch.delete_cf(self.family(keys::CF_ACTIVE)?, &key);
        self.write(batch)
    }

    /// How many contexts `tenant` has (a scan of its keys: for limits, counted once).
    pub fn count(&self, tenant: &TenantId) -> Result<u64> {
        let prefix = keys::tenant_prefix(tenant);
        let mut read = ReadOptions::default();
        if let Some(end) = keys::prefix_end(&prefix) {
            read.set_iterate_upper_bound(end);
        }
        let mut count = 0;
        let mut iter = self.db.raw_iterator_cf_opt(self.family(keys::CF_CONTEXTS)?, read);
        iter.seek(&prefix);
        while iter.valid() {
            count += 1;
            iter.next();
        }
        iter.status()?;
        Ok(count)
    }

    /// Up to `limit` contexts of `tenant`, most recently updated first, starting after
    /// `after`. Returns the position of the page's end, if there may be a next page.
    pub fn list(
        &self,
        tenant: &TenantId,
        after: Option<ListPosition>,
        limit: usize,
    ) -> Result<(Vec<ContextSummary>, Option<ListPosition>)> {
        let by_updated = self.family(keys::CF_BY_UPDATED)?;
        let prefix = keys::tenant_prefix(tenant);
        let start = match after {
            Some(p) => keys::by_updated_key(tenant, p.updated_at, p.id),
            None => prefix.clone(),
        };
        let mut read = ReadOptions::default();
        if let Some(end) = keys::prefix_end(&prefix) {
            read.set_iterate_upper_bound(end);
        }
        let mut positions = Vec::with_capacity(limit);
        for item in self.db.iterator_cf_opt(by_updated, read, IteratorMode::From(&start, Direction::Forward)) {
            let (key, _) = item?;
            if after.is_some() && *key == *start {
                continue;
            }
            if positions.len() == limit {
                break;
            }
            positions.push(
                keys::by_updated_position(&prefix, &key).ok_or_else(|| Error::Corrupt("bad by_updated key".into()))?,
            );
        }
        let next = if positions.len() == limit { positions.last().copied() } else { None };
        let contexts = self.family(keys::CF_CONTEXTS)?;
        let metas = self.db.batched_multi_get_cf(
            contexts,
            positions.iter().map(|p| keys::context_key_in(&prefix, p.id)),
            false,
        );
        let mut summaries = Vec::with_capacity(positions.len());
        for (position, meta) in positions.iter().zip(metas) {
            // A context deleted between the two reads is simply not listed.
            let Some(meta) = meta? else { continue };
            let stored: codec::StoredContext = codec::decode("context", &meta)?;
            summaries.push(codec::summary_from_stored(position.id, &stored)?);
        }
        Ok((summaries, next))
    }

    /// RocksDB's own figures worth watching, summed over the column families, plus the size
    /// of the write-ahead log files in `dir`.
    pub fn figures(&self, dir: &Path) -> Vec<(&'static str, u64)> {
        let mut figures = Vec::with_capacity(FIGURES.len() + 1);
        for (metric, property) in FIGURES {
            let total = keys::ALL_FAMILIES
                .iter()
                .filter_map(|name| self.db.cf_handle(name))
                .filter_map(|cf| self.db.property_int_value_cf(cf, *property).ok().flatten())
                .sum();
            figures.push((*metric, total));
        }
        let wal = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        figures.push((names::ROCKSDB_WAL_BYTES, wal));
        figures
    }

    /// Writes memtables to SST files, so the next open has no log to replay.
    pub fn flush(&self) -> Result<()> {
        for name in keys::ALL_FAMILIES {
            self.db.flush_cf(self.family(name)?)?;
        }
        // The default family holds the layout markers; a memtable left in it would keep
        // every log file since its last write.
        self.db.flush()?;
        Ok(())
    }

    /// Contexts saved in the middle of a run, to resume after a restart.
    pub fn interrupted(&self) -> Result<Vec<ContextKey>> {
        self.context_keys(keys::CF_ACTIVE)
    }

    /// Every context of every tenant.
    pub fn keys(&self) -> Result<Vec<ContextKey>> {
        self.context_keys(keys::CF_CONTEXTS)
    }

    /// The contexts a family keyed by context holds.
    fn context_keys(&self, family: &'static str) -> Result<Vec<ContextKey>> {
        let mut found = Vec::new();
        for item in self.db.iterator_cf(self.family(family)?, IteratorMode::Start) {
            let (key, _) = item?;
            found.push(keys::parse_context_key(&key).ok_or_else(|| Error::Corrupt(format!("bad key in {family}")))?);
        }
        Ok(found)
    }

    /// Saves a context copied whole from another store, in one write, unless its key is
    /// taken (`false` then).
    pub fn restore(&self, dump: &Dump) -> Result<bool> {
        dump.check()?;
        let ctx = &dump.context;
        if self.exists(&ctx.key())? {
            return Ok(false);
        }
        let save = Save { before: None, after: Arc::clone(ctx), messages: dump.messages.clone(), joined: Vec::new() };
        let mut batch = WriteBatch::default();
        self.put_save(&mut batch, &save)?;
        // The children were written as active now; those with siblings get their own time back.
        let (children, key) = (self.family(keys::CF_CHILDREN)?, keys::context_key(&ctx.key()));
        for &(node, active_at) in &dump.active_at {
            let message = dump
                .message(node)
                .ok_or_else(|| Error::Corrupt(format!("context {}: no message {node}", ctx.key())))?;
            let stored = codec::StoredChild { id: message.id.as_bytes().to_vec(), active_at };
            batch.put_cf(children, keys::child_key(&key, message.parent, node), codec::encode(&stored));
        }
        self.write(batch)?;
        Ok(true)
    }
}
