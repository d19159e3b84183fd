//! Brings data saved by earlier versions up to the current layout, once, at open:
//! - data saved before tenants existed moves into the tenant `default`;
//! - messages saved before branches get their entries in the tree's indexes.
//!
//! Before tenants:
//! The legacy families' keys are the new keys without the tenant prefix, so each entry is
//! copied under `default`'s prefix unchanged. Every family is copied in full (synced) before
//! any is dropped, and copying is idempotent: a crash at any point leaves either the legacy
//! families to copy again at the next open, or nothing left to do. No data is lost.

use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};

use super::keys;
use crate::domain::TenantId;
use crate::store::codec;
use crate::store::error::{Error, Result};

/// Entries per write while copying.
const CHUNK: usize = 1024;

/// Copies every entry of the legacy families present in `db` (named in `present`) into
/// the tenant `default`, then drops them.
pub fn legacy_into_default_tenant(db: &mut DB, present: &[String]) -> Result<()> {
    let moves: Vec<_> = keys::legacy::MOVES.iter().filter(|(old, _)| present.iter().any(|p| p == old)).collect();
    if moves.is_empty() {
        return Ok(());
    }
    let prefix = keys::tenant_prefix(&TenantId::default_tenant());
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    let mut copied = 0u64;
    for (old, new) in &moves {
        let from = db.cf_handle(old).ok_or_else(|| missing(old))?;
        let to = db.cf_handle(new).ok_or_else(|| missing(new))?;
        let mut batch = WriteBatch::default();
        for item in db.iterator_cf(from, IteratorMode::Start) {
            let (key, value) = item?;
            let mut moved = prefix.clone();
            moved.extend_from_slice(&key);
            batch.put_cf(to, moved, value);
            copied += 1;
            if batch.len() >= CHUNK {
                db.write_opt(std::mem::take(&mut batch), &sync)?;
            }
        }
        db.write_opt(batch, &sync)?;
    }
    for (old, _) in &moves {
        db.drop_cf(old)?;
    }
    tracing::info!(
        entries = copied,
        tenant = TenantId::DEFAULT,
        "moved data saved before tenants into the default tenant"
    );
    Ok(())
}

fn missing(name: &str) -> Error {
    Error::Corrupt(format!("column family {name} is missing"))
}

/// Writes the `children` and `message_ids` entries of every message saved before branches
/// (whose records have no depth), then a marker so that it happens once. Idempotent: a crash
/// before the marker writes the same entries again at the next open.
pub fn index_the_tree(db: &DB) -> Result<()> {
    if db.get_pinned(keys::TREE_INDEXED)?.is_some() {
        return Ok(());
    }
    let family = |name: &str| db.cf_handle(name).ok_or_else(|| missing(name));
    let (messages, children, ids) =
        (family(keys::CF_MESSAGES)?, family(keys::CF_CHILDREN)?, family(keys::CF_MESSAGE_IDS)?);
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    let mut batch = WriteBatch::default();
    let mut indexed = 0u64;
    for item in db.iterator_cf(messages, IteratorMode::Start) {
        let (key, value) = item?;
        let Some(split) = key.len().checked_sub(8) else {
            return Err(Error::Corrupt("message key too short".into()));
        };
        let (context, node) = key.split_at(split);
        let node =
            keys::node_after(context, &key).ok_or_else(|| Error::Corrupt(format!("bad message key {node:?}")))?;
        let stored: codec::StoredMessage = codec::decode("message", &value)?;
        if stored.depth.is_some() {
            continue;
        }
        let message = codec::message_from_stored(node, stored)?;
        let child = codec::StoredChild { id: message.id.as_bytes().to_vec(), active_at: 0 };
        batch.put_cf(children, keys::child_key(context, message.parent, node), codec::encode(&child));
        batch.put_cf(
            ids,
            keys::message_id_key(context, &message.id),
            codec::encode(&codec::StoredNode { node: node.get() }),
        );
        indexed += 1;
        if batch.len() >= CHUNK {
            db.write_opt(std::mem::take(&mut batch), &sync)?;
        }
    }
    batch.put(keys::TREE_INDEXED, [1]);
    db.write_opt(batch, &sync)?;
    if indexed > 0 {
        tracing::info!(messages = indexed, "indexed the messages saved before branches");
    }
    Ok(())
}
