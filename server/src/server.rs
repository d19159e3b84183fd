//! Assembles the server: storage, runtime, gRPC, and a clean shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ctxd_proto::v1::context_service_server::ContextServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::api::{ContextApi, Limits};
use crate::auth::{AuthLayer, Authenticator, PeerKey};
use crate::cluster::{self, Cluster, ClusterOptions, Forwarder, Placement, Solo};
use crate::config::{Config, StoreKind};
use crate::http;
use crate::llm::{LlmProvider, LlmRouter, MockProvider, OpenAiConfig, OpenAiProvider};
use crate::runtime::{self, Contexts, Settings};
use crate::store::{self, Backend, Nats, Rocks};
use crate::telemetry::{self, Exporter};
use crate::tools::{InvalidTool, ToolLimits, ToolRegistry, Workspace};

/// How long shutdown waits for open calls once every context has stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Beyond two lease TTLs, how long a call waits for its context's node to be found again.
const FORWARD_PATIENCE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Http(#[from] crate::http::Error),
    #[error(transparent)]
    Tool(#[from] InvalidTool),
    #[error("cannot set up the LLM client: {0}")]
    LlmClient(#[from] reqwest::Error),
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error(transparent)]
    Metrics(#[from] telemetry::MetricsError),
    #[error("{0}")]
    Auth(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// The mock, plus the OpenAI-compatible provider when one is configured.
fn llm_router(config: &Config) -> Result<LlmRouter, Error> {
    let mock: Arc<dyn LlmProvider> =
        Arc::new(MockProvider { chunk_delay: config.mock_delay(), context_window: config.mock_context_window });
    let remote = match &config.openai_base_url {
        Some(base_url) => {
            let provider = OpenAiProvider::new(OpenAiConfig {
                base_url: base_url.clone(),
                api_key: Config::openai_api_key(),
                connect_timeout: Duration::from_millis(config.llm_connect_timeout_ms),
                idle_timeout: Duration::from_millis(config.llm_idle_timeout_ms),
            })?;
            tracing::info!(%base_url, models = ?config.openai_models, "OpenAI-compatible provider configured");
            Some((Arc::new(provider) as Arc<dyn LlmProvider>, config.openai_models.clone()))
        }
        None => None,
    };
    Ok(LlmRouter::new(mock, remote))
}

/// Installs the metrics recorder (with the process's and the store's figures) and serves it
/// on its own listener at `addr`.
async fn serve_metrics(
    addr: SocketAddr,
    store: &Arc<dyn Backend>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, Error> {
    let mut exporter = Exporter::install()?;
    let store = Arc::clone(store);
    exporter.collect_with(Arc::new(move || {
        for (name, value) in store.figures() {
            metrics::gauge!(name).set(value as f64);
        }
    }));
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr: addr.to_string(), source })?;
    let bound = listener.local_addr().map_err(|source| Error::Listen { addr: addr.to_string(), source })?;
    tracing::info!("metrics listening on {bound}");
    Ok(tokio::spawn(telemetry::serve(listener, exporter, stop)))
}

/// The configured engine, open (for NATS: once the cluster is reachable), and for NATS the
/// store again, which keeps the nodes' partition leases.
async fn open_store(config: &Config) -> Result<(Arc<dyn Backend>, Option<Arc<Nats>>), Error> {
    match config.store {
        StoreKind::Rocksdb => {
            let rocks = Rocks::open_dir(config.data_dir.clone(), config.sync_writes).await?;
            Ok((Arc::new(rocks), None))
        }
        StoreKind::Nats => {
            let nats = Arc::new(Nats::open(&config.nats_options()).await?);
            Ok((Arc::clone(&nats) as Arc<dyn Backend>, Some(nats)))
        }
    }
}

/// Which node runs each context: this one alone, or (on NATS) the one holding the lease of
/// its partition.
async fn placement(
    config: &Config,
    nats: Option<Arc<Nats>>,
    bound: SocketAddr,
    key: Option<Arc<PeerKey>>,
) -> Result<(Arc<dyn Placement>, Option<Arc<Forwarder>>), Error> {
    let Some(nats) = nats else { return Ok((Arc::new(Solo::new()), None)) };
    let node_id = config.node_id(bound.port());
    let lease_ttl = Duration::from_millis(config.lease_ttl_ms);
    let options = ClusterOptions {
        node_id: node_id.clone(),
        advertise: config.advertise_addr(bound)?,
        lease_ttl,
        prefix: config.nats_prefix.clone(),
        key: key.clone(),
    };
    let cluster = Cluster::join(nats, options).await?;
    let tls = match &config.peer_tls_ca {
        Some(ca) => Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem("peer-tls-ca", ca)?))),
        None => None,
    };
    // A call waits this long for a dead node's partition to be taken over: its heartbeats
    // stop for a TTL, then a survivor takes the partition.
    let forwarder = Forwarder::new(node_id, lease_ttl * 2 + FORWARD_PATIENCE, key, tls);
    Ok((Arc::new(cluster), Some(Arc::new(forwarder))))
}

/// A PEM file named by setting `what`.
fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Tls(format!("{what} {}: {e}", path.display())))
}

/// The API port's TLS, when `tls-cert` and `tls-key` are set.
fn server_tls(config: &Config) -> Result<Option<ServerTlsConfig>, Error> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else { return Ok(None) };
    let identity = Identity::from_pem(read_pem("tls-cert", cert)?, read_pem("tls-key", key)?);
    Ok(Some(ServerTlsConfig::new().identity(identity)))
}

