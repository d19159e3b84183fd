//! Group commit across contexts: one thread writes every save of a running context.
//! Saves that arrive while it is writing wait for the next write and share it: their
//! batches go into one `WriteBatch`, one WAL write and one fsync, and each caller learns
//! the outcome. Each context's change stays atomic (it is wholly in one write), and a
//! failed write fails every save in it, so no caller believes in a save that is not on disk.
//!
//! RocksDB groups concurrent writers by itself too, but each writer is then a thread that
//! spins and sleeps in RocksDB's write queue; one writer thread costs fewer wake-ups.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use std::time::Instant;

use metrics::{counter, histogram};
use rocksdb::WriteBatch;
use tokio::sync::oneshot;

use super::store::Store;
use crate::store::error::{Error, Result};
use crate::store::save::Save;
use crate::telemetry::names;

/// Saves written together at most; more wait for the next write.
const MAX_GROUP: usize = 256;

enum Request {
    Save(Job),
    /// Finish what is queued, release the database and end the thread.
    Stop,
}

struct Job {
    save: Save,
    /// Answered with the bytes this save put into the write.
    done: oneshot::Sender<Result<usize>>,
}

/// The handle to the writer thread. The thread ends, and the database is released, on
/// [`Writer::stop`] or when the last handle is dropped.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: mpsc::Sender<Request>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub fn start(store: Store) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new().name("ctxd-writer".into()).spawn(move || write_loop(store, &queue))?;
        Ok(Self { inner: Arc::new(Inner { jobs, thread: Mutex::new(Some(thread)) }) })
    }

    /// Ends the thread once what is queued is written, and waits for it, so that the
    /// database is closed before the process exits. Later saves fail with `WriterStopped`.
    pub fn stop(&self) {
        self.inner.stop();
    }

    /// Saves one change atomically, in the next write. Returns the bytes the save wrote.
    pub async fn commit(&self, save: Save) -> Result<usize> {
        let (done, outcome) = oneshot::channel();
        let job = Job { save, done };
        self.inner.jobs.send(Request::Save(job)).map_err(|_| Error::WriterStopped)?;
        outcome.await.map_err(|_| Error::WriterStopped)?
    }
}

impl Inner {
    fn stop(&self) {
        let _ = self.jobs.send(Request::Stop);
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the storage writer thread panicked");
        }
    }
}

impl Drop for Inner {
    /// A server that ends on an error, without a shutdown, still closes the database
    /// before the process exits (RocksDB must not be torn down under a live thread).
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_loop(store: Store, queue: &mpsc::Receiver<Request>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut stopping = false;
    let (mut saves, mut writes) = (0u64, 0u64);
    while !stopping && let Ok(first) = queue.recv() {
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Save(job) => group.push(job),
                Request::Stop => stopping = true,
            }
            if group.len() < MAX_GROUP {
                next = queue.try_recv().ok();
            }
        }
        if group.is_empty() {
            continue;
        }
        let outcome = write_group(&store, &group);
        (saves, writes) = (saves + group.len() as u64, writes + 1);
        // Running totals, so that a reader of any two lines knows the saves per fsync between.
        tracing::debug!(saves = group.len(), total_saves = saves, total_writes = writes, "wrote");
        for (n, job) in group.drain(..).enumerate() {
            // A caller that went away (its context was shut down) needs no answer.
            let _ = job.done.send(outcome.as_ref().map(|sizes| sizes[n]).map_err(Clone::clone));
        }
    }
    tracing::info!(saves, writes, "storage writer stopped");
    drop(store);
}

/// Writes the group as one batch; returns the bytes each save put into it.
fn write_group(store: &Store, group: &[Job]) -> Result<Vec<usize>> {
    let saves = group.len() as u64;
    let written = (|| {
        let mut batch = WriteBatch::default();
        let mut sizes = Vec::with_capacity(group.len());
        for job in group {
            let before = batch.size_in_bytes();
            store.put_save(&mut batch, &job.save)?;
            sizes.push(batch.size_in_bytes() - before);
        }
        let bytes = batch.size_in_bytes();
        let started = Instant::now();
        store.write(batch)?;
        histogram!(names::SAVE_SECONDS).record(started.elapsed().as_secs_f64());
        histogram!(names::SAVE_BYTES).record(bytes as f64);
        Ok(sizes)
    })();
    match &written {
        Ok(_) => {
            counter!(names::SAVES).increment(saves);
            histogram!(names::SAVES_PER_WRITE).record(saves as f64);
        }
        Err(error) => {
            counter!(names::SAVE_FAILURES).increment(saves);
            tracing::error!(%error, saves, "a write failed; its saves fail with it");
        }
    }
    written
}
