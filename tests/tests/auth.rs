//! Authentication, tenants and scopes against the real binary: every RPC with every kind of
//! credential, tenants kept apart, keys rotating without a restart, per-tenant limits and
//! workspaces, and the refusal to serve a network without authentication.

use std::path::Path;
use std::time::Duration;

use ctxd_tests::credentials::{AUDIENCE, Credentials, sha256_hex, start_with_auth, token};
use ctxd_tests::tokens::{self, ED25519_ONE, ED25519_TWO, authorized, bearer};
use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use serde_json::json;
use tonic::{Code, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    CreateContext,
    GetState,
    ListContexts,
    UpdateContext,
    SendMessage,
    ApproveTools,
    CancelRun,
    RetryRun,
    SubmitToolResult,
    ListTools,
    WatchState,
    WatchContexts,
    ForkContext,
    EditMessage,
    RegenerateReply,
    SwitchBranch,
    ListMessages,
    DeleteContext,
}

/// Every RPC of ContextService; DeleteContext last, so the context lives through the table.
const EVERY_RPC: [Rpc; 18] = [
    Rpc::CreateContext,
    Rpc::GetState,
    Rpc::ListContexts,
    Rpc::UpdateContext,
    Rpc::SendMessage,
    Rpc::ApproveTools,
    Rpc::CancelRun,
    Rpc::RetryRun,
    Rpc::SubmitToolResult,
    Rpc::ListTools,
    Rpc::WatchState,
    Rpc::WatchContexts,
    Rpc::ForkContext,
    Rpc::EditMessage,
    Rpc::RegenerateReply,
    Rpc::SwitchBranch,
    Rpc::ListMessages,
    Rpc::DeleteContext,
];

impl Rpc {
    fn reads_only(self) -> bool {
        matches!(
            self,
            Rpc::GetState
                | Rpc::ListContexts
                | Rpc::ListTools
                | Rpc::WatchState
                | Rpc::WatchContexts
                | Rpc::ListMessages
        )
    }

    /// Whether it works on one context named in the request (rather than the caller's own).
    fn names_a_context(self) -> bool {
        !matches!(self, Rpc::CreateContext | Rpc::ListContexts | Rpc::ListTools | Rpc::WatchContexts)
    }

