//! Harness for black-box tests: starts the real `ctxd` binary on a free loopback port with
//! a temporary data dir, and gives tests a real gRPC client.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctxd_proto::v1 as pb;
use ctxd_proto::v1::context_service_client::ContextServiceClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use ctxd_proto::v1;

pub mod credentials;
pub mod fake_openai;
mod fold;
pub mod metrics;
pub mod nats;
pub mod otlp;
pub mod tls;
pub mod tokens;
pub use fold::Folded;

pub type Client = ContextServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call of a client that has a token, unless
/// the request already carries an authorization of its own.
#[derive(Clone, Default)]
pub struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0
            && !request.metadata().contains_key("authorization")
        {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How long a test waits for something the server should do quickly.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The `ctxd` binary of the same build profile (built by the test command), or `$CTXD_BIN`.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CTXD_BIN") {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps, other binaries in target/<profile>.
    let exe = std::env::current_exe().expect("executable path");
    let candidates: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(|dir| dir.join("ctxd")).collect();
    candidates.iter().find(|path| path.exists()).cloned().unwrap_or_else(|| {
        panic!("{} is missing: build it first (`cargo build -p ctxd`; the test command does)", candidates[0].display())
    })
}

/// Log lines kept (the most recent), so long benchmark runs do not hoard memory.
const LOG_LINES_KEPT: usize = 50_000;

pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    data_dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: Arc<Mutex<VecDeque<String>>>,
    /// From spawning the process to its "listening" line, for the last start.
    pub ready_after: Duration,
    /// Where the metrics listener is, when one was asked for (`--metrics-listen`).
    pub metrics_addr: Option<SocketAddr>,
    /// The bearer token `client()` sends with every call (none: no authorization header).
    pub token: Option<String>,
    /// The JetStream cluster holding the data, when the suites run on the NATS store.
    pub nats: Option<nats::NatsCluster>,
}

impl Server {
    /// Starts ctxd with the mock LLM at `mock_delay_ms` and extra flags.
    pub async fn start(mock_delay_ms: u64, extra: &[&str]) -> Self {
        Self::start_with_env(mock_delay_ms, extra, &[]).await
    }

    /// As `start`, with extra environment variables.
    pub async fn start_with_env(mock_delay_ms: u64, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on(tempfile::tempdir().expect("temp data dir"), mock_delay_ms, extra, env).await
    }

