//! What makes a configuration unusable, said before anything starts: each error names the
//! setting and what would fix it.

use super::{Config, Error, StoreKind};
use crate::domain::MIN_WINDOW;

impl Config {
    pub(super) fn validate(&self) -> Result<(), Error> {
        if self.max_message_bytes == 0 {
            return Err(Error::Invalid("max-message-bytes must be at least 1".into()));
        }
        if self.default_model != crate::llm::MOCK_MODEL && self.openai_base_url.is_none() {
            return Err(Error::Invalid(format!(
                "default-model {:?} needs openai-base-url (only \"mock\" is built in)",
                self.default_model
            )));
        }
        self.metrics_addr()?;
        if self.llm_max_attempts == 0 {
            return Err(Error::Invalid("llm-max-attempts must be at least 1".into()));
        }
        if let Some(workspace) = &self.workspace
            && !workspace.is_dir()
        {
            return Err(Error::Invalid(format!("workspace {} is not a directory", workspace.display())));
        }
        if let Some(web_dir) = &self.web_dir
            && !web_dir.join("index.html").is_file()
        {
            return Err(Error::Invalid(format!("web-dir {} has no index.html", web_dir.display())));
        }
        if self.max_active_runs_per_tenant == Some(0) {
            return Err(Error::Invalid("max-active-runs-per-tenant must be at least 1".into()));
        }
        if self.max_contexts_per_tenant == Some(0) {
            return Err(Error::Invalid("max-contexts-per-tenant must be at least 1".into()));
        }
        if self.nats_url.is_empty() {
            return Err(Error::Invalid("nats-url must name at least one server".into()));
        }
        if self.nats_prefix.is_empty()
            || !self.nats_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::Invalid(format!(
                "nats-prefix {:?} must be letters, digits, '_' or '-' (it names streams and subjects)",
                self.nats_prefix
            )));
        }
        if !(1..=5).contains(&self.nats_replicas) {
            return Err(Error::Invalid(format!("nats-replicas is {}; JetStream allows 1 to 5", self.nats_replicas)));
        }
        if !(1..=1024).contains(&self.nats_partitions) {
            return Err(Error::Invalid(format!("nats-partitions is {}; it must be 1 to 1024", self.nats_partitions)));
        }
        if let Some(node_id) = &self.node_id
            && (node_id.is_empty()
                || node_id.len() > 64
                || !node_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return Err(Error::Invalid(format!(
                "node-id {node_id:?} must be 1 to 64 letters, digits, '_' or '-' (it names a key in the cluster)"
            )));
        }
        if !(300..=600_000).contains(&self.lease_ttl_ms) {
            return Err(Error::Invalid(format!(
                "lease-ttl-ms is {}; it must be between 300 (0.3 s) and 600000 (10 min)",
                self.lease_ttl_ms
            )));
        }
        if self.jwt_tenant_claim.is_empty() {
            return Err(Error::Invalid("jwt-tenant-claim must name a claim".into()));
        }
        if !self.listen.ip().is_loopback() && !self.auth_configured() && !self.insecure_no_auth {
            return Err(Error::Invalid(format!(
                "refusing to listen on {} without authentication: anyone who can reach that address could read and \
                 change every conversation. Configure --jwt-hs256-secret-file, --jwt-jwks-file or --api-keys-file (the \
                 README's \"Authentication\" section says how), listen on a loopback address such as 127.0.0.1, or \
                 pass --insecure-no-auth to serve without authentication anyway",
                self.listen
            )));
        }
        self.validate_cluster()?;
        self.context_windows()?;
        if self.default_context_window < MIN_WINDOW || self.mock_context_window.is_some_and(|w| w < MIN_WINDOW) {
            return Err(Error::Invalid(format!(
                "default-context-window and mock-context-window must be at least {MIN_WINDOW} tokens"
            )));
        }
        Ok(())
    }

    /// `model-context-window`'s `MODEL=TOKENS` entries, by model.
    pub fn context_windows(&self) -> Result<std::collections::HashMap<String, u32>, Error> {
        self.model_context_window
            .iter()
            .map(|entry| {
                let parsed = entry.rsplit_once('=').and_then(|(model, tokens)| {
                    let tokens = tokens.trim().parse::<u32>().ok().filter(|t| *t >= MIN_WINDOW)?;
                    Some((model.trim().to_owned(), tokens)).filter(|(model, _)| !model.is_empty())
                });
                parsed.ok_or_else(|| {
                    Error::Invalid(format!(
                        "model-context-window {entry:?} must be MODEL=TOKENS with at least {MIN_WINDOW} tokens, e.g. gpt-4o-mini=128000"
                    ))
                })
            })
            .collect()
    }

    /// A cluster off loopback authenticates its nodes to each other; TLS settings come in pairs.
    fn validate_cluster(&self) -> Result<(), Error> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(Error::Invalid("tls-cert and tls-key go together".into()));
        }
        if self.nats_tls_cert.is_some() != self.nats_tls_key.is_some() {
            return Err(Error::Invalid("nats-tls-cert and nats-tls-key go together".into()));
        }
        let advertised_off_loopback = match &self.advertise_addr {
            Some(addr) => !addr.rsplit_once(':').map(|(host, _)| host.trim_matches(['[', ']'])).is_some_and(|host| {
                host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }),
            None => false,
        };
        let off_loopback = !self.listen.ip().is_loopback() || advertised_off_loopback;
        if self.store == StoreKind::Nats && off_loopback && self.cluster_secret_file.is_none() && !self.insecure_cluster
        {
            return Err(Error::Invalid(format!(
                "refusing to serve other ctxd nodes on {} without a cluster secret: whoever can reach NATS could register \
                 as a node and be sent callers' credentials. Configure --cluster-secret-file (the same file on every \
                 node; docs/security.md says how), or pass --insecure-cluster to run without one anyway",
                self.advertise_addr.as_deref().map_or_else(|| self.listen.to_string(), str::to_owned)
            )));
        }
        Ok(())
    }
}
