//! What an attack pass found, each as the attack itself against the real binary: a schema
//! that expands exponentially, JWT claims that failed open, streams that outlived their
//! credentials, DNS rebinding, forged log lines, static files followed out of their
//! directory, a keys file rewritten to the same size and time, and a log flood on demand.

use std::time::{Duration, Instant};

use ctxd_tests::credentials::{AUDIENCE, Credentials, sha256_hex, start_with_auth, token};
use ctxd_tests::tokens::{self, ED25519_ONE, HS256_SECRET, bearer};
use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// The attack pass's schema: `depth` levels of anyOf over two references to the next level
/// (under 2 KB at depth 20; each level doubles what a validator walks).
fn doubling(depth: usize) -> Value {
    let mut defs = serde_json::Map::new();
    for i in 0..depth {
        let next = format!("#/$defs/a{}", i + 1);
        defs.insert(format!("a{i}"), json!({"anyOf": [{"$ref": next}, {"$ref": next}]}));
    }
    defs.insert(format!("a{depth}"), json!({"type": "string"}));
    json!({"$defs": defs, "type": "object", "properties": {"v": {"$ref": "#/$defs/a0"}}})
}

fn tool_with(schema: &Value) -> pb::ContextConfig {
    let ext = pb::ExternalTool {
        name: "ext".into(),
        description: "an external tool".into(),
        parameters_json_schema: schema.to_string(),
        ..Default::default()
    };
    pb::ContextConfig { external_tools: vec![ext], ..Default::default() }
}

async fn create_with(client: &mut Client, config: pb::ContextConfig) -> Result<String, tonic::Status> {
    let request = pb::CreateContextRequest { config: Some(config), ..Default::default() };
    client.create_context(request).await.map(|r| r.into_inner().state.expect("state").context_id)
}

#[tokio::test]
async fn schemas_that_would_take_the_server_down_are_refused_and_checks_stay_bounded() {
    let server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    for depth in [20, 30] {
        let schema = doubling(depth);
        assert!(schema.to_string().len() < 2600, "a small schema");
        let refused = create_with(&mut client, tool_with(&schema)).await.expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains("expands to more than 10000 subschemas"), "{}", refused.message());
    }
    // UpdateContext checks the same way, and changes nothing.
    let id = create_with(&mut client, pb::ContextConfig::default()).await.expect("create");
    let update = pb::UpdateContextRequest {
        context_id: id.clone(),
        config: Some(tool_with(&doubling(20))),
        ..Default::default()
    };
    assert_eq!(client.update_context(update).await.expect_err("refused").code(), Code::InvalidArgument);
    assert!(get(&mut client, &id).await.config.expect("config").external_tools.is_empty());

    // Remote and file references are refused, and nothing is fetched.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let remote = format!("http://{}/schema.json", listener.local_addr().expect("addr"));
    for target in [remote.as_str(), "file:///etc/passwd", "other.json#/x"] {
        let schema = json!({"type": "object", "properties": {"v": {"$ref": target}}});
        let refused = create_with(&mut client, tool_with(&schema)).await.expect_err(target);
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains("only local references"), "{}", refused.message());
    }
    let fetched = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(fetched.is_err(), "the server connected to the schema's remote $ref");

    // The largest accepted shape of the attack still answers a bad call at once, with one
    // error, and costs the process nothing it keeps, while another context keeps answering.
    let id = create_with(&mut client, tool_with(&doubling(10))).await.expect("a bounded schema is accepted");
    let other = create_with(&mut client, pb::ContextConfig::default()).await.expect("create");
    let before = server.rss_kib();
    for _ in 0..20 {
        let state = send(&mut client, &id, r#"/tool ext {"v": 1}"#).await;
        let answer = state.messages.iter().rev().find(|m| role(m) == pb::Role::Tool).expect("a tool answer");
        let said = text(answer);
        assert!(answer.is_error && said.starts_with("invalid arguments"), "{said}");
        assert!(said.len() < 4096, "the first problem, not every one: {} bytes", said.len());
        assert_eq!(send(&mut client, &other, "still here?").await.messages.len() % 2, 0);
    }
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB over 20 bad calls");
}