    /// As `start_with_env`, on a data dir that may already hold contexts.
    pub async fn start_on(
        data_dir: tempfile::TempDir,
        mock_delay_ms: u64,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut args: Vec<String> = vec!["--mock-delay-ms".into(), mock_delay_ms.to_string()];
        // Quick retries unless the caller chooses.
        if !extra.contains(&"--llm-retry-base-ms") {
            args.extend(["--llm-retry-base-ms".into(), "10".into()]);
        }
        // Many servers run at once: no metrics listener on the default port unless asked.
        if !extra.contains(&"--metrics-listen") {
            args.extend(["--metrics-listen".into(), "off".into()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        // The store under test, unless the test chose one.
        let nats = if nats::nats_under_test() && !extra.contains(&"--store") {
            let cluster = nats::NatsCluster::start(3).await;
            args.extend(["--store".into(), "nats".into(), "--nats-url".into(), cluster.urls()]);
            Some(cluster)
        } else {
            None
        };
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut server = Self {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            args,
            env,
            log: Arc::default(),
            ready_after: Duration::ZERO,
            metrics_addr: None,
            token: None,
            nats,
        };
        server.launch().await;
        server
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The command that starts ctxd on this server's data dir and a free port.
    pub fn command(&self) -> Command {
        let mut command = Command::new(binary());
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn launch(&mut self) {
        let started = std::time::Instant::now();
        let mut child = self.command().spawn().expect("spawn ctxd");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::clone(&self.log);
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = address_after(&line, "ctxd listening on ")
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(addr.to_owned());
                }
                let mut log = log.lock().expect("log");
                if log.len() == LOG_LINES_KEPT {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        // A JetStream cluster that has just started takes a while to place streams: ctxd waits
        // for it (and says so in its log), on a machine that runs other tests meanwhile.
        let on_nats = self.nats.is_some() || self.args.iter().any(|a| a == "nats");
        let patience = if on_nats { PATIENCE * 4 } else { PATIENCE };
        let addr = tokio::time::timeout(patience, ready_rx)
            .await
            .unwrap_or_else(|_| panic!("ctxd did not start; log:\n{}{}", self.log(), self.nats_logs()))
            .unwrap_or_else(|_| panic!("ctxd exited at start; log:\n{}", self.log()));
        self.ready_after = started.elapsed();
        self.addr = addr.parse().expect("listen address");
        // The metrics listener starts before the API's, so its line is already there.
        self.metrics_addr = self
            .log_lines()
            .iter()
            .rev()
            .find_map(|line| address_after(line, "metrics listening on ").and_then(|a| a.parse().ok()));
        self.child = Some(child);
    }

    fn nats_logs(&self) -> String {
        self.nats.as_ref().map(|n| format!("\nNATS:\n{}", n.logs())).unwrap_or_default()
    }

    pub async fn client(&self) -> Client {
        self.client_on(self.endpoint().connect().await.expect("connect"))
    }

    /// A client on `channel` (e.g. one with small flow-control windows), with this server's token.
    pub fn client_on(&self, channel: Channel) -> Client {
        client_with(channel, self.token.as_deref())
    }

    /// A client that sends `token` with every call.
    pub async fn client_as(&self, token: &str) -> Client {
        client_with(self.endpoint().connect().await.expect("connect"), Some(token))
    }

    pub fn endpoint(&self) -> tonic::transport::Endpoint {
        Channel::from_shared(format!("http://{}", self.addr)).expect("uri")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).expect("running")
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// The server's peak resident memory since start (or the last `reset_peak_rss`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    /// Starts a new peak-RSS measurement (Linux `clear_refs`).
    pub fn reset_peak_rss(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a /proc status field")
    }

    /// CPU time the server has used (user + system).
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(&self.pid().to_string())
    }

    /// Everything the server logged so far (the most recent lines).
    pub fn log(&self) -> String {
        self.log_lines().join("\n")
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log").iter().cloned().collect()
    }

    /// The log lines containing every one of `needles`, once there are at least `count`
    /// (the server writes its log from a thread of its own, a moment after the fact).
    pub async fn log_matching(&self, needles: &[&str], count: usize) -> Vec<String> {
        let matching = || -> Vec<String> {
            self.log_lines().into_iter().filter(|line| needles.iter().all(|n| line.contains(n))).collect()
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let lines = matching();
            if lines.len() >= count || tokio::time::Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then wait for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("pid").to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(status.success());
        tokio::time::timeout(PATIENCE, child.wait()).await.expect("ctxd stops after SIGTERM").expect("wait")
    }

    /// SIGKILL: no chance to save anything more.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.start_kill().expect("kill -9");
        child.wait().await.expect("wait");
    }

    /// Starts ctxd again on the same data dir (after terminate or kill9).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.log.lock().expect("log").push_back("---- restart ----".into());
        self.launch().await;
    }
}

/// A client of a ctxd this crate did not start, without credentials.
pub fn client_for(channel: Channel) -> Client {
    client_with(channel, None)
}

fn client_with(channel: Channel, token: Option<&str>) -> Client {
    let bearer = token.map(|token| format!("Bearer {token}").parse().expect("a header value"));
    ContextServiceClient::with_interceptor(channel, Bearer(bearer)).max_decoding_message_size(64 * 1024 * 1024)
}

/// The address a log line names after `marker`: a text line ends it with a space, a JSON
/// line with a quote.
fn address_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.split(marker).nth(1)?.split(|c: char| c.is_whitespace() || c == '"').next()
}

/// A workspace for the file tools holding `files` (name, text) at its root, where the one
/// tenant of a server without authentication finds them.
pub fn workspace_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let workspace = tempfile::tempdir().expect("workspace");
    for (name, text) in files {
        std::fs::write(workspace.path().join(name), text).expect("fixture");
    }
    workspace
}

/// Creates a context and returns its id.
pub async fn create(client: &mut Client, title: &str) -> String {
    let response = client
        .create_context(pb::CreateContextRequest { title: title.into(), ..Default::default() })
        .await
        .expect("create");
    response.into_inner().state.expect("state").context_id
}

pub async fn get(client: &mut Client, id: &str) -> pb::ContextState {
    client
        .get_state(pb::GetStateRequest { context_id: id.into(), ..Default::default() })
        .await
        .expect("get")
        .into_inner()
        .state
        .expect("state")
}

pub fn send_request(id: &str, content: &str, wait: bool) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        context_id: id.into(),
        content: content.into(),
        client_message_id: uuid::Uuid::new_v4().to_string(),
        expected_revision: None,
        wait,
        view: pb::StateView::Unspecified as i32,
        on_busy: pb::OnBusy::Unspecified as i32,
    }
}

