//! Reaching the cluster: credentials the way NATS clients take them, waiting while it is not
//! up, and the streams ctxd needs, created when missing and checked when present.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType, Stream};
use async_nats::jetstream::{self, context::GetStreamErrorKind};
use async_nats::{ConnectOptions, ServerAddr};

use super::layout::Layout;
use super::unavailable;
use crate::store::error::{Error, Result};

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
}

/// Shown without the password and the token, so options printed anywhere never leak them.
impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<hidden>");
        f.debug_struct("NatsOptions")
            .field("urls", &self.urls)
            .field("creds", &self.creds)
            .field("nkey_file", &self.nkey_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .field("prefix", &self.prefix)
            .field("replicas", &self.replicas)
            .finish()
    }
}

impl NatsOptions {
    /// Servers to reach without credentials or TLS (a cluster on loopback, as in tests).
    pub fn plain(urls: Vec<String>, prefix: &str, replicas: usize) -> Self {
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
        }
    }
}

/// Between attempts while the cluster is not reachable.
const RETRY: Duration = Duration::from_secs(1);

/// Connects and gets the log, tree and contexts streams, waiting (with a log line a second)
/// while the cluster cannot be reached or has no JetStream quorum yet. A stream configured
/// differently from what ctxd was told (e.g. its replicas) is an error, not a wait.
pub async fn until_ready(
    options: &NatsOptions,
    layout: &Layout,
) -> Result<(async_nats::Client, jetstream::Context, [Stream; 3])> {
    let mut attempt = 0u64;
    loop {
        match ready(options, layout).await {
            Ok(ready) => {
                tracing::info!(servers = %options.urls.join(","), prefix = %options.prefix, replicas = options.replicas, "NATS JetStream store ready");
                return Ok(ready);
            }
            Err(error @ Error::Misconfigured(_)) => return Err(error),
            Err(error) => {
                attempt += 1;
                tracing::warn!(servers = %options.urls.join(","), %error, attempt, "waiting for the NATS cluster; retrying in 1 s");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn ready(
    options: &NatsOptions,
    layout: &Layout,
) -> Result<(async_nats::Client, jetstream::Context, [Stream; 3])> {
    let addrs = options
        .urls
        .iter()
        .map(|url| url.parse::<ServerAddr>().map_err(|e| Error::Misconfigured(format!("NATS server {url}: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    let mut connect = ConnectOptions::new()
        .name("ctxd")
        .connection_timeout(Duration::from_secs(2))
        // Once connected, a lost server is reconnected to forever; calls fail meanwhile.
        .max_reconnects(None);
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
    let js = jetstream::new(client.clone());
    let log = Config {
        name: layout.log_stream(),
        subjects: vec![layout.log_subjects()],
        // A delete rolls the context's log up into its tombstone.
        allow_rollup: true,
        ..base(options.replicas)
    };
    let tree = Config {
        name: layout.tree_stream(),
        subjects: vec![layout.tree_subjects()],
        max_messages_per_subject: 1,
        ..base(options.replicas)
    };
    let contexts = Config {
        name: layout.contexts_stream(),
        subjects: vec![layout.contexts_subjects()],
        max_messages_per_subject: 1,
        ..base(options.replicas)
    };
    let streams = [ensure(&js, log).await?, ensure(&js, tree).await?, ensure(&js, contexts).await?];
    Ok((client, js, streams))
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
            if have.subjects != want.subjects || have.max_messages_per_subject != want.max_messages_per_subject {
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