#[tokio::test]
async fn configured_jwt_claims_are_required_and_scopes_must_be_strings() {
    let credentials = Credentials::new();
    let server = start_with_auth(&credentials, 0, &["--jwt-issuer", "https://id.example"]).await;
    let mut client = server.client().await;
    let signed = |claims: Value| tokens::hs256(HS256_SECRET, &claims);
    let good =
        json!({"tenant": "acme", "sub": "u", "exp": tokens::now() + 600, "iss": "https://id.example", "aud": AUDIENCE});
    let list = |token: String| bearer(pb::ListContextsRequest::default(), &token);

    assert!(client.list_contexts(list(signed(good.clone()))).await.is_ok());
    for (claim, changed) in [
        ("`iss`", tokens::with(good.clone(), json!({"iss": null}))),
        ("`aud`", tokens::with(good.clone(), json!({"aud": null}))),
        ("`iss`", {
            let mut claims = good.clone();
            claims["iss"] = Value::Null;
            claims
        }),
        ("`aud`", {
            let mut claims = good.clone();
            claims["aud"] = Value::Null;
            claims
        }),
    ] {
        let refused = client.list_contexts(list(signed(changed.clone()))).await.expect_err("refused");
        assert_eq!(refused.code(), Code::Unauthenticated, "{changed}");
        assert!(refused.message().contains(claim) && refused.message().contains("requires"), "{}", refused.message());
    }

    // A scope claim of any shape but a string or a list of strings is refused, not read as
    // "no restriction".
    for scope in [json!(null), json!(0), json!({}), json!([1]), json!(["ctxd:write", null]), json!(true)] {
        let claims = tokens::with(good.clone(), json!({}));
        let mut claims = claims;
        claims["scope"] = scope.clone();
        let refused = client.list_contexts(list(signed(claims))).await.expect_err("refused");
        assert_eq!(refused.code(), Code::Unauthenticated, "scope {scope}");
        assert!(refused.message().contains("`scope` claim must be"), "{}", refused.message());
    }
    let create = |token: String| bearer(pb::CreateContextRequest::default(), &token);
    for (claim, value, reads, writes) in [
        ("scope", json!([]), false, false),
        ("scope", json!(""), false, false),
        ("scope", json!(["ctxd:read"]), true, false),
        ("scp", json!(["ctxd:read", "ctxd:write"]), true, true),
        ("scp", json!("openid ctxd:read"), true, false),
        ("scope", json!("ctxd:write"), true, true),
    ] {
        let mut claims = good.clone();
        claims[claim] = value.clone();
        let token = signed(claims);
        let read = client.list_contexts(list(token.clone())).await;
        assert_eq!(read.is_ok(), reads, "{claim} {value}: {read:?}");
        let write = client.create_context(create(token)).await;
        assert_eq!(write.is_ok(), writes, "{claim} {value}: {write:?}");
        if let Err(denied) = write {
            assert_eq!(denied.code(), Code::PermissionDenied);
        }
    }
    // No scope claim at all: the documented default, read and write.
    assert!(client.create_context(create(signed(good))).await.is_ok());
}

/// Reads `stream` until it ends; the status it ended with and how many messages came first.
async fn end_of<T>(stream: &mut tonic::Streaming<T>) -> (Result<(), tonic::Status>, usize) {
    let mut seen = 0;
    loop {
        match tokio::time::timeout(PATIENCE, stream.message()).await.expect("the stream ends in time") {
            Ok(Some(_)) => seen += 1,
            Ok(None) => return (Ok(()), seen),
            Err(status) => return (Err(status), seen),
        }
    }
}

