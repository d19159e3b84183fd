//! Reaching the cluster: credentials the way NATS clients take them, waiting while it is not
//! up, the servers' version, and the streams ctxd needs, created when missing and checked
//! when present.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, Republish, StorageType, Stream};
use async_nats::jetstream::{self, context::GetStreamErrorKind};
use async_nats::{ConnectOptions, Event, ServerAddr};
use tokio::sync::broadcast;

use super::layout::{self, Layout, StoredLayout};
use super::unavailable;
use crate::store::codec;
use crate::store::error::{Error, Result};

/// The oldest nats-server ctxd runs on: atomic batches (2.12) that may carry message ids
/// (2.12.1); direct gets in batches and per-message TTLs (2.11) came before.
pub const MIN_SERVER: (u64, u64, u64) = (2, 12, 1);

/// How to reach the cluster and where ctxd's data is in it.
#[derive(Clone)]
pub struct NatsOptions {
    /// Servers to try, `nats://` or `tls://`.
    pub urls: Vec<String>,
    /// A `.creds` file (JWT and NKey seed).
    pub creds: Option<PathBuf>,
    /// A file holding an NKey seed.
    pub nkey_file: Option<PathBuf>,
    /// CA certificate (PEM) of the servers; set, TLS is required.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for servers that verify clients.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Names every stream and subject, so that several deployments share a cluster.
    pub prefix: String,
    /// How many servers hold each stream.
    pub replicas: usize,
    /// How many partition streams contexts are hashed over, when they are made.
    pub partitions: u32,
    /// Opened beside layout-1 streams under the same prefix (by `ctxd migrate`, copying
    /// them); a node refuses to.
    pub beside_layout_1: bool,
}

impl NatsOptions {
    /// The servers as logs and messages show them: without a user and password a URL may
    /// carry (`nats://user:secret@host:4222`, which the client takes as credentials).
    pub fn shown_urls(&self) -> String {
        shown_urls(&self.urls)
    }
}

/// `urls`, comma-separated, each without the credentials it may carry.
pub fn shown_urls(urls: &[String]) -> String {
    let shown = urls.iter().map(|url| {
        let Some((scheme, rest)) = url.split_once("://") else { return url.clone() };
        let authority = rest.split('/').next().unwrap_or(rest);
        match authority.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://<hidden>@{host}{}", &rest[authority.len()..]),
            None => url.clone(),
        }
    });
    shown.collect::<Vec<_>>().join(",")
}

/// Shown without the password, the token and credentials in URLs, so options printed
/// anywhere never leak them.
impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<hidden>");
        f.debug_struct("NatsOptions")
            .field("urls", &self.shown_urls())
            .field("creds", &self.creds)
            .field("nkey_file", &self.nkey_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .field("prefix", &self.prefix)
            .field("replicas", &self.replicas)
            .field("partitions", &self.partitions)
            .field("beside_layout_1", &self.beside_layout_1)
            .finish()
    }
}

impl NatsOptions {
    /// Servers to reach without credentials or TLS (a cluster on loopback, as in tests).
    pub fn plain(urls: Vec<String>, prefix: &str, replicas: usize, partitions: u32) -> Self {
        Self {
            urls,
            creds: None,
            nkey_file: None,
            tls_ca: None,
            tls_client: None,
            user: None,
            password: None,
            token: None,
            prefix: prefix.to_owned(),
            replicas,
            partitions,
            beside_layout_1: false,
        }
    }
}

/// Between attempts while the cluster is not reachable.
const RETRY: Duration = Duration::from_secs(1);

/// What connecting gives: the connection, the layout, the partition streams, and a signal at
/// each reconnect.
pub struct Ready {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub layout: Layout,
    pub streams: Vec<Stream>,
    pub reconnects: broadcast::Sender<()>,
}

