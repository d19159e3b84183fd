//! Harness for black-box tests: starts the real `ctxd` binary on a free loopback port with
//! a temporary data dir, and gives tests a real gRPC client.

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
use tonic::transport::Channel;

pub use ctxd_proto::v1;

pub mod fake_openai;
mod fold;
pub use fold::Folded;

pub type Client = ContextServiceClient<Channel>;

/// How long a test waits for something the server should do quickly.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The `ctxd` binary next to the test executable (built by the test command), or `$CTXD_BIN`.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CTXD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join("ctxd");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p ctxd`; the test command does)",
        path.display()
    );
    path
}

pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    data_dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts ctxd with the mock LLM at `mock_delay_ms` and extra flags.
    pub async fn start(mock_delay_ms: u64, extra: &[&str]) -> Self {
        Self::start_with_env(mock_delay_ms, extra, &[]).await
    }

    /// As `start`, with extra environment variables.
    pub async fn start_with_env(mock_delay_ms: u64, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let data_dir = tempfile::tempdir().expect("temp data dir");
        let mut args: Vec<String> = vec!["--mock-delay-ms".into(), mock_delay_ms.to_string()];
        // Quick retries unless the test chooses.
        if !extra.contains(&"--llm-retry-base-ms") {
            args.extend(["--llm-retry-base-ms".into(), "10".into()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut server =
            Self { child: None, addr: SocketAddr::from(([127, 0, 0, 1], 0)), data_dir, args, env, log: Arc::default() };
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
        let mut child = self.command().spawn().expect("spawn ctxd");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::clone(&self.log);
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.split("ctxd listening on ").nth(1)
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(addr.split_whitespace().next().unwrap_or_default().to_owned());
                }
                log.lock().expect("log").push(line);
            }
        });
        let addr = tokio::time::timeout(PATIENCE, ready_rx)
            .await
            .unwrap_or_else(|_| panic!("ctxd did not start; log:\n{}", self.log()))
            .unwrap_or_else(|_| panic!("ctxd exited at start; log:\n{}", self.log()));
        self.addr = addr.parse().expect("listen address");
        self.child = Some(child);
    }

    pub async fn client(&self) -> Client {
        let channel = self.endpoint().connect().await.expect("connect");
        ContextServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024)
    }

    pub fn endpoint(&self) -> tonic::transport::Endpoint {
        Channel::from_shared(format!("http://{}", self.addr)).expect("uri")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).expect("running")
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
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
        self.log.lock().expect("log").push("---- restart ----".into());
        self.launch().await;
    }
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
        .get_state(pb::GetStateRequest { context_id: id.into() })
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
    }
}

/// Sends a message and waits until the context rests.
pub async fn send(client: &mut Client, id: &str, content: &str) -> pb::ContextState {
    client.send_message(send_request(id, content, true)).await.expect("send").into_inner().state.expect("state")
}

/// Watches the context until `done` holds for its state (folded from the events), and
/// returns that state.
pub async fn wait_until(client: &mut Client, id: &str, done: impl Fn(&pb::ContextState) -> bool) -> pb::ContextState {
    let watch = async {
        let mut stream = client
            .watch_state(pb::WatchStateRequest { context_id: id.into(), from_revision: 0 })
            .await
            .expect("watch")
            .into_inner();
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