#[tokio::test]
async fn streams_end_when_their_credential_expires_or_is_revoked() {
    let credentials = Credentials::new();
    let key = "ctxd_a-key-for-the-stream-test";
    std::fs::write(credentials.path("api-keys"), format!("acme ctxd:read,ctxd:write {}\n", sha256_hex(key)))
        .expect("keys");
    // No clock-skew leeway, so a token's stream ends at its `exp`.
    let server = start_with_auth(&credentials, 0, &["--jwt-leeway-secs", "0"]).await;
    let mut client = server.client().await;
    let admin = token("acme", json!({}));
    let id = client
        .create_context(bearer(pb::CreateContextRequest::default(), &admin))
        .await
        .expect("create")
        .into_inner()
        .state
        .expect("state")
        .context_id;
    let watch_state = |token: &str| {
        bearer(pb::WatchStateRequest { context_id: id.clone(), from_revision: 0, message_limit: 0 }, token)
    };

    // An API key's streams end when its line leaves the keys file.
    let mut by_key = client.watch_state(watch_state(key)).await.expect("watch").into_inner();
    let mut list_by_key =
        client.watch_contexts(bearer(pb::WatchContextsRequest::default(), key)).await.expect("watch").into_inner();
    by_key.message().await.expect("stream").expect("snapshot");
    list_by_key.message().await.expect("stream").expect("reset");
    // A JWT whose `exp` is a few seconds away, and a JWKS-signed one whose key is withdrawn.
    let short = tokens::hs256(HS256_SECRET, &json!({"tenant": "acme", "aud": AUDIENCE, "exp": tokens::now() + 3}));
    let mut by_short = client.watch_state(watch_state(&short)).await.expect("watch").into_inner();
    by_short.message().await.expect("stream").expect("snapshot");
    let claims = tokens::with(tokens::claims("acme"), json!({"aud": AUDIENCE}));
    let signed = tokens::eddsa(ED25519_ONE, "one", &claims);
    let mut by_jwks = client.watch_state(watch_state(&signed)).await.expect("watch").into_inner();
    by_jwks.message().await.expect("stream").expect("snapshot");

    let (ended, _) = end_of(&mut by_short).await;
    let ended = ended.expect_err("ended with a status");
    assert_eq!(ended.code(), Code::Unauthenticated);
    assert!(ended.message().contains("expired"), "{}", ended.message());

    let revoked = Instant::now();
    std::fs::write(credentials.path("api-keys"), "# revoked\n").expect("revoke");
    // The context changes meanwhile: none of it may reach the revoked key's streams once
    // they end.
    send_as_admin(&mut client, &admin, &id).await;
    let (ended, _) = end_of(&mut by_key).await;
    assert_eq!(ended.expect_err("ended").code(), Code::Unauthenticated);
    let (ended, _) = end_of(&mut list_by_key).await;
    assert_eq!(ended.expect_err("ended").code(), Code::Unauthenticated);
    let took = revoked.elapsed();
    assert!(took < Duration::from_secs(5), "streams ended {took:?} after the key's revocation");

    std::fs::write(credentials.path("jwks.json"), tokens::jwks(&[(tokens::ED25519_TWO, "two")])).expect("rotate");
    let (ended, _) = end_of(&mut by_jwks).await;
    let ended = ended.expect_err("ended");
    assert_eq!(ended.code(), Code::Unauthenticated);
    assert!(ended.message().contains("signing key"), "{}", ended.message());

    // A stream whose credential stays good is not touched.
    let mut by_admin = client.watch_state(watch_state(&admin)).await.expect("watch").into_inner();
    by_admin.message().await.expect("stream").expect("snapshot");
    send_as_admin(&mut client, &admin, &id).await;
    by_admin.message().await.expect("stream").expect("an event");
}

async fn send_as_admin(client: &mut Client, admin: &str, id: &str) {
    client.send_message(bearer(send_request(id, "hello", true), admin)).await.expect("send");
}

