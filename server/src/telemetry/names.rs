//! Every metric ctxd records, with its help text. Names follow what Prometheus users already
//! graph: grpc-ecosystem's `grpc_server_*` for calls, `ctxd_*` with the unit in the name for
//! the rest. Labels are bounded: no context or tenant ids, model names only as configured.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub const GRPC_STARTED: &str = "grpc_server_started_total";
pub const GRPC_HANDLED: &str = "grpc_server_handled_total";
pub const GRPC_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
pub const GRPC_MSG_SENT: &str = "grpc_server_msg_sent_total";

pub const SAVES: &str = "ctxd_saves_total";
pub const SAVE_FAILURES: &str = "ctxd_save_failures_total";
pub const SAVE_SECONDS: &str = "ctxd_save_duration_seconds";
pub const SAVES_PER_WRITE: &str = "ctxd_saves_per_write";
pub const SAVE_BYTES: &str = "ctxd_save_bytes";

pub const CONTEXTS_LOADED: &str = "ctxd_contexts_loaded";
pub const RUNS_ACTIVE: &str = "ctxd_runs_active";
pub const TRANSITIONS: &str = "ctxd_transitions_total";
pub const RUNS_RESUMED: &str = "ctxd_runs_resumed_total";
pub const RUNS_FAILED: &str = "ctxd_runs_failed_total";

pub const WATCH_STREAMS: &str = "ctxd_watch_streams";
pub const WATCH_EVENTS_SENT: &str = "ctxd_watch_events_sent_total";
pub const WATCH_LAGGED: &str = "ctxd_watch_lagged_total";

pub const LLM_REQUESTS: &str = "ctxd_llm_requests_total";
pub const LLM_FIRST_TOKEN_SECONDS: &str = "ctxd_llm_time_to_first_token_seconds";
pub const LLM_STREAM_SECONDS: &str = "ctxd_llm_stream_duration_seconds";
pub const LLM_TOKENS: &str = "ctxd_llm_tokens_total";
pub const LLM_RETRIES: &str = "ctxd_llm_retries_total";
pub const LLM_RETRY_AFTER_SECONDS: &str = "ctxd_llm_retry_after_wait_seconds_total";
pub const LLM_SHRINKS: &str = "ctxd_llm_context_shrinks_total";
pub const SUMMARIES: &str = "ctxd_summaries_total";

pub const TOOL_CALLS: &str = "ctxd_tool_calls_total";
pub const TOOL_SECONDS: &str = "ctxd_tool_call_duration_seconds";
pub const EXTERNAL_RESULTS: &str = "ctxd_external_tool_results_total";
pub const TOOL_CHECKS_OVER_BUDGET: &str = "ctxd_tool_argument_checks_over_budget_total";

pub const AUTH_FAILURES: &str = "ctxd_auth_failures_total";
pub const WATCH_LAPSED: &str = "ctxd_watch_streams_lapsed_total";
pub const HOSTS_REFUSED: &str = "ctxd_http_host_refused_total";
pub const MEMBERS_REFUSED: &str = "ctxd_cluster_records_refused_total";
pub const FORWARDS_REFUSED: &str = "ctxd_forwarded_calls_refused_total";
pub const AUTH_RELOADS: &str = "ctxd_auth_file_reloads_total";
pub const LIMIT_REFUSALS: &str = "ctxd_tenant_limit_refusals_total";

pub const NATS_REQUESTS: &str = "ctxd_nats_requests_total";
pub const NATS_SAVE_RETRIES: &str = "ctxd_nats_save_retries_total";

pub const CLUSTER_NODES: &str = "ctxd_cluster_nodes";
pub const FORWARDED: &str = "ctxd_forwarded_calls_total";
pub const RUNS_TAKEN_OVER: &str = "ctxd_runs_taken_over_total";
pub const LEASES_HELD: &str = "ctxd_leases_held";
pub const STANDING_LOST: &str = "ctxd_cluster_standing_lost_total";

