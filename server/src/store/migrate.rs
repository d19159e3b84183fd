//! Moves data saved before tenants existed into the tenant `default`, once, at open.
//!
//! The legacy families' keys are the new keys without the tenant prefix, so each entry is
//! copied under `default`'s prefix unchanged. Every family is copied in full (synced) before
//! any is dropped, and copying is idempotent: a crash at any point leaves either the legacy
//! families to copy again at the next open, or nothing left to do. No data is lost.

use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};

use super::error::{Error, Result};
use super::keys;
use crate::domain::TenantId;

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