/// Sends a raw HTTP/1.1 GET with `host` as its Host header; the status line and the body.
async fn get_with_host(server: &Server, path: &str, host: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// A client of `server` whose calls name `authority` (HTTP/2's :authority) instead of its address.
async fn client_for_host(server: &Server, authority: &str) -> Client {
    let channel =
        server.endpoint().origin(format!("http://{authority}").parse().expect("uri")).connect().await.expect("connect");
    client_for(channel)
}

#[tokio::test]
async fn without_authentication_only_loopback_and_allowed_hosts_are_answered() {
    let web = tempfile::tempdir().expect("web dir");
    std::fs::write(web.path().join("index.html"), "<title>ctxd</title>").expect("index");
    let web_dir = web.path().to_str().expect("utf-8");
    let server = Server::start(0, &["--web-dir", web_dir, "--allowed-hosts", "chat.example.com"]).await;
    let port = server.addr.port();

    // A page whose domain was rebound to 127.0.0.1 sends its own domain.
    let mut rebound = client_for_host(&server, &format!("evil.example:{port}")).await;
    let refused = rebound.list_contexts(pb::ListContextsRequest::default()).await.expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("--allowed-hosts"), "{}", refused.message());
    let refused = rebound.create_context(pb::CreateContextRequest::default()).await.expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let (status, body) = get_with_host(&server, "/", &format!("evil.example:{port}")).await;
    assert!(status.contains(" 403 "), "{status}");
    assert!(body.contains("--allowed-hosts"), "{body}");

    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), "chat.example.com".into()] {
        let (status, body) = get_with_host(&server, "/", &host).await;
        assert!(status.contains(" 200 ") && body.contains("<title>ctxd</title>"), "{host}: {status}");
        let mut client = client_for_host(&server, &host).await;
        client.list_contexts(pb::ListContextsRequest::default()).await.expect("answered");
    }
}

#[tokio::test]
async fn with_authentication_every_host_is_answered() {
    let credentials = Credentials::new();
    let server = start_with_auth(&credentials, 0, &[]).await;
    let mut client = client_for_host(&server, "chat.example.org").await;
    let token = token("acme", json!({}));
    client.list_contexts(bearer(pb::ListContextsRequest::default(), &token)).await.expect("answered");
}

#[tokio::test]
async fn client_strings_cannot_forge_log_lines_and_long_ids_are_cut() {
    let workspace = workspace_with(&[("notes.txt", "hello")]);
    let server = Server::start(0, &["--workspace", workspace.path().to_str().expect("utf-8")]).await;
    let mut client = server.client().await;
    let config = pb::ContextConfig { auto_approve_tools: vec!["read_file".into()], ..Default::default() };
    let id = create_with(&mut client, config).await.expect("create");
    // A path that ends the line and writes one of its own, in red.
    let forged = "2026-01-01T00:00:00.000000Z  INFO ctxd: forged";
    let path = format!("nope\\n{forged}\\u001b[31m");
    let state = send(&mut client, &id, &format!(r#"/tool read_file {{"path": "{path}"}}"#)).await;
    let answer = state.messages.iter().rev().find(|m| role(m) == pb::Role::Tool).expect("a tool answer");
    assert!(answer.is_error, "{}", text(answer));
    let lines = server.log_matching(&["tool call failed"], 1).await;
    assert_eq!(lines.len(), 1, "{}", server.log());
    assert!(lines[0].contains("\\n2026-01-01") && lines[0].contains("\\u{1b}[31m"), "escaped: {}", lines[0]);
    for line in server.log_lines() {
        assert!(!line.starts_with("2026-01-01"), "a forged line: {line}");
        assert!(!line.contains('\u{1b}'), "a raw escape: {line}");
    }

    // A 100 KB id is named in a short message.
    let long = "x".repeat(100_000);
    let refused =
        client.get_state(pb::GetStateRequest { context_id: long, ..Default::default() }).await.expect_err("not a UUID");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().len() < 300, "{} bytes", refused.message().len());
    assert!(refused.message().contains("(100000 bytes)"), "{}", refused.message());
}

#[tokio::test]
async fn static_files_never_follow_a_link_out_of_the_web_dir() {
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret.txt"), "the secret").expect("secret");
    let web = tempfile::tempdir().expect("web dir");
    std::fs::write(web.path().join("index.html"), "<title>ctxd</title>").expect("index");
    std::fs::write(web.path().join("app.js"), "console.log(1)").expect("app");
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), web.path().join("leak.txt")).expect("link");
    std::os::unix::fs::symlink(outside.path(), web.path().join("out")).expect("link");
    let server = Server::start(0, &["--web-dir", web.path().to_str().expect("utf-8")]).await;
    let host = format!("127.0.0.1:{}", server.addr.port());
    for path in ["/leak.txt", "/out/secret.txt", "/%6Ceak.txt"] {
        let (status, body) = get_with_host(&server, path, &host).await;
        assert!(status.contains(" 404 ") && !body.contains("the secret"), "{path}: {status} {body}");
    }
    let (status, body) = get_with_host(&server, "/app.js", &host).await;
    assert!(status.contains(" 200 ") && body.contains("console.log"), "{status}");
}