/// Connects and gets the partition streams, waiting (with a log line a second) while the
/// cluster cannot be reached or has no JetStream quorum yet. A server too old, or a stream
/// configured differently from what ctxd was told (e.g. its replicas), is an error, not a
/// wait.
pub async fn until_ready(options: &NatsOptions) -> Result<Ready> {
    let mut attempt = 0u64;
    loop {
        match ready(options).await {
            Ok(ready) => {
                tracing::info!(servers = %options.shown_urls(), prefix = %options.prefix, replicas = options.replicas, partitions = ready.layout.partitions, "NATS JetStream store ready");
                return Ok(ready);
            }
            Err(error @ Error::Misconfigured(_)) => return Err(error),
            Err(error) => {
                attempt += 1;
                tracing::warn!(servers = %options.shown_urls(), %error, attempt, "waiting for the NATS cluster; retrying in 1 s");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Connects once (a lost server is reconnected to forever afterwards), with a signal at
/// each reconnect.
pub async fn client(options: &NatsOptions) -> Result<(async_nats::Client, broadcast::Sender<()>)> {
    let addrs = options
        .urls
        .iter()
        .map(|url| {
            let shown = shown_urls(std::slice::from_ref(url));
            url.parse::<ServerAddr>().map_err(|e| Error::Misconfigured(format!("NATS server {shown}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut connect = ConnectOptions::new()
        .name("ctxd")
        .connection_timeout(Duration::from_secs(2))
        // Once connected, a lost server is reconnected to forever; calls fail meanwhile.
        .max_reconnects(None);
    let reconnects = broadcast::channel(4).0;
    let signal = reconnects.clone();
    connect = connect.event_callback(move |event| {
        let signal = signal.clone();
        async move {
            if matches!(event, Event::Connected) {
                let _ = signal.send(());
            }
        }
    });
    if let Some(path) = &options.creds {
        connect = connect
            .credentials_file(path)
            .await
            .map_err(|e| Error::Misconfigured(format!("NATS credentials {}: {e}", path.display())))?;
    }
    if let (Some(user), Some(password)) = (&options.user, &options.password) {
        connect = connect.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &options.token {
        connect = connect.token(token.clone());
    }
    if let Some(path) = &options.nkey_file {
        let seed = std::fs::read_to_string(path)
            .map_err(|e| Error::Misconfigured(format!("NATS NKey seed file {}: {e}", path.display())))?;
        connect = connect.nkey(seed.trim().to_owned());
    }
    if let Some(ca) = &options.tls_ca {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &options.tls_client {
        connect = connect.add_client_certificate(cert.clone(), key.clone());
    }
    let client = connect.connect(addrs).await.map_err(unavailable)?;
    Ok((client, reconnects))
}

async fn ready(options: &NatsOptions) -> Result<Ready> {
    let (client, reconnects) = client(options).await?;
    check_version(&client.server_info().version)?;
    let js = jetstream::new(client.clone());
    if !options.beside_layout_1 {
        refuse_layout_1(&js, &options.prefix).await?;
    }
    let layout = agree_on_layout(&js, options).await?;
    let streams = futures::future::try_join_all((0..layout.partitions).map(|p| {
        let (source, destination) = layout.republish(p);
        let config = Config {
            name: layout.stream(p),
            subjects: vec![layout.subjects(p)],
            max_messages_per_subject: 1,
            allow_atomic_publish: true,
            allow_message_ttl: true,
            allow_direct: true,
            republish: Some(Republish { source, destination, headers_only: false }),
            ..base(options.replicas)
        };
        ensure(&js, config)
    }))
    .await?;
    Ok(Ready { client, js, layout, streams, reconnects })
}

/// Refuses a server older than [`MIN_SERVER`] (a version it does not report counts as old).
fn check_version(version: &str) -> Result<()> {
    let mut parts = version.split(['.', '-', '+']).map(|p| p.parse::<u64>().ok());
    let have = (parts.next().flatten(), parts.next().flatten(), parts.next().flatten());
    let (major, minor, patch) = MIN_SERVER;
    match have {
        (Some(a), Some(b), Some(c)) if (a, b, c) >= MIN_SERVER => Ok(()),
        _ => Err(Error::Misconfigured(format!(
            "nats-server {version} is too old: ctxd needs {major}.{minor}.{patch} or later (atomic batch publish); `make setup` installs 2.15.1"
        ))),
    }
}

/// Data saved in layout 1 (a log stream and a tree derived from it) is not read by this
/// version: refuse to start beside it rather than serve as if it were not there.
async fn refuse_layout_1(js: &jetstream::Context, prefix: &str) -> Result<()> {
    let old = format!("{prefix}_log");
    match js.get_stream(&old).await {
        Ok(_) => Err(Error::Misconfigured(format!(
            "stream {old} holds ctxd data in the previous NATS layout (layout 1); this version stores contexts in partition streams. With every ctxd node stopped, copy it in place: `ctxd migrate --from URLS --to URLS` (the same NATS URLs and --nats-prefix), which deletes the old streams once every context is copied and checked; then start the nodes"
        ))),
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(ref js) if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) => {
            Ok(())
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// The layout the cluster's streams were made with: written by the first node to start (if
/// none is), read by every other; a node told another number of partitions refuses to start.
async fn agree_on_layout(js: &jetstream::Context, options: &NatsOptions) -> Result<Layout> {
    let mut layout = Layout { prefix: options.prefix.clone(), partitions: options.partitions };
    let config = Config {
        name: layout.layout_stream(),
        subjects: vec![layout.layout_subject()],
        max_messages_per_subject: 1,
        ..base(options.replicas)
    };
    let stream = ensure(js, config).await?;
    let want = StoredLayout { version: layout::VERSION, partitions: options.partitions };
    let publish = async_nats::jetstream::message::PublishMessage::build()
        .payload(codec::encode(&want).into())
        .expected_last_subject_sequence(0);
    // Refused if another node wrote it first: what it wrote is read below either way.
    if let Ok(ack) = js.send_publish(layout.layout_subject(), publish).await {
        let _ = ack.await;
    }
    let stored = stream.get_last_raw_message_by_subject(&layout.layout_subject()).await.map_err(unavailable)?;
    let have: StoredLayout = codec::decode("layout", &stored.payload)?;
    if have.version != layout::VERSION {
        return Err(Error::Misconfigured(format!(
            "the NATS streams of prefix {} are in layout {}; this ctxd reads layout {}",
            options.prefix,
            have.version,
            layout::VERSION
        )));
    }
    if have.partitions != options.partitions {
        return Err(Error::Misconfigured(format!(
            "the NATS streams of prefix {} were made with {} partitions, and this node was started with --nats-partitions {}; partitions are fixed when the streams are made",
            options.prefix, have.partitions, options.partitions
        )));
    }
    layout.partitions = have.partitions;
    Ok(layout)
}

fn base(replicas: usize) -> Config {
    Config {
        storage: StorageType::File,
        num_replicas: replicas,
        discard: DiscardPolicy::Old,
        duplicate_window: Duration::from_secs(120),
        // No limit (the server's own spelling of it, so that a check compares like with like).
        max_messages_per_subject: -1,
        ..Default::default()
    }
}

/// The stream as configured, created if missing; refused if it exists configured otherwise.
async fn ensure(js: &jetstream::Context, want: Config) -> Result<Stream> {
    match js.get_stream(&want.name).await {
        Ok(mut stream) => {
            let have = &stream.info().await.map_err(unavailable)?.config;
            if have.num_replicas != want.num_replicas {
                return Err(Error::Misconfigured(format!(
                    "stream {} has {} replicas, and ctxd was started with --nats-replicas {}; change one of them (`nats stream edit`) rather than have ctxd change it silently",
                    want.name, have.num_replicas, want.num_replicas
                )));
            }
            if have.subjects != want.subjects
                || have.max_messages_per_subject != want.max_messages_per_subject
                || have.allow_atomic_publish != want.allow_atomic_publish
                || have.allow_message_ttl != want.allow_message_ttl
            {
                return Err(Error::Misconfigured(format!(
                    "stream {} exists with subjects {:?} and {} messages a subject; ctxd needs {:?} and {}: is --nats-prefix shared with something else?",
                    want.name,
                    have.subjects,
                    have.max_messages_per_subject,
                    want.subjects,
                    want.max_messages_per_subject
                )));
            }
            Ok(stream)
        }
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(ref js) if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            let name = want.name.clone();
            let stream = js.create_stream(want).await.map_err(unavailable)?;
            tracing::info!(stream = %name, "created stream");
            Ok(stream)
        }
        Err(e) => Err(unavailable(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::{check_version, shown_urls};

    #[test]
    fn credentials_in_server_urls_are_never_shown() {
        let urls = ["nats://alice:s3@cret@n1:4222", "tls://token@n2:4222", "nats://n3:4222"].map(String::from);
        let shown = shown_urls(&urls);
        assert_eq!(shown, "nats://<hidden>@n1:4222,tls://<hidden>@n2:4222,nats://n3:4222");
        assert!(!shown.contains("cret") && !shown.contains("token"));
    }

    #[test]
    fn servers_older_than_2_12_1_are_refused() {
        for ok in ["2.12.1", "2.15.1", "2.12.10", "3.0.0", "2.13.0-beta.2"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for old in ["2.9.10", "2.11.9", "2.12.0", "2.12", "", "dev"] {
            let error = check_version(old).expect_err(old).to_string();
            assert!(error.contains("too old") && error.contains("2.12.1"), "{error}");
        }
    }
}