pub const TRACE_SPANS_ENDED: &str = "ctxd_trace_spans_ended_total";
pub const TRACE_SPANS_EXPORTED: &str = "ctxd_trace_spans_exported_total";
pub const TRACE_SPANS_FAILED: &str = "ctxd_trace_spans_failed_total";

pub const ROCKSDB_PENDING_COMPACTION_BYTES: &str = "ctxd_rocksdb_pending_compaction_bytes";
pub const ROCKSDB_MEMTABLE_BYTES: &str = "ctxd_rocksdb_memtable_bytes";
pub const ROCKSDB_SST_BYTES: &str = "ctxd_rocksdb_sst_bytes";
pub const ROCKSDB_BLOCK_CACHE_BYTES: &str = "ctxd_rocksdb_block_cache_bytes";
pub const ROCKSDB_ESTIMATED_KEYS: &str = "ctxd_rocksdb_estimated_keys";
pub const ROCKSDB_WAL_BYTES: &str = "ctxd_rocksdb_wal_bytes";

/// RocksDB's figures, read at each scrape (see `Store::figures`), with their help.
pub const ROCKSDB_FIGURES: &[(&str, &str)] = &[
    (ROCKSDB_PENDING_COMPACTION_BYTES, "Bytes RocksDB estimates compaction has to rewrite."),
    (ROCKSDB_MEMTABLE_BYTES, "Bytes in memtables."),
    (ROCKSDB_SST_BYTES, "Bytes of live SST files."),
    (ROCKSDB_BLOCK_CACHE_BYTES, "Bytes the block cache holds."),
    (ROCKSDB_ESTIMATED_KEYS, "Keys RocksDB estimates it holds."),
    (ROCKSDB_WAL_BYTES, "Bytes of write-ahead log files."),
];

/// Histograms of seconds share these buckets: 100 µs (a save) to 60 s (a long reply).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Saves that shared one write (group commit).
pub const SAVES_PER_WRITE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Bytes written by one save.
pub const BYTES_BUCKETS: &[f64] = &[128.0, 512.0, 1024.0, 4096.0, 16384.0, 65536.0, 262_144.0, 1_048_576.0];