#[tokio::test]
async fn a_keys_file_rewritten_to_the_same_size_and_time_is_read_again() {
    let credentials = Credentials::new();
    let (old, new) = ("ctxd_the-old-key-0000000000000", "ctxd_the-new-key-1111111111111");
    let path = credentials.path("api-keys");
    std::fs::write(&path, format!("acme ctxd:read {}\n", sha256_hex(old))).expect("keys");
    let server = start_with_auth(&credentials, 0, &[]).await;
    let mut client = server.client().await;
    let list = |key: &str| bearer(pb::ListContextsRequest::default(), key);
    client.list_contexts(list(old)).await.expect("the old key works");

    // The operator swaps the line for another of the same length within the same second;
    // the file's time is even set back to what it was.
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).expect("mtime");
    std::fs::write(&path, format!("acme ctxd:read {}\n", sha256_hex(new))).expect("rotate");
    std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(modified)).expect("set mtime");
    assert_eq!(std::fs::metadata(&path).and_then(|m| m.modified()).expect("mtime"), modified);

    let deadline = Instant::now() + PATIENCE;
    while client.list_contexts(list(old)).await.is_ok() {
        assert!(Instant::now() < deadline, "the revoked key still works");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.list_contexts(list(new)).await.expect("the new key works");
}

#[tokio::test]
async fn refused_calls_are_counted_exactly_but_logged_at_most_once_a_second() {
    let credentials = Credentials::new();
    let server = start_with_auth(&credentials, 0, &["--metrics-listen", "127.0.0.1:0"]).await;
    let mut client = server.client().await;
    let started = Instant::now();
    for _ in 0..2000 {
        let refused = client.list_contexts(bearer(pb::ListContextsRequest::default(), "ctxd_unknown")).await;
        assert_eq!(refused.expect_err("refused").code(), Code::Unauthenticated);
    }
    let seconds = started.elapsed().as_secs() + 2;
    let scrape = metrics::scrape(&server).await;
    assert_eq!(metrics::value(&scrape, "ctxd_auth_failures_total", &[("reason", "unknown_api_key")]), 2000.0);
    // The first refusal is logged at once; the rest at most once a second, with a count.
    server.log_matching(&["refused unauthenticated call"], 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lines: Vec<String> =
        server.log_lines().into_iter().filter(|line| line.contains("refused unauthenticated call")).collect();
    assert!((lines.len() as u64) <= seconds, "{} lines in about {seconds} s", lines.len());
    assert!(!server.log().contains("ctxd_unknown"), "the credential is never logged");
}
