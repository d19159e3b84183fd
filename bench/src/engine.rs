//! Which store the ctxd under test runs on: RocksDB in its data dir (the default), or a
//! fresh 3-server NATS JetStream cluster on loopback (replicas 3). A scenario's saved
//! contexts are written once, to RocksDB (`load::fill`); on NATS they are then copied into
//! the cluster by `ctxd migrate`'s own code, so both engines serve the same data.

use std::path::Path;

use ctxd::migrate::{self, Place};
use ctxd::store::NatsOptions;
use ctxd_tests::Server;
use ctxd_tests::nats::NatsCluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Rocksdb,
    Nats,
}

impl Engine {
    /// Starts ctxd (mock LLM at delay 0, `extra` flags, `env`) serving the contexts in `dir`
    /// (possibly none), with a metrics listener (for the NATS request counts).
    pub async fn serve(self, dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        args.extend(["--metrics-listen".into(), "127.0.0.1:0".into()]);
        let cluster = match self {
            Self::Rocksdb => {
                args.extend(["--store".into(), "rocksdb".into()]);
                None
            }
            Self::Nats => {
                let cluster = NatsCluster::start(3).await;
                if dir.path().join("CURRENT").is_file() {
                    copy_into(dir.path(), &cluster).await;
                }
                args.extend(["--store".into(), "nats".into(), "--nats-url".into(), cluster.urls()]);
                Some(cluster)
            }
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = Server::start_on(dir, 0, &args, env).await;
        server.nats = cluster;
        server
    }

    /// Bytes one copy of the data takes on disk: the data dir, or the cluster's store dirs
    /// over its replicas.
    pub fn stored_bytes(self, server: &Server) -> u64 {
        match (self, &server.nats) {
            (Self::Nats, Some(cluster)) => cluster.store_bytes() / 3,
            _ => crate::load::disk_bytes(server.data_dir()),
        }
    }
}

/// Copies every context of the RocksDB in `dir` into `cluster`.
async fn copy_into(dir: &Path, cluster: &NatsCluster) {
    let options = NatsOptions::plain(cluster.urls().split(',').map(String::from).collect(), "ctxd", 3, 16);
    let (from, _) = Place::Rocksdb(dir.to_path_buf()).open(&options, true).await.expect("open the filled RocksDB");
    let (to, _) = Place::Nats(options.urls.clone()).open(&options, false).await.expect("open the cluster");
    let report = migrate::run(from.as_ref(), to.as_ref(), |_, _| {}).await.expect("copy into NATS");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    to.close().await;
    from.close().await;
}
