//! What can go wrong in storage.

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("data dir {path} is in use by another ctxd process")]
    Locked { path: String },
    /// The engine failed (an I/O error, say); its own words.
    #[error("storage error: {0}")]
    Engine(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the storage writer has stopped")]
    WriterStopped,
    /// The engine cannot be reached or cannot take the write now (e.g. a replicated store
    /// without its quorum); nothing was written, and trying again later may work.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// Another process wrote this context since this one last read it: the engine refused
    /// the write, so two writers can never interleave their saves.
    #[error("context {context} was written by another ctxd process; this one no longer owns it")]
    Conflict { context: String },
    /// The engine's stored configuration differs from what ctxd was told to use.
    #[error("storage is configured differently: {0}")]
    Misconfigured(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