/// Registers every metric's help text and unit with the recorder.
pub fn describe() {
    describe_counter!(GRPC_STARTED, "RPCs started on the server.");
    describe_counter!(GRPC_HANDLED, "RPCs completed on the server, by status code.");
    describe_histogram!(GRPC_HANDLING_SECONDS, Unit::Seconds, "Time to answer a unary RPC (streams are left out).");
    describe_counter!(GRPC_MSG_SENT, "Messages sent by the server on streams.");
    describe_counter!(SAVES, "Saves of a context (each one atomic, holding one or more transitions).");
    describe_counter!(SAVE_FAILURES, "Saves that failed; the action or run that asked for them changed nothing.");
    describe_histogram!(SAVE_SECONDS, Unit::Seconds, "Duration of one synced write (a group of saves).");
    describe_histogram!(SAVES_PER_WRITE, Unit::Count, "Saves that shared one write and one fsync.");
    describe_histogram!(SAVE_BYTES, Unit::Bytes, "Bytes one write put into the store.");
    describe_counter!(AUTH_FAILURES, "Calls refused UNAUTHENTICATED, by reason (the credential is never logged).");
    describe_counter!(MEMBERS_REFUSED, "Node records ignored because they are not signed with the cluster secret.");
    describe_counter!(
        FORWARDS_REFUSED,
        "Calls marked as forwarded refused because no node of this cluster signed them."
    );
    describe_counter!(
        HOSTS_REFUSED,
        "Requests refused because their Host is neither loopback nor allowed (a server without authentication)."
    );
    describe_counter!(
        WATCH_LAPSED,
        "Watch streams ended UNAUTHENTICATED because their credential expired or was revoked, by reason."
    );
    describe_counter!(AUTH_RELOADS, "Re-reads of a changed JWKS or API keys file, by file and outcome.");
    describe_counter!(LIMIT_REFUSALS, "Actions refused by a per-tenant limit, by limit (runs, contexts).");
    describe_gauge!(CONTEXTS_LOADED, "Contexts held in memory by a live actor.");
    describe_gauge!(RUNS_ACTIVE, "Contexts in the middle of a run, by FSM state.");
    describe_counter!(TRANSITIONS, "State machine transitions saved, by from and to state.");
    describe_counter!(RUNS_RESUMED, "Runs resumed after a restart.");
    describe_counter!(RUNS_FAILED, "Runs that ended in FAILED.");
    describe_gauge!(WATCH_STREAMS, "Open WatchState and WatchContexts streams.");
    describe_counter!(WATCH_EVENTS_SENT, "Events sent to watchers.");
    describe_counter!(WATCH_LAGGED, "Watchers that fell behind and were sent a snapshot instead.");
    describe_counter!(LLM_REQUESTS, "LLM requests, by provider, model and outcome.");
    describe_histogram!(LLM_FIRST_TOKEN_SECONDS, Unit::Seconds, "Time from an LLM request to its first text.");
    describe_histogram!(LLM_STREAM_SECONDS, Unit::Seconds, "Time from an LLM request to the end of its stream.");
    describe_counter!(LLM_TOKENS, "Tokens the LLM providers reported, by kind (prompt, completion).");
    describe_counter!(LLM_RETRIES, "LLM attempts scheduled again after a transient failure.");
    describe_counter!(
        LLM_SHRINKS,
        "LLM requests the provider refused as longer than the model's context window, sent again smaller."
    );
    describe_counter!(
        SUMMARIES,
        "Summaries of a conversation's oldest part, by outcome: ok, or fallback (failed; the call was truncated instead)."
    );
    describe_counter!(
        LLM_RETRY_AFTER_SECONDS,
        Unit::Seconds,
        "Time spent waiting because a provider asked (Retry-After)."
    );
    describe_counter!(
        TOOL_CALLS,
        "Tool calls, by tool and outcome (ok, error, denied, timeout, interrupted, cancelled)."
    );
    describe_histogram!(TOOL_SECONDS, Unit::Seconds, "Duration of a tool call the server ran.");
    describe_counter!(EXTERNAL_RESULTS, "Results of external tools delivered with SubmitToolResult.");
    describe_counter!(
        TOOL_CHECKS_OVER_BUDGET,
        "Replies whose tool call arguments could not be checked within the time budget (the calls were refused)."
    );
    describe_counter!(
        NATS_REQUESTS,
        "Requests to the NATS cluster (--store nats), by op: append (a save), put (the tree, a snapshot), read."
    );
    describe_counter!(NATS_SAVE_RETRIES, "Saves published again because the NATS cluster did not answer.");
    describe_gauge!(CLUSTER_NODES, "Live ctxd nodes this node sees on the cluster (--store nats), itself included.");
    describe_counter!(
        FORWARDED,
        "Calls sent on to the node that runs their context, by grpc_method and outcome (ok, error, unreachable)."
    );
    describe_counter!(RUNS_TAKEN_OVER, "Runs this node took over from a node that left or died.");
    describe_gauge!(LEASES_HELD, "Partitions this node holds the lease of (it runs their contexts).");
    describe_counter!(
        STANDING_LOST,
        "Times this node could not renew its place in the cluster in time and stopped every context it ran."
    );
    describe_counter!(TRACE_SPANS_ENDED, "Spans that ended and were queued for export (with --otlp-endpoint).");
    describe_counter!(TRACE_SPANS_EXPORTED, "Spans the OTLP endpoint accepted.");
    describe_counter!(TRACE_SPANS_FAILED, "Spans in batches the OTLP endpoint refused or did not answer.");
    for (name, help) in ROCKSDB_FIGURES {
        describe_gauge!(*name, *help);
    }
}
