//! Observability against the real binary: Prometheus counters move by exactly what a session
//! of calls did, histograms fill, the text parses as Prometheus exposition, the metrics
//! listener and the API never answer for each other, and JSON logs are one object a line.

use ctxd_tests::metrics::{http_get, matching, observations, scrape, value};
use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use pb::FsmState;

#[tokio::test]
async fn counters_move_by_what_happened_and_the_text_parses() {
    let workspace = workspace_with(&[("a.txt", "alpha")]);
    let ws = workspace.path().to_str().expect("utf-8");
    let server = Server::start(0, &["--metrics-listen", "127.0.0.1:0", "--workspace", ws]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "metered").await;
    let mut events = watch(&mut client, &id, 0).await;
    let open = scrape(&server).await;
    assert_eq!(value(&open, "ctxd_watch_streams", &[("grpc_method", "WatchState")]), 1.0);

    // A tool call that runs, one a person denies, and an LLM attempt that fails once.
    send(&mut client, &id, "/tool clock {}").await;
    let asked = send(&mut client, &id, r#"/tool read_file {"path": "a.txt"}"#).await;
    let call = asked.pending_tool_calls[0].id.clone();
    let deny = pb::ApproveToolsRequest {
        context_id: id.clone(),
        denied_tool_call_ids: vec![call],
        wait: true,
        ..Default::default()
    };
    client.approve_tools(deny).await.expect("deny");
    let done = send(&mut client, &id, "/fail-once").await;
    assert_eq!(state_of(&done), FsmState::Idle);
    let bad = client.get_state(pb::GetStateRequest { context_id: "nope".into(), ..Default::default() }).await;
    assert_eq!(bad.expect_err("bad id").code(), tonic::Code::InvalidArgument);

    // The watcher reads everything up to the final state.
    let mut received = 0.0;
    let mut folded = Folded::default();
    while folded.revision < done.revision || folded.state.as_ref().is_none_or(|s| state_of(s) != FsmState::Idle) {
        folded.apply(&events.message().await.expect("stream").expect("event")).expect("consistent");
        received += 1.0;
    }

    let metrics = scrape(&server).await;
    let service = ("grpc_service", "ctxd.v1.ContextService");
    let unary = ("grpc_type", "unary");
    let send_ok = [service, unary, ("grpc_method", "SendMessage"), ("grpc_code", "OK")];
    assert_eq!(value(&metrics, "grpc_server_started_total", &send_ok[..3]), 3.0);
    assert_eq!(value(&metrics, "grpc_server_handled_total", &send_ok), 3.0);
    assert_eq!(observations(&metrics, "grpc_server_handling_seconds", &send_ok[..3]), 3.0);
    let approve = [service, ("grpc_method", "ApproveTools"), ("grpc_code", "OK")];
    assert_eq!(value(&metrics, "grpc_server_handled_total", &approve), 1.0);
    let refused = [service, ("grpc_method", "GetState"), ("grpc_code", "InvalidArgument")];
    assert_eq!(value(&metrics, "grpc_server_handled_total", &refused), 1.0);
    let streamed = [("grpc_type", "server_stream"), service, ("grpc_method", "WatchState")];
    assert_eq!(value(&metrics, "grpc_server_msg_sent_total", &streamed), received, "every event sent is counted");
    assert_eq!(observations(&metrics, "grpc_server_handling_seconds", &streamed), 0.0, "streams are not timed");

    let tools = |tool, outcome| value(&metrics, "ctxd_tool_calls_total", &[("tool", tool), ("outcome", outcome)]);
    assert_eq!((tools("clock", "ok"), tools("read_file", "denied")), (1.0, 1.0));
    let llm = |outcome| value(&metrics, "ctxd_llm_requests_total", &[("provider", "mock"), ("outcome", outcome)]);
    // Two calls per tool turn (the call, then the answer), and /fail-once's failure and retry.
    assert_eq!((llm("ok"), llm("transient_error")), (5.0, 1.0));
    assert_eq!(value(&metrics, "ctxd_llm_retries_total", &[]), 1.0);
    let to_transient = [("from", "AWAITING_LLM_RESPONSE"), ("to", "TRANSIENT_FAILURE")];
    assert_eq!(value(&metrics, "ctxd_transitions_total", &to_transient), 1.0);
    // The three replies with text (a reply that only asks for a tool has no first token).
    assert_eq!(observations(&metrics, "ctxd_llm_time_to_first_token_seconds", &[]), 3.0);
    assert!(value(&metrics, "ctxd_llm_tokens_total", &[("kind", "completion")]) > 0.0);
    assert!(observations(&metrics, "ctxd_save_duration_seconds", &[]) > 0.0);
    assert!(observations(&metrics, "ctxd_saves_per_write", &[]) > 0.0);
    assert_eq!(value(&metrics, "ctxd_contexts_loaded", &[]), 1.0);
    assert_eq!(value(&metrics, "ctxd_runs_active", &[]), 0.0, "every run has ended");
    for figure in ["process_resident_memory_bytes", "process_open_fds", "process_threads"] {
        assert!(value(&metrics, figure, &[]) > 0.0, "{figure}");
    }
    assert_eq!(matching(&metrics, "process_cpu_seconds_total", &[]).count(), 1, "CPU time (whole seconds)");
    for figure in ["ctxd_rocksdb_memtable_bytes", "ctxd_rocksdb_wal_bytes", "ctxd_rocksdb_estimated_keys"] {
        assert!(value(&metrics, figure, &[]) > 0.0, "{figure}");
    }

    // One save per "auto-saved" line: exact, however transitions shared saves.
    let saves = value(&metrics, "ctxd_saves_total", &[]);
    let lines = server.log_matching(&["auto-saved"], saves as usize).await;
    assert_eq!(lines.len() as f64, saves, "{}", server.log());

    drop(events);
    let closed = async {
        while value(&scrape(&server).await, "ctxd_watch_streams", &[("grpc_method", "WatchState")]) != 0.0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, closed).await.expect("a closed stream leaves the gauge");
}

#[tokio::test]
async fn the_metrics_port_serves_no_api_and_the_api_port_no_metrics_and_off_opens_none() {
    let server = Server::start(0, &["--metrics-listen", "127.0.0.1:0"]).await;
    let metrics_addr = server.metrics_addr.expect("a metrics listener");
    let (status, body) = http_get(server.addr, "/metrics").await;
    assert!(status != 200 || !body.contains("# TYPE"), "the API port serves no metrics: {status} {body}");
    let channel = tonic::transport::Channel::from_shared(format!("http://{metrics_addr}")).expect("uri");
    let api_on_metrics = match channel.connect().await {
        Ok(channel) => pb::context_service_client::ContextServiceClient::new(channel)
            .list_tools(pb::ListToolsRequest {})
            .await
            .map(drop),
        Err(error) => Err(tonic::Status::unavailable(error.to_string())),
    };
    assert!(api_on_metrics.is_err(), "the metrics port serves no API");
    let (status, _) = http_get(metrics_addr, "/anything-else").await;
    assert_eq!(status, 404);

    // A browser's call (grpc-web over HTTP/1.1) is counted as the method it calls.
    let http1 = HttpClient::builder(TokioExecutor::new()).build_http::<tonic_web::GrpcWebCall<tonic::body::Body>>();
    let web = tower::ServiceBuilder::new().layer(tonic_web::GrpcWebClientLayer::new()).service(http1);
    let origin = format!("http://{}", server.addr).parse().expect("uri");
    let mut web_client = pb::context_service_client::ContextServiceClient::with_origin(web, origin);
    web_client.list_tools(pb::ListToolsRequest {}).await.expect("grpc-web call");
    let labels = [("grpc_type", "unary"), ("grpc_method", "ListTools"), ("grpc_code", "OK")];
    assert_eq!(value(&scrape(&server).await, "grpc_server_handled_total", &labels), 1.0);

    let off = Server::start(0, &["--metrics-listen", "off"]).await;
    assert!(off.metrics_addr.is_none());
    assert_eq!(off.log_matching(&["metrics off"], 1).await.len(), 1);
    assert!(!off.log().contains("metrics listening"), "{}", off.log());
}

#[tokio::test]
async fn json_logs_carry_the_same_fields_one_object_a_line() {
    let server = Server::start(0, &["--log-format", "json"]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "json").await;
    let done = send(&mut client, &id, "hello").await;
    let revision = done.revision.to_string();
    let saved = server.log_matching(&["auto-saved", &id, &format!("\"revision\":{revision}")], 1).await;
    assert_eq!(saved.len(), 1, "{}", server.log());
    for line in server.log_lines().iter().filter(|l| l.starts_with('{')) {
        let object: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(object["message"].is_string() && object["level"].is_string(), "{line}");
    }
    let line: serde_json::Value = serde_json::from_str(&saved[0]).expect("json");
    assert_eq!((line["context"].as_str(), line["to"].as_str()), (Some(id.as_str()), Some("IDLE")), "{line}");
    assert_eq!(line["revision"].as_u64(), Some(done.revision));
}

/// The span of an RPC continues the caller's `traceparent`; the run it starts is a span
/// inside it, and the run's LLM call and saves are spans inside the run.
#[tokio::test]
async fn a_turn_is_traced_from_the_callers_traceparent_through_its_llm_call() {
    let collector = ctxd_tests::otlp::OtlpCollector::start().await;
    let endpoint = collector.endpoint();
    let server = Server::start_with_env(
        0,
        &["--otlp-endpoint", &endpoint, "--metrics-listen", "127.0.0.1:0", "--log-format", "json"],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;
    let mut client = server.client().await;
    let id = create(&mut client, "traced").await;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(send_request(&id, "hello tracing", true));
    request.metadata_mut().insert("traceparent", format!("00-{TRACE}-{CALLER}-01").parse().expect("header"));
    let done = client.send_message(request).await.expect("send").into_inner().state.expect("state");
    assert_eq!(state_of(&done), FsmState::Idle);
    let mut request = tonic::Request::new(send_request(&id, "/tool clock {}", true));
    request.metadata_mut().insert("traceparent", format!("00-{TRACE}-{CALLER}-01").parse().expect("header"));
    client.send_message(request).await.expect("send a tool call");

    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let ours = |spans: &[ctxd_tests::otlp::Received], name: &str| {
        spans.iter().find(|s| s.span.name == name && hex(&s.span.trace_id) == TRACE).cloned()
    };
    let spans = collector
        .wait_for(|spans| {
            // The tool call's run ends (and is exported) after the tool call: wait for it too.
            let tools_run = ours(spans, "tool_call").is_some_and(|tool| {
                spans.iter().any(|s| s.span.name == "run" && s.span.span_id == tool.span.parent_span_id)
            });
            tools_run
                && ["ctxd.v1.ContextService/SendMessage", "run", "llm_call", "save"]
                    .iter()
                    .all(|n| ours(spans, n).is_some())
        })
        .await;
    let rpc = ours(&spans, "ctxd.v1.ContextService/SendMessage").expect("the RPC's span");
    assert_eq!(hex(&rpc.span.parent_span_id), CALLER, "the RPC continues the caller's trace");
    assert_eq!(rpc.attribute("context_id"), Some(id.clone()));
    assert_eq!(rpc.attribute("rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(rpc.resource_attribute("service.name").as_deref(), Some("ctxd"));

    let run = ours(&spans, "run").expect("the run's span");
    assert_eq!(run.span.parent_span_id, rpc.span.span_id, "the run belongs to the action that started it");
    let llm = ours(&spans, "llm_call").expect("the LLM call's span");
    assert_eq!(llm.span.parent_span_id, run.span.span_id, "the LLM call is inside the run");
    assert_eq!(
        (llm.attribute("llm.model").as_deref(), llm.attribute("outcome").as_deref()),
        (Some("mock"), Some("ok"))
    );
    assert!(llm.attribute("llm.time_to_first_token_ms").is_some(), "{llm:?}");
    let tool = ours(&spans, "tool_call").expect("the tool call's span");
    assert_eq!((tool.attribute("tool").as_deref(), tool.attribute("outcome").as_deref()), (Some("clock"), Some("ok")));
    assert!(spans.iter().any(|s| s.span.name == "run" && s.span.span_id == tool.span.parent_span_id), "inside a run");
    let saves = spans.iter().filter(|s| s.span.name == "save" && hex(&s.span.trace_id) == TRACE).count();
    assert!(saves >= 2, "the action's save and the run's: {saves}");
    let save = ours(&spans, "save").expect("a save's span");
    assert!(save.attribute("bytes").and_then(|b| b.parse::<u64>().ok()).is_some_and(|b| b > 0), "{save:?}");
    assert!(save.attribute("transitions").is_some(), "{save:?}");

    // The run's log lines name its trace.
    let saved = server.log_matching(&["auto-saved", &id, TRACE], 1).await;
    let line: serde_json::Value = serde_json::from_str(&saved[0]).expect("json");
    assert_eq!(line["span"]["trace_id"].as_str(), Some(TRACE), "{line}");
    assert_eq!(line["context"].as_str(), Some(id.as_str()));

    // Every span the collector holds was counted as exported, and as ended before that.
    // (The exporter counts a batch once the collector has answered for it.)
    let received = collector.spans().len() as f64;
    let counted = async {
        loop {
            let metrics = scrape(&server).await;
            if value(&metrics, "ctxd_trace_spans_exported_total", &[]) >= received {
                return metrics;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let metrics = tokio::time::timeout(PATIENCE, counted).await.expect("the exported spans are counted");
    let exported = value(&metrics, "ctxd_trace_spans_exported_total", &[]);
    assert!(value(&metrics, "ctxd_trace_spans_ended_total", &[]) >= exported);
    assert_eq!(value(&metrics, "ctxd_trace_spans_failed_total", &[]), 0.0);
}
