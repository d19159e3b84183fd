//! The physical floor: the synced RocksDB `WriteBatch` one transition writes (metadata, one
//! message, the by-updated index and the active-run index), written directly, with no gRPC
//! and no state machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};

use crate::report::Row;
use crate::stats::Summary;

const FAMILIES: [&str; 4] = ["contexts", "messages", "by_updated", "active"];
/// Sizes of a typical transition's values, measured from ctxd's encoding.
const META_BYTES: usize = 120;
const MESSAGE_BYTES: usize = 160;
/// The pause before each write of the spaced case: about one action's round trip.
const IDLE_GAP: Duration = Duration::from_micros(300);

/// Writes `per_writer` batches from each of `writers` threads, `gap` apart; returns the latencies.
fn run(db: &Arc<DB>, writers: usize, per_writer: usize, gap: Duration) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let db = Arc::clone(db);
            std::thread::spawn(move || {
                let mut options = WriteOptions::default();
                options.set_sync(true);
                let id = [w as u8; 16];
                let mut samples = Vec::with_capacity(per_writer);
                for seq in 0..per_writer as u64 {
                    let mut batch = WriteBatch::default();
                    let cf = |name| db.cf_handle(name).expect("column family");
                    let mut message_key = id.to_vec();
                    message_key.extend_from_slice(&seq.to_be_bytes());
                    let mut updated = (u64::MAX - seq).to_be_bytes().to_vec();
                    updated.extend_from_slice(&id);
                    let mut previous = (u64::MAX - seq).wrapping_add(1).to_be_bytes().to_vec();
                    previous.extend_from_slice(&id);
                    batch.put_cf(cf("contexts"), id, [7u8; META_BYTES]);
                    batch.put_cf(cf("messages"), &message_key, [9u8; MESSAGE_BYTES]);
                    batch.delete_cf(cf("by_updated"), &previous);
                    batch.put_cf(cf("by_updated"), &updated, []);
                    batch.put_cf(cf("active"), id, []);
                    if !gap.is_zero() {
                        std::thread::sleep(gap);
                    }
                    let t = Instant::now();
                    db.write_opt(batch, &options).expect("write");
                    samples.push(t.elapsed());
                }
                samples
            })
        })
        .collect();
    let samples = threads.into_iter().flat_map(|t| t.join().expect("writer")).collect();
    (samples, started.elapsed())
}

/// p50s of the floor, for the other scenarios' ratios.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// One writer, back to back: the floor.
    pub p50_us: f64,
    /// One writer, each write after a short idle spell, as a server's writes come.
    pub spaced_p50_us: f64,
}

pub fn measure(quick: bool) -> (Vec<Row>, Floor) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let families = FAMILIES.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    let db = Arc::new(DB::open_cf_descriptors(&options, dir.path(), families).expect("open"));
    let (single, many) = if quick { ((50, 1), (10, 8)) } else { ((2000, 1), (50, 64)) };
    let mut rows = Vec::new();
    let (samples, wall) = run(&db, single.1, single.0, Duration::ZERO);
    let one = Summary::of(samples, wall);
    let floor_p50 = one.p50_us;
    rows.push(Row::new("floor", "synced WriteBatch, 1 writer", one));
    // A server's writes come between other work, not back to back; on this VM a write
    // after a short idle spell costs more (the idle vCPU and disk queue wake up first).
    let (samples, wall) = run(&db, 1, (single.0 / 2).max(20), IDLE_GAP);
    let spaced = Summary::of(samples, wall);
    let spaced_p50_us = spaced.p50_us;
    let ratio = spaced_p50_us / floor_p50;
    rows.push(
        Row::new("floor", format!("synced WriteBatch, 1 writer, {} µs apart", IDLE_GAP.as_micros()), spaced)
            .note("p50_vs_floor", format!("{ratio:.2}")),
    );
    let (samples, wall) = run(&db, many.1, many.0, Duration::ZERO);
    rows.push(Row::new("floor", format!("synced WriteBatch, {} writers", many.1), Summary::of(samples, wall)));
    (rows, Floor { p50_us: floor_p50, spaced_p50_us })
}
