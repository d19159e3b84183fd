//! What can go wrong in storage.

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("data dir {path} is in use by another ctxd process")]
    Locked { path: String },
    #[error("storage error: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the storage writer has stopped")]
    WriterStopped,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
