//! One port, many peers: grpc-web over HTTP/1.1 (unary and streaming), CORS preflight,
//! reflection (v1 and v1alpha), health, static files, `buf curl`, and a clean shutdown.

use bytes::Bytes;
use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use pb::context_service_client::ContextServiceClient;
use tokio::io::AsyncBufReadExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn grpc_web_over_http1_serves_unary_calls_and_watch_streams() {
    let server = Server::start(1, &[]).await;
    let http1 = HttpClient::builder(TokioExecutor::new()).build_http::<tonic_web::GrpcWebCall<tonic::body::Body>>();
    let web = tower::ServiceBuilder::new().layer(tonic_web::GrpcWebClientLayer::new()).service(http1);
    let origin = format!("http://{}", server.addr).parse().expect("uri");
    let mut web_client = ContextServiceClient::with_origin(web, origin);

    let created = web_client
        .create_context(pb::CreateContextRequest { title: "from a browser".into(), ..Default::default() })
        .await
        .expect("unary call over grpc-web")
        .into_inner()
        .state
        .expect("state");
    let id = created.context_id.clone();
    let mut events = web_client
        .watch_state(pb::WatchStateRequest { context_id: id.clone(), from_revision: 0, message_limit: 0 })
        .await
        .expect("streaming call over grpc-web")
        .into_inner();
    let mut native = server.client().await;
    send(&mut native, &id, "hello from native gRPC").await;

    let mut folded = Folded::default();
    let read = async {
        while let Some(event) = events.message().await.expect("stream") {
            folded.apply(&event).expect("consistent");
            if folded.state.as_ref().is_some_and(|s| state_of(s) == pb::FsmState::Idle && s.messages.len() == 2) {
                return;
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.expect("in time");
    assert_eq!(folded.state, Some(get(&mut native, &id).await), "the grpc-web watcher sees the native client's turn");

    let missing = web_client
        .get_state(pb::GetStateRequest { context_id: uuid::Uuid::new_v4().to_string(), ..Default::default() })
        .await;
    assert_eq!(missing.expect_err("unknown").code(), tonic::Code::NotFound, "statuses survive grpc-web");
}

#[tokio::test]
async fn cors_lets_configured_origins_call_and_read_the_grpc_status() {
    let server = Server::start(0, &["--cors-origins", "http://localhost:5173,https://app.example"]).await;
    let url = format!("http://{}/ctxd.v1.ContextService/GetState", server.addr);
    let preflight = |origin: &str| {
        http::Request::builder()
            .method("OPTIONS")
            .uri(&url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web,x-user-agent")
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let http1 = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let allowed = http1.request(preflight("https://app.example")).await.expect("preflight");
    let header = |response: &http::Response<_>, name: &str| {
        response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    assert_eq!(header(&allowed, "access-control-allow-origin"), "https://app.example");
    assert!(header(&allowed, "access-control-allow-headers").contains("x-grpc-web"));
    let refused = http1.request(preflight("https://evil.example")).await.expect("preflight");
    assert_eq!(header(&refused, "access-control-allow-origin"), "", "other origins get no CORS grant");

    // The call itself: an empty GetStateRequest in one grpc-web frame.
    let call = http::Request::builder()
        .method("POST")
        .uri(&url)
        .header("origin", "http://localhost:5173")
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("request");
    let response = http1.request(call).await.expect("grpc-web call");
    assert_eq!(header(&response, "access-control-allow-origin"), "http://localhost:5173");
    let exposed = header(&response, "access-control-expose-headers");
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
    // An error with no messages comes "trailers-only": the status is in the headers.
    let status = header(&response, "grpc-status");
    let body = response.into_body().collect().await.expect("body").to_bytes();
    let trailers = String::from_utf8_lossy(&body);
    assert!(status == "3" || trailers.contains("grpc-status:3"), "INVALID_ARGUMENT: {status:?} {trailers:?}");
}

#[tokio::test]
async fn reflection_lists_the_services_and_health_reports_serving() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha;

    let server = Server::start(0, &[]).await;
    let channel = server.endpoint().connect().await.expect("connect");

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.expect("response").and_then(|r| r.message_response)
    else {
        panic!("a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in ["ctxd.v1.ContextService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == service), "{service} missing from {names:?}");
    }

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "ctxd.v1.ContextService".into(),
        )),
    };
    let mut responses = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection v1alpha (grpcurl's)")
        .into_inner();
    let response = responses.message().await.expect("response").and_then(|r| r.message_response);
    assert!(
        matches!(response, Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{response:?}"
    );

    let mut health = HealthClient::new(channel);
    for service in ["", "ctxd.v1.ContextService"] {
        let status =
            health.check(HealthCheckRequest { service: service.into() }).await.expect("health").into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}

#[tokio::test]
async fn buf_curl_drives_ctxd_through_reflection_alone() {
    let server = Server::start(0, &[]).await;
    let buf = |args: &[&str]| {
        let mut command = std::process::Command::new("npm");
        command.args(["exec", "--yes", "--package=@bufbuild/buf@1.75.0", "--", "buf", "curl"]).args(args);
        command
    };
    let url = format!("http://{}", server.addr);
    let output =
        buf(&["--protocol", "grpc", "--http2-prior-knowledge", "--list-methods", &url]).output().expect("buf curl");
    let methods = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(methods.contains("ctxd.v1.ContextService/SendMessage"), "{methods}");

    let create = format!("{url}/ctxd.v1.ContextService/CreateContext");
    let output = buf(&["--protocol", "grpc", "--http2-prior-knowledge", "-d", r#"{"title": "via buf curl"}"#, &create])
        .output()
        .expect("buf curl");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let id = reply["state"]["contextId"].as_str().expect("contextId").to_owned();

    // grpc-web too, with a streaming call that ends when the context is deleted.
    let watch = format!("{url}/ctxd.v1.ContextService/WatchState");
    let body = format!(r#"{{"context_id": "{id}"}}"#);
    let mut watcher = tokio::process::Command::from(buf(&["--protocol", "grpcweb", "-d", &body, &watch]))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("watch");
    let mut lines = tokio::io::BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    let mut printed = String::new();
    for needle in ["snapshot", "contextDeleted"] {
        let read = async {
            while let Some(line) = lines.next_line().await.expect("stdout") {
                printed.push_str(&line);
                if line.contains(needle) {
                    return;
                }
            }
            panic!("buf curl ended before printing {needle}: {printed}");
        };
        tokio::time::timeout(PATIENCE, read).await.expect("in time");
        if needle == "snapshot" {
            let mut client = server.client().await;
            client.delete_context(pb::DeleteContextRequest { context_id: id.clone() }).await.expect("delete");
        }
    }
    let status = tokio::time::timeout(PATIENCE, watcher.wait()).await.expect("buf curl ends").expect("wait");
    assert!(status.success(), "the stream ended cleanly after contextDeleted");
}

#[tokio::test]
async fn static_files_share_the_port_and_shutdown_ends_streams_cleanly() {
    let web = tempfile::tempdir().expect("web dir");
    std::fs::write(web.path().join("index.html"), "<!doctype html><title>ctxd</title>").expect("fixture");
    std::fs::write(web.path().join("app.js"), "console.log('hi')").expect("fixture");
    let mut server = Server::start(0, &["--web-dir", web.path().to_str().expect("utf-8")]).await;

    let http1 = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let get_path = |path: &str| {
        let uri: http::Uri = format!("http://{}{path}", server.addr).parse().expect("uri");
        http1.get(uri)
    };
    for (path, expected) in
        [("/", "<title>ctxd</title>"), ("/app.js", "console.log"), ("/c/some-context", "<title>ctxd</title>")]
    {
        let response = get_path(path).await.expect("http get");
        assert_eq!(response.status(), 200, "{path}");
        let body = response.into_body().collect().await.expect("body").to_bytes();
        assert!(String::from_utf8_lossy(&body).contains(expected), "{path}");
    }

    let mut client = server.client().await;
    let id = create(&mut client, "shutdown").await;
    let mut events = client
        .watch_state(pb::WatchStateRequest { context_id: id, from_revision: 0, message_limit: 0 })
        .await
        .expect("watch")
        .into_inner();
    events.message().await.expect("stream").expect("snapshot");
    let mut list = client.watch_contexts(pb::WatchContextsRequest::default()).await.expect("watch list").into_inner();
    list.message().await.expect("stream").expect("reset");

    let mut health = HealthClient::new(server.endpoint().connect().await.expect("connect"))
        .watch(HealthCheckRequest { service: "ctxd.v1.ContextService".into() })
        .await
        .expect("health watch")
        .into_inner();
    let first = health.message().await.expect("health").expect("status").status;
    assert_eq!(first, ServingStatus::Serving as i32);
    let not_serving = tokio::spawn(async move {
        let next = health.message().await.expect("health").expect("status").status;
        next == ServingStatus::NotServing as i32
    });

    let status = server.terminate().await;
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    assert!(not_serving.await.expect("task"), "health turned NOT_SERVING during shutdown");
    assert!(matches!(events.message().await, Ok(None)), "the watch stream ended cleanly");
    assert!(!matches!(list.message().await, Ok(Some(_))), "the list stream ended");
}