/// An EditMessage of `message_id` to `content` that waits until the context rests.
pub fn edit_request(id: &str, message_id: &str, content: &str) -> pb::EditMessageRequest {
    pb::EditMessageRequest {
        context_id: id.into(),
        message_id: message_id.into(),
        content: content.into(),
        client_message_id: uuid::Uuid::new_v4().to_string(),
        wait: true,
        ..Default::default()
    }
}

/// The state with only the last `message_limit` messages of the active path.
pub async fn limited(client: &mut Client, id: &str, message_limit: u32) -> pb::ContextState {
    let request = pb::GetStateRequest { context_id: id.into(), message_limit, ..Default::default() };
    client.get_state(request).await.expect("get").into_inner().state.expect("state")
}

/// One ListPathMessages page: before `before` (empty: from the end), or where `token` says.
pub async fn page(client: &mut Client, id: &str, before: &str, size: i32, token: &str) -> pb::ListPathMessagesResponse {
    let request = pb::ListPathMessagesRequest {
        context_id: id.into(),
        before_message_id: before.into(),
        page_size: size,
        page_token: token.into(),
    };
    client.list_path_messages(request).await.expect("page").into_inner()
}

/// Every page from `first` (a page already read) back to the first message, joined oldest
/// first.
pub async fn back_to_the_start(
    client: &mut Client,
    id: &str,
    first: pb::ListPathMessagesResponse,
    size: i32,
) -> Vec<pb::Message> {
    let mut pages = vec![first.messages];
    let mut token = first.next_page_token;
    while !token.is_empty() {
        let next = page(client, id, "", size, &token).await;
        assert!(!next.messages.is_empty(), "a token leads to a page with messages");
        assert!(next.messages.len() <= size as usize);
        pages.push(next.messages);
        token = next.next_page_token;
    }
    pages.into_iter().rev().flatten().collect()
}

/// Sends a message and waits until the context rests.
pub async fn send(client: &mut Client, id: &str, content: &str) -> pb::ContextState {
    client.send_message(send_request(id, content, true)).await.expect("send").into_inner().state.expect("state")
}

/// Opens a WatchState stream of context `id` from `from_revision` (0: a snapshot first).
pub async fn watch(client: &mut Client, id: &str, from_revision: u64) -> tonic::Streaming<pb::WatchStateResponse> {
    client
        .watch_state(pb::WatchStateRequest { context_id: id.into(), from_revision, ..Default::default() })
        .await
        .expect("watch")
        .into_inner()
}

/// Watches the context until `done` holds for its state (folded from the events), and
/// returns that state.
pub async fn wait_until(client: &mut Client, id: &str, done: impl Fn(&pb::ContextState) -> bool) -> pb::ContextState {
    let watch = async {
        let mut stream = watch(client, id, 0).await;
        let mut folded = Folded::default();
        while let Some(event) = stream.message().await.expect("watch stream") {
            folded.apply(&event).expect("a consistent event");
            if let Some(state) = &folded.state
                && done(state)
            {
                return state.clone();
            }
        }
        panic!("watch ended before the condition held; last state: {:?}", folded.state);
    };
    tokio::time::timeout(PATIENCE, watch).await.expect("condition within the patience window")
}

pub fn state_of(state: &pb::ContextState) -> pb::FsmState {
    pb::FsmState::try_from(state.state).unwrap_or(pb::FsmState::Unspecified)
}

pub fn text(message: &pb::Message) -> String {
    message
        .content
        .iter()
        .filter_map(|part| match &part.part {
            Some(pb::content_part::Part::Text(text)) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

pub fn role(message: &pb::Message) -> pb::Role {
    pb::Role::try_from(message.role).unwrap_or(pb::Role::Unspecified)
}

pub fn status(message: &pb::Message) -> pb::MessageStatus {
    pb::MessageStatus::try_from(message.status).unwrap_or(pb::MessageStatus::Unspecified)
}

/// CPU time (user + system) of process `pid` ("self": this one).
pub fn cpu_time_of(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<u64> = after.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    // Linux reports CPU time in clock ticks of 1/100 s.
    Duration::from_millis(ticks * 10)
}
