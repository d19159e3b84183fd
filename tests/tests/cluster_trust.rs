//! The cluster's trust boundaries against real nats-servers and ctxd nodes: NATS with TLS
//! and a password, nodes that share a secret and call each other over TLS, and what an
//! impostor gets: a node record it writes into NATS is ignored, a call it marks as forwarded
//! is refused, and a node off loopback without a secret does not start.

use std::time::Duration;

use ctxd_tests::metrics;
use ctxd_tests::nats::NatsCluster;
use ctxd_tests::tls::TestPki;
use ctxd_tests::v1 as pb;
use ctxd_tests::*;
use tokio::io::AsyncBufReadExt as _;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const NATS_USER: &str = "ctxd";
const NATS_PASSWORD: &str = "a-nats-password-for-the-tests";

/// A NATS cluster that requires TLS (client certificates too) and a user and password.
async fn secured_nats(pki: &TestPki) -> NatsCluster {
    let extra = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\nauthorization {{\n  user: {NATS_USER}\n  password: \"{NATS_PASSWORD}\"\n}}",
        pki.arg("cert.pem"),
        pki.arg("key.pem"),
        pki.arg("ca.pem"),
    );
    NatsCluster::start_with(3, &extra).await
}

/// A TLS client of a node, checking its certificate against the test CA.
async fn tls_client(pki: &TestPki, server: &Server) -> Client {
    let ca = Certificate::from_pem(std::fs::read(pki.path("ca.pem")).expect("ca"));
    let channel = Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
        .expect("uri")
        .tls_config(ClientTlsConfig::new().ca_certificate(ca).domain_name("localhost"))
        .expect("tls")
        .connect()
        .await
        .expect("connect over TLS");
    client_for(channel)
}

#[tokio::test]
async fn nodes_with_a_secret_over_tls_serve_together_and_impostors_get_nothing() {
    let pki = TestPki::new();
    let nats = secured_nats(&pki).await;
    let secret = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret.path(), format!("{}\n", "5ec2e7".repeat(11))).expect("secret");
    let secret_path = secret.path().to_str().expect("utf-8").to_owned();
    let (ca, cert, key) = (pki.arg("ca.pem"), pki.arg("cert.pem"), pki.arg("key.pem"));
    let flags = [
        "--nats-tls-ca",
        &ca,
        "--nats-tls-cert",
        &cert,
        "--nats-tls-key",
        &key,
        "--cluster-secret-file",
        &secret_path,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--peer-tls-ca",
        &ca,
    ];
    let env = [("NATS_USER", NATS_USER), ("NATS_PASSWORD", NATS_PASSWORD)];
    let a = nats.ctxd_node_with("node-a", 1500, 0, &flags, &env).await;
    let b = nats.ctxd_node_with("node-b", 1500, 0, &flags, &env).await;
    let (mut on_a, mut on_b) = (tls_client(&pki, &a).await, tls_client(&pki, &b).await);

    // A context created on one node, used through the other: every call about it is sent
    // on, signed and over TLS.
    let id = create(&mut on_a, "trusted").await;
    let sent = send(&mut on_b, &id, "hello over TLS").await;
    assert_eq!(sent.messages.len(), 2, "{sent:?}");
    let through_b = send(&mut on_a, &id, "and back").await;
    assert_eq!(get(&mut on_b, &id).await, through_b);
    let mut sent_on = 0.0;
    for node in [&a, &b] {
        sent_on += metrics::value(&metrics::scrape(node).await, "ctxd_forwarded_calls_total", &[("outcome", "ok")]);
    }
    assert!(sent_on >= 1.0, "no call was sent on");

    // A caller that marks its call as forwarded, without a node's signature, is refused.
    for proof in [None, Some("1.00"), Some("garbage")] {
        let mut request = tonic::Request::new(pb::GetStateRequest { context_id: id.clone(), ..Default::default() });
        request.metadata_mut().insert("ctxd-forwarded", "node-b".parse().expect("header"));
        if let Some(proof) = proof {
            request.metadata_mut().insert("ctxd-peer-auth", proof.parse().expect("header"));
        }
        let refused = on_a.get_state(request).await.expect_err("refused");
        assert_eq!(refused.code(), Code::PermissionDenied, "{proof:?}: {refused:?}");
    }

    // Whoever can publish on NATS announces a "node" at an address of its own, holding
    // partitions: it is ignored, so no caller's token is ever sent there.
    let nats_client = async_nats::ConnectOptions::with_user_and_password(NATS_USER.into(), NATS_PASSWORD.into())
        .add_root_certificates(pki.path("ca.pem"))
        .add_client_certificate(pki.path("cert.pem"), pki.path("key.pem"))
        .require_tls(true)
        .connect(nats.urls().split(',').next().expect("a url"))
        .await
        .expect("connect to NATS");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        // A heartbeat of a rogue "node", as the nodes publish theirs.
        let rogue = r#"{"epoch":"x","addr":"127.0.0.1:9","partitions":[0,1,2],"ttl_ms":1500}"#;
        nats_client.publish("ctxd.nodes.node-z", rogue.into()).await.expect("publish a rogue heartbeat");
        let scrape = metrics::scrape(&a).await;
        if metrics::value(&scrape, "ctxd_cluster_records_refused_total", &[]) >= 1.0 {
            assert_eq!(metrics::value(&scrape, "ctxd_cluster_nodes", &[]), 2.0, "the rogue is no member");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the rogue record was not noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    send(&mut on_b, &id, "still served").await;

    // Without the NATS password, a node cannot join: it waits, saying why.
    let mut intruder = tokio::process::Command::new(binary())
        .args(["--store", "nats", "--nats-url", &nats.urls(), "--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .args(["--nats-tls-ca", &ca, "--nats-tls-cert", &cert, "--nats-tls-key", &key])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ctxd");
    let mut lines = tokio::io::BufReader::new(intruder.stderr.take().expect("stderr")).lines();
    let waiting = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            assert!(!line.contains("ctxd listening on"), "joined without credentials: {line}");
            if line.contains("waiting for the NATS cluster") {
                return line;
            }
        }
        panic!("ctxd exited");
    })
    .await
    .expect("it says it is waiting");
    assert!(waiting.to_lowercase().contains("authoriz"), "{waiting}");
}

#[tokio::test]
async fn a_cluster_node_off_loopback_without_a_secret_is_refused_unless_overridden() {
    let keys = tempfile::NamedTempFile::new().expect("keys");
    let keys = keys.path().to_str().expect("utf-8");
    let output = tokio::process::Command::new(binary())
        .args(["--store", "nats", "--listen", "0.0.0.0:0", "--advertise-addr", "10.1.2.3:50051"])
        .args(["--api-keys-file", keys, "--metrics-listen", "off"])
        .output()
        .await
        .expect("run ctxd");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--cluster-secret-file") && stderr.contains("--insecure-cluster"), "{stderr}");
}