    /// Calls it on context `id` with `authorization: <auth>`.
    async fn call(self, client: &mut Client, id: &str, auth: Option<&str>) -> Result<(), Status> {
        let id = id.to_owned();
        match self {
            Rpc::CreateContext => {
                let request = pb::CreateContextRequest { title: "table".into(), ..Default::default() };
                client.create_context(authorized(request, auth)).await.map(drop)
            }
            Rpc::GetState => {
                let request = pb::GetStateRequest { context_id: id, ..Default::default() };
                client.get_state(authorized(request, auth)).await.map(drop)
            }
            Rpc::ListContexts => {
                client.list_contexts(authorized(pb::ListContextsRequest::default(), auth)).await.map(drop)
            }
            Rpc::UpdateContext => {
                let request =
                    pb::UpdateContextRequest { context_id: id, title: Some("renamed".into()), ..Default::default() };
                client.update_context(authorized(request, auth)).await.map(drop)
            }
            Rpc::SendMessage => client.send_message(authorized(send_request(&id, "hi", true), auth)).await.map(drop),
            Rpc::ApproveTools => {
                let request = pb::ApproveToolsRequest {
                    context_id: id,
                    approved_tool_call_ids: vec!["call_x".into()],
                    ..Default::default()
                };
                client.approve_tools(authorized(request, auth)).await.map(drop)
            }
            Rpc::CancelRun => {
                let request = pb::CancelRunRequest { context_id: id, ..Default::default() };
                client.cancel_run(authorized(request, auth)).await.map(drop)
            }
            Rpc::RetryRun => {
                let request = pb::RetryRunRequest { context_id: id, ..Default::default() };
                client.retry_run(authorized(request, auth)).await.map(drop)
            }
            Rpc::SubmitToolResult => {
                let request = pb::SubmitToolResultRequest {
                    context_id: id,
                    tool_call_id: "call_x".into(),
                    outcome: Some(pb::submit_tool_result_request::Outcome::ResultJson("{}".into())),
                    ..Default::default()
                };
                client.submit_tool_result(authorized(request, auth)).await.map(drop)
            }
            Rpc::ListTools => client.list_tools(authorized(pb::ListToolsRequest {}, auth)).await.map(drop),
            Rpc::WatchState => {
                let request = pb::WatchStateRequest { context_id: id, from_revision: 0, message_limit: 0 };
                let mut stream = client.watch_state(authorized(request, auth)).await?.into_inner();
                stream.message().await.map(drop)
            }
            Rpc::WatchContexts => {
                let request = pb::WatchContextsRequest { page_size: 10 };
                let mut stream = client.watch_contexts(authorized(request, auth)).await?.into_inner();
                stream.message().await.map(drop)
            }
            Rpc::ForkContext => {
                let request = pb::ForkContextRequest { context_id: id, ..Default::default() };
                client.fork_context(authorized(request, auth)).await.map(drop)
            }
            // A message the context does not have: past authentication, the call is NOT_FOUND.
            Rpc::EditMessage => {
                let request = pb::EditMessageRequest {
                    context_id: id,
                    message_id: uuid::Uuid::new_v4().to_string(),
                    content: "edited".into(),
                    ..Default::default()
                };
                client.edit_message(authorized(request, auth)).await.map(drop)
            }
            Rpc::RegenerateReply => {
                let request = pb::RegenerateReplyRequest { context_id: id, wait: true, ..Default::default() };
                client.regenerate_reply(authorized(request, auth)).await.map(drop)
            }
            Rpc::SwitchBranch => {
                let message_id = uuid::Uuid::new_v4().to_string();
                let request = pb::SwitchBranchRequest { context_id: id, message_id, ..Default::default() };
                client.switch_branch(authorized(request, auth)).await.map(drop)
            }
            Rpc::ListMessages => {
                let request = pb::ListMessagesRequest { context_id: id, ..Default::default() };
                client.list_messages(authorized(request, auth)).await.map(drop)
            }
            Rpc::DeleteContext => {
                let request = pb::DeleteContextRequest { context_id: id };
                client.delete_context(authorized(request, auth)).await.map(drop)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    NoToken,
    Garbage,
    BadSignature,
    Expired,
    WrongAudience,
    OtherTenant,
    ReadOnly,
    Good,
}

impl Cell {
    /// What the call gets with this credential, on an idle context of tenant `acme`.
    fn expected(self, rpc: Rpc) -> Code {
        match self {
            Cell::NoToken | Cell::Garbage | Cell::BadSignature | Cell::Expired | Cell::WrongAudience => {
                Code::Unauthenticated
            }
            Cell::OtherTenant if rpc.names_a_context() => Code::NotFound,
            Cell::OtherTenant => Code::Ok,
            Cell::ReadOnly if rpc.reads_only() => Code::Ok,
            Cell::ReadOnly => Code::PermissionDenied,
            // Legal calls; those that need a run or a pending call in progress are refused as
            // illegal in an idle context, which shows they got past authentication.
            Cell::Good => match rpc {
                Rpc::ApproveTools | Rpc::CancelRun | Rpc::RetryRun | Rpc::SubmitToolResult => Code::FailedPrecondition,
                Rpc::EditMessage | Rpc::SwitchBranch => Code::NotFound,
                _ => Code::Ok,
            },
        }
    }

    fn authorization(self) -> Option<String> {
        let bearer = |token: String| Some(format!("Bearer {token}"));
        match self {
            Cell::NoToken => None,
            Cell::Garbage => Some("Bearer garbage".into()),
            Cell::BadSignature => bearer(tokens::hs256(
                "not the server's secret but just as long as it",
                &tokens::with(tokens::claims("acme"), json!({"aud": AUDIENCE})),
            )),
            Cell::Expired => bearer(token("acme", json!({"exp": tokens::now() - 600}))),
            Cell::WrongAudience => bearer(token("acme", json!({"aud": "someone-else"}))),
            Cell::OtherTenant => bearer(token("globex", json!({}))),
            Cell::ReadOnly => bearer(token("acme", json!({"scope": "openid ctxd:read"}))),
            Cell::Good => bearer(token("acme", json!({}))),
        }
    }
}

const EVERY_CELL: [Cell; 8] = [
    Cell::NoToken,
    Cell::Garbage,
    Cell::BadSignature,
    Cell::Expired,
    Cell::WrongAudience,
    Cell::OtherTenant,
    Cell::ReadOnly,
    Cell::Good,
];

#[tokio::test]
async fn every_rpc_answers_every_credential_as_it_should_and_refusals_change_nothing() {
    let credentials = Credentials::new();
    let server = start_with_auth(&credentials, 0, &["--metrics-listen", "127.0.0.1:0"]).await;
    let mut client = server.client().await;
    let good = token("acme", json!({}));
    let created = client
        .create_context(bearer(pb::CreateContextRequest { title: "acme's".into(), ..Default::default() }, &good))
        .await
        .expect("create with a good token")
        .into_inner()
        .state
        .expect("state");
    let id = created.context_id;
    let revision = |client: &mut Client| {
        let id = id.clone();
        let good = good.clone();
        let mut client = client.clone();
        async move {
            let request = bearer(pb::GetStateRequest { context_id: id, ..Default::default() }, &good);
            client.get_state(request).await.expect("get").into_inner().state.expect("state").revision
        }
    };
    let mut secrets = Vec::new();
    for rpc in EVERY_RPC {
        for cell in EVERY_CELL {
            let auth = cell.authorization();
            let before = revision(&mut client).await;
            let result = rpc.call(&mut client, &id, auth.as_deref()).await;
            let code = result.as_ref().map_or_else(Status::code, |()| Code::Ok);
            assert_eq!(code, cell.expected(rpc), "{rpc:?} with {cell:?}: {result:?}");
            if let (Err(status), Some(auth)) = (&result, &auth) {
                let token = auth.trim_start_matches("Bearer ");
                assert!(!status.message().contains(token), "{rpc:?} with {cell:?} echoed the token");
                if code == Code::Unauthenticated {
                    assert!(!status.message().is_empty(), "{rpc:?} with {cell:?} says why");
                }
                if code == Code::PermissionDenied {
                    assert!(status.message().contains("ctxd:write"), "{rpc:?}: {}", status.message());
                }
            }
            if cell != Cell::Good {
                assert_eq!(revision(&mut client).await, before, "{rpc:?} with {cell:?} changed the context");
            }
            if let Some(auth) = auth {
                secrets.push(auth.trim_start_matches("Bearer ").to_owned());
            }
        }
    }
    // Refusals are logged with their reason and never with the credential.
    let refused = server.log_matching(&["refused unauthenticated call", "reason=expired"], 1).await;
    assert!(!refused.is_empty(), "{}", server.log());
    let log = server.log();
    for secret in secrets.iter().filter(|s| s.len() > 10) {
        assert!(!log.contains(secret.as_str()), "the log holds a credential");
    }
    // ... and counted by reason: each RPC once with an expired token.
    let metrics = metrics::scrape(&server).await;
    let every = EVERY_RPC.len() as f64;
    assert_eq!(metrics::value(&metrics, "ctxd_auth_failures_total", &[("reason", "expired")]), every);
    assert_eq!(metrics::value(&metrics, "ctxd_auth_failures_total", &[("reason", "missing")]), every);
    let writes = EVERY_RPC.iter().filter(|rpc| !rpc.reads_only()).count() as f64;
    let denied = [("grpc_code", "PermissionDenied")];
    assert_eq!(metrics::value(&metrics, "grpc_server_handled_total", &denied), writes, "the read-only token's writes");
    // Health and reflection need no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.endpoint().connect().await.expect("c"));
    let serving = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
    assert!(serving.is_ok(), "{serving:?}");
}

#[tokio::test]
async fn tenants_are_apart_even_with_the_same_context_id() {
    let credentials = Credentials::new();
    let server = start_with_auth(&credentials, 0, &[]).await;
    let mut client = server.client().await;
    let (acme, globex) = (token("acme", json!({})), token("globex", json!({})));
    let id = uuid::Uuid::new_v4().to_string();
    let create =
        |title: &str| pb::CreateContextRequest { context_id: id.clone(), title: title.into(), ..Default::default() };

    // globex follows its list before anything happens.
    let watch = pb::WatchContextsRequest { page_size: 10 };
    let mut globex_list = client.watch_contexts(bearer(watch, &globex)).await.expect("watch list").into_inner();
    let first = globex_list.message().await.expect("stream").expect("first page");
    assert!(matches!(first.kind, Some(pb::watch_contexts_response::Kind::Reset(list)) if list.contexts.is_empty()));

    client.create_context(bearer(create("acme's"), &acme)).await.expect("acme creates the id");
    let again = client.create_context(bearer(create("acme's again"), &acme)).await.expect_err("taken in acme");
    assert_eq!(again.code(), Code::AlreadyExists);
    client.create_context(bearer(create("globex's"), &globex)).await.expect("globex creates the same id");
    send_as(&mut client, &acme, &id, "for acme only").await;

    let get = |token: &str| bearer(pb::GetStateRequest { context_id: id.clone(), ..Default::default() }, token);
    let seen_by_acme = client.get_state(get(&acme)).await.expect("get").into_inner().state.expect("state");
    let seen_by_globex = client.get_state(get(&globex)).await.expect("get").into_inner().state.expect("state");
    assert_eq!((seen_by_acme.title.as_str(), seen_by_acme.messages.len()), ("acme's", 2));
    assert_eq!((seen_by_globex.title.as_str(), seen_by_globex.messages.len()), ("globex's", 0));
    assert_eq!((seen_by_acme.created_by.as_str(), seen_by_globex.created_by.as_str()), ("user-acme", "user-globex"));

    // globex's list saw its own context only, and none of acme's changes.
    let next = tokio::time::timeout(PATIENCE, globex_list.message()).await.expect("an event").expect("stream");
    match next.and_then(|e| e.kind) {
        Some(pb::watch_contexts_response::Kind::Upserted(summary)) => assert_eq!(summary.title, "globex's"),
        other => panic!("globex saw {other:?}"),
    }
    let quiet = tokio::time::timeout(Duration::from_millis(300), globex_list.message()).await;
    assert!(quiet.is_err(), "globex's list saw acme's changes: {quiet:?}");
    let listed = client.list_contexts(bearer(pb::ListContextsRequest::default(), &acme)).await.expect("list");
    let titles: Vec<_> = listed.into_inner().contexts.into_iter().map(|c| c.title).collect();
    assert_eq!(titles, ["acme's"]);

    // Deleting globex's leaves acme's, which globex can no longer reach at all.
    let delete = pb::DeleteContextRequest { context_id: id.clone() };
    client.delete_context(bearer(delete, &globex)).await.expect("globex deletes its own");
    let gone = client.get_state(get(&globex)).await.expect_err("globex's is gone");
    assert_eq!(gone.code(), Code::NotFound);
    let watch = pb::WatchStateRequest { context_id: id.clone(), from_revision: 0, message_limit: 0 };
    let other = client.watch_state(bearer(watch, &globex)).await.expect_err("acme's is not globex's");
    assert_eq!(other.code(), Code::NotFound);
    assert_eq!(other.message(), gone.message(), "another tenant's context looks exactly like no context");
    client.get_state(get(&acme)).await.expect("acme's is still there");
}

async fn send_as(client: &mut Client, token: &str, id: &str, text: &str) -> pb::ContextState {
    let request = bearer(send_request(id, text, true), token);
    client.send_message(request).await.expect("send").into_inner().state.expect("state")
}

/// Calls ListContexts with `token` until `ok` holds for the result (files are re-read within
/// a second of a change).
async fn until_listing(client: &mut Client, token: &str, ok: impl Fn(&Result<(), Status>) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let result = client.list_contexts(bearer(pb::ListContextsRequest::default(), token)).await.map(drop);
        if ok(&result) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {result:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn jwks_and_api_keys_are_re_read_without_a_restart() {
    let credentials = Credentials::new();
    let server = start_with_auth(&credentials, 0, &[]).await;
    let mut client = server.client().await;
    let claims = tokens::with(tokens::claims("acme"), json!({"aud": AUDIENCE}));
    let (old, new) = (tokens::eddsa(ED25519_ONE, "one", &claims), tokens::eddsa(ED25519_TWO, "two", &claims));
    let accepted = |r: &Result<(), Status>| r.is_ok();
    let refused = |r: &Result<(), Status>| matches!(r, Err(s) if s.code() == Code::Unauthenticated);
    until_listing(&mut client, &old, accepted).await;
    until_listing(&mut client, &new, refused).await;

    // The provider rotates: key two is published, key one withdrawn.
    std::fs::write(credentials.path("jwks.json"), tokens::jwks(&[(ED25519_TWO, "two")])).expect("rotate");
    until_listing(&mut client, &new, accepted).await;
    until_listing(&mut client, &old, refused).await;
    // A key id that is published but a signature by another key is a bad signature.
    let forged = tokens::eddsa(ED25519_ONE, "two", &claims);
    let bad = client.list_contexts(bearer(pb::ListContextsRequest::default(), &forged)).await.expect_err("forged");
    assert!(bad.message().contains("signature"), "{}", bad.message());

    // A broken file keeps the last good keys in force.
    std::fs::write(credentials.path("jwks.json"), "{ not json").expect("break");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    until_listing(&mut client, &new, accepted).await;
    server.log_matching(&["JWKS file changed but cannot be used"], 1).await;

    // An API key added to the file works once the file is re-read; removed, it stops.
    let key = "ctxd_a-test-key-that-nobody-else-knows";
    let refused_key = client.list_contexts(bearer(pb::ListContextsRequest::default(), key)).await;
    assert_eq!(refused_key.expect_err("not yet").code(), Code::Unauthenticated);
    let line = format!("acme ctxd:read {}\n", sha256_hex(key));
    std::fs::write(credentials.path("api-keys"), &line).expect("add key");
    until_listing(&mut client, key, accepted).await;
    let create = pb::CreateContextRequest::default();
    let denied = client.create_context(bearer(create, key)).await.expect_err("read-only key");
    assert_eq!(denied.code(), Code::PermissionDenied);
    std::fs::write(credentials.path("api-keys"), "# revoked\n").expect("revoke");
    until_listing(&mut client, key, refused).await;
}

#[tokio::test]
async fn api_key_new_prints_a_key_and_the_line_that_grants_it() {
    let output = std::process::Command::new(binary())
        .args(["api-key", "new", "--tenant", "acme", "--scope", "ctxd:read", "--scope", "ctxd:write"])
        .output()
        .expect("run ctxd api-key new");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let [key, line] = stdout.lines().collect::<Vec<_>>()[..] else { panic!("two lines expected: {stdout}") };
    assert!(key.starts_with("ctxd_") && line.starts_with("acme ctxd:read,ctxd:write "), "{stdout}");
    assert!(!line.contains(key), "the file holds the key's hash, not the key");

    let credentials = Credentials::new();
    std::fs::write(credentials.path("api-keys"), format!("# acme's CI\n{line}\n")).expect("keys");
    let server = start_with_auth(&credentials, 0, &[]).await;
    let mut client = server.client().await;
    let created = client.create_context(bearer(pb::CreateContextRequest::default(), key)).await.expect("create");
    let state = created.into_inner().state.expect("state");
    assert!(state.created_by.starts_with("api-key:") && !key.contains(&state.created_by[8..]), "{}", state.created_by);
    let sent = send_as(&mut client, key, &state.context_id, "hello").await;
    assert_eq!(sent.messages.len(), 2);
    assert!(!server.log().contains(key), "the key is never logged");

    let bad = std::process::Command::new(binary())
        .args(["api-key", "new", "--tenant", "../etc"])
        .output()
        .expect("run ctxd api-key new");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a valid tenant name"));
}

/// Runs ctxd with `args` until it prints its listening line (Ok) or exits (Err, with stderr).
async fn launch(args: &[&str]) -> Result<String, (Option<i32>, String)> {
    let data = tempfile::tempdir().expect("data dir");
    let mut child = tokio::process::Command::new(binary())
        .args(args)
        .args(["--data-dir", data.path().to_str().expect("utf-8"), "--metrics-listen", "off"])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = String::new();
    let outcome = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("ctxd listening on") {
                return true;
            }
        }
        false
    })
    .await
    .expect("ctxd starts or exits");
    if outcome {
        return Ok(seen);
    }
    let status = child.wait().await.expect("wait");
    Err((status.code(), seen))
}

#[tokio::test]
async fn a_network_address_without_authentication_is_refused_unless_overridden() {
    let (code, stderr) = launch(&["--listen", "0.0.0.0:0"]).await.expect_err("refused");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("without authentication") && stderr.contains("--insecure-no-auth"), "{stderr}");
    assert!(stderr.contains("--api-keys-file") && stderr.contains("--jwt-jwks-file"), "says how: {stderr}");

    let log = launch(&["--listen", "0.0.0.0:0", "--insecure-no-auth"]).await.expect("overridden");
    assert!(log.contains("WARN") && log.contains("authentication off"), "{log}");

    let credentials = Credentials::new();
    let mut args: Vec<String> = vec!["--listen".into(), "0.0.0.0:0".into()];
    args.extend(credentials.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = launch(&args).await.expect("with authentication");
    assert!(log.contains("authentication on"), "{log}");

    // A credential file that cannot be used stops the start, saying which.
    std::fs::write(credentials.path("secret"), "short\n").expect("secret");
    let (code, stderr) = launch(&args).await.expect_err("a short secret");
    assert_ne!(code, Some(0));
    assert!(stderr.contains("at least 32"), "{stderr}");
}

#[tokio::test]
async fn contexts_saved_without_authentication_belong_to_the_default_tenant() {
    let mut server = Server::start(0, &[]).await;
    let mut client = server.client().await;
    let id = create(&mut client, "from before").await;
    send(&mut client, &id, "hello").await;
    server.terminate().await;

    let credentials = Credentials::new();
    let data = server.data_dir().to_owned();
    let server = restart_with_auth(&credentials, &data).await;
    let mut client = server.client().await;
    let get = |token: &str| bearer(pb::GetStateRequest { context_id: id.clone(), ..Default::default() }, token);
    let refused = client.get_state(tonic::Request::new(pb::GetStateRequest::default())).await;
    assert_eq!(refused.expect_err("no token").code(), Code::Unauthenticated);
    let state = client.get_state(get(&token("default", json!({})))).await.expect("default's").into_inner();
    assert_eq!(state.state.expect("state").messages.len(), 2, "nothing was lost");
    let other = client.get_state(get(&token("acme", json!({})))).await.expect_err("not acme's");
    assert_eq!(other.code(), Code::NotFound);
}

/// A second server on `data` (a copy, so the first one's temp dir may go) with auth on.
async fn restart_with_auth(credentials: &Credentials, data: &Path) -> Server {
    let copy = tempfile::tempdir().expect("copy");
    let status =
        std::process::Command::new("cp").arg("-a").arg(format!("{}/.", data.display())).arg(copy.path()).status();
    assert!(status.expect("cp").success());
    let args = credentials.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_on(copy, 0, &args, &[]).await
}

#[tokio::test]
async fn per_tenant_limits_refuse_with_resource_exhausted() {
    let credentials = Credentials::new();
    let limits = ["--max-active-runs-per-tenant", "1", "--max-contexts-per-tenant", "2"];
    let server = start_with_auth(&credentials, 200, &limits).await;
    let mut client = server.client().await;
    let (acme, globex) = (token("acme", json!({})), token("globex", json!({})));
    let create = |client: &mut Client, token: &str| {
        let mut client = client.clone();
        let token = token.to_owned();
        async move { client.create_context(bearer(pb::CreateContextRequest::default(), &token)).await }
    };
    let first = create(&mut client, &acme).await.expect("first").into_inner().state.expect("s").context_id;
    let second = create(&mut client, &acme).await.expect("second").into_inner().state.expect("s").context_id;
    let third = create(&mut client, &acme).await.expect_err("a third context");
    assert_eq!(third.code(), Code::ResourceExhausted);
    assert!(third.message().contains("acme") && third.message().contains("2 contexts"), "{}", third.message());
    let other = create(&mut client, &globex).await.expect("globex has its own count");
    let other = other.into_inner().state.expect("s").context_id;

    // One run at a time for acme: a second is refused and changes nothing.
    client.send_message(bearer(send_request(&first, "a long answer please", false), &acme)).await.expect("run");
    let busy = client.send_message(bearer(send_request(&second, "me too", false), &acme)).await.expect_err("busy");
    assert_eq!(busy.code(), Code::ResourceExhausted);
    assert!(busy.message().contains("runs in progress"), "{}", busy.message());
    let untouched =
        client.get_state(bearer(pb::GetStateRequest { context_id: second.clone(), ..Default::default() }, &acme));
    let untouched = untouched.await.expect("get").into_inner().state.expect("state");
    assert_eq!((untouched.revision, untouched.messages.len()), (1, 0));
    // globex is not held back by acme's run.
    send_as(&mut client, &globex, &other, "hi").await;
    // Once acme's run ends, its next one starts.
    let mut as_acme = server.client_as(&acme).await;
    wait_until(&mut as_acme, &first, |s| state_of(s) == pb::FsmState::Idle).await;
    send_as(&mut client, &acme, &second, "now me").await;

    // Deleting a context makes room for another.
    client.delete_context(bearer(pb::DeleteContextRequest { context_id: first }, &acme)).await.expect("delete");
    create(&mut client, &acme).await.expect("room again");
}

#[tokio::test]
async fn file_tools_work_in_the_tenants_own_directory() {
    let credentials = Credentials::new();
    let workspace = tempfile::tempdir().expect("workspace");
    let ws = workspace.path().to_str().expect("utf-8");
    let server = start_with_auth(&credentials, 0, &["--workspace", ws]).await;
    let client = server.client().await;
    let (acme, globex) = (token("acme", json!({})), token("globex", json!({})));
    let run_tool = |token: String, command: &'static str| {
        let mut client = client.clone();
        async move {
            let created = client.create_context(bearer(pb::CreateContextRequest::default(), &token)).await;
            let id = created.expect("create").into_inner().state.expect("state").context_id;
            let asked = send_as(&mut client, &token, &id, command).await;
            let call = asked.pending_tool_calls[0].id.clone();
            let approve = pb::ApproveToolsRequest {
                context_id: id.clone(),
                approved_tool_call_ids: vec![call],
                wait: true,
                ..Default::default()
            };
            let done = client.approve_tools(bearer(approve, &token)).await.expect("approve").into_inner();
            let state = done.state.expect("state");
            text(&state.messages[state.messages.len() - 1])
        }
    };
    let wrote = run_tool(acme.clone(), r#"/tool write_file {"path": "plan.txt", "content": "acme's plan"}"#).await;
    assert!(wrote.contains("wrote 11 bytes"), "{wrote}");
    assert_eq!(std::fs::read_to_string(workspace.path().join("acme/plan.txt")).expect("written"), "acme's plan");
    let listed = run_tool(globex.clone(), r#"/tool list_dir {}"#).await;
    assert!(!listed.contains("plan.txt"), "globex sees acme's files: {listed}");
    let read = run_tool(globex, r#"/tool read_file {"path": "../acme/plan.txt"}"#).await;
    assert!(!read.contains("acme's plan"), "globex read acme's file: {read}");
    let read = run_tool(acme, r#"/tool read_file {"path": "plan.txt"}"#).await;
    assert!(read.contains("acme's plan"), "{read}");
}