/// Runs ctxd until `shutdown` completes, then stops accepting, lets every context finish
/// saving the transition it is in, and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let (store, js) = open_store(&config).await?;
    // Metrics before the runtime starts: what happens at start-up (runs resumed, contexts
    // loaded) counts too.
    let stop = CancellationToken::new();
    let metrics = match config.metrics_addr()? {
        Some(metrics_addr) => Some(serve_metrics(metrics_addr, &store, stop.clone()).await?),
        None => {
            tracing::info!("metrics off");
            None
        }
    };
    // Without authentication there is one tenant, and it has the whole workspace.
    let workspace = config.workspace.clone().map(|root| Workspace::new(root, config.auth_configured()));
    let tools = Arc::new(ToolRegistry::builtin(
        workspace,
        ToolLimits {
            timeout: Duration::from_millis(config.tool_timeout_ms),
            max_output_bytes: config.tool_max_output_bytes,
        },
    )?);
    let llm = Arc::new(llm_router(&config)?);
    let settings = Settings::from(&config);
    let router = Arc::clone(&llm);
    let limits = Limits {
        max_message_bytes: config.max_message_bytes,
        max_tool_output_bytes: config.tool_max_output_bytes,
        tool_names: tools.definitions().iter().map(|t| t.name.clone()).collect(),
        serves_model: Arc::new(move |model| router.serves(model)),
    };
    let catalog = tools.catalog();
    // Bound before the runtime starts: on a cluster the other nodes are told this address.
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen { addr: config.listen.to_string(), source })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen { addr: config.listen.to_string(), source })?;
    let peer_key = match &config.cluster_secret_file {
        Some(path) => Some(Arc::new(PeerKey::load(path).map_err(Error::Auth)?)),
        None => None,
    };
    let (placement, forwarder) = placement(&config, js, addr, peer_key.clone()).await?;
    let contexts = Contexts::start(store, llm, tools, settings, Arc::clone(&placement)).await?;
    cluster::sweep(&contexts).await?;

    let authenticator = Arc::new(Authenticator::start(&config, &stop).map_err(Error::Auth)?);
    let authenticator_on = authenticator.is_on();
    if authenticator_on {
        tracing::info!(
            hs256 = config.jwt_hs256_secret_file.is_some(),
            jwks = config.jwt_jwks_file.is_some(),
            api_keys = config.api_keys_file.is_some(),
            "authentication on: every call but health and reflection needs a bearer token"
        );
    } else if config.listen.ip().is_loopback() {
        tracing::info!("authentication off: listening on loopback only, as the default tenant");
    } else {
        tracing::warn!(
            listen = %config.listen,
            "authentication off (--insecure-no-auth): anyone who can reach the port reads and changes everything"
        );
    }

    // Small responses must leave at once: without TCP_NODELAY, Nagle's algorithm and the
    // peer's delayed ACKs add ~40 ms to a unary call.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    match config.store {
        StoreKind::Rocksdb => {
            tracing::info!(store = "rocksdb", data_dir = %config.data_dir.display(), sync_writes = config.sync_writes, "ctxd listening on {addr}");
        }
        StoreKind::Nats => {
            tracing::info!(store = "nats", prefix = %config.nats_prefix, replicas = config.nats_replicas, "ctxd listening on {addr}");
        }
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ContextServiceServer<ContextApi>>().await;
    let mut routes =
        Routes::new(ContextServiceServer::new(ContextApi::new(contexts.clone(), limits, catalog, forwarder)))
            .add_service(health_service);
    routes = http::add_reflection(routes)?;
    let routes = http::with_web(routes, AuthLayer::new(authenticator, peer_key), config.web_dir.as_deref());

    // Without authentication, only requests addressed to this server by a loopback name (or
    // an allowed host) are answered: a page whose domain is rebound to 127.0.0.1 is not.
    let hosts = (!authenticator_on).then(|| {
        let also: Vec<String> = [Some(addr.to_string()), config.advertise_addr.clone()].into_iter().flatten().collect();
        http::AllowedHostsLayer::new(http::AllowedHosts::new(&config.allowed_hosts, &also))
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = server_tls(&config)? {
        builder = builder.tls_config(tls).map_err(|e| Error::Tls(format!("tls-cert / tls-key: {e}")))?;
    }
    let serve = builder
        .accept_http1(true)
        .layer(tower::util::option_layer(hosts))
        .layer(http::cors(&config.cors_origins)?)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => result?,
        () = shutdown => {
            tracing::info!("shutting down");
            health.set_not_serving::<ContextServiceServer<ContextApi>>().await;
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            stop.cancel();
            // Contexts stop after the transition they are saving and end their watch
            // streams; requests waiting on them are answered UNAVAILABLE, which lets the
            // server's graceful shutdown finish.
            contexts.shutdown().await;
            // Every context this node ran is given up: the other nodes take them over now.
            placement.leave().await;
            // Streams ctxd does not own (a health watch) could hold the server open forever.
            match tokio::time::timeout(DRAIN_TIMEOUT, serve).await {
                Ok(result) => result?,
                Err(_) => tracing::warn!("some calls were still open after {DRAIN_TIMEOUT:?}; closing them"),
            }
        }
    }
    stop.cancel();
    if let Some(metrics) = metrics {
        match metrics.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the metrics listener failed"),
            Err(error) => tracing::warn!(%error, "the metrics listener task failed"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}
