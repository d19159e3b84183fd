//! ctxd: a context server for LLM chat applications. The backend is the single source of
//! truth: clients dispatch actions, the server runs a state machine per context, calls the
//! LLM and tools itself, and saves every transition to RocksDB before anyone sees it.

pub mod api;
pub mod auth;
pub mod backoff;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod fsm;
pub mod http;
pub mod llm;
pub mod migrate;
pub mod runtime;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tools;
