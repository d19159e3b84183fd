//! Where the configuration comes from: defaults, overridden by a TOML file, overridden by
//! `CTXD_*` environment variables and flags (which clap reads together).

use std::path::Path;

use super::{Args, Config, Error};

impl Config {
    /// Defaults, then the config file, then flags and environment.
    pub fn load(args: Args) -> Result<Self, Error> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        let Args {
            config: _,
            listen,
            store,
            data_dir,
            nats_url,
            nats_creds,
            nats_nkey_file,
            nats_tls_ca,
            nats_tls_cert,
            nats_tls_key,
            cluster_secret_file,
            insecure_cluster,
            tls_cert,
            tls_key,
            peer_tls_ca,
            nats_prefix,
            nats_replicas,
            node_id,
            advertise_addr,
            lease_ttl_ms,
            mock_delay_ms,
            workspace,
            max_message_bytes,
            sync_writes,
            llm_max_attempts,
            llm_retry_base_ms,
            llm_retry_max_ms,
            tool_timeout_ms,
            tool_max_output_bytes,
            idle_unload_secs,
            log,
            log_format,
            web_dir,
            cors_origins,
            default_model,
            openai_base_url,
            openai_models,
            llm_connect_timeout_ms,
            llm_idle_timeout_ms,
            external_tool_timeout_ms,
            metrics_listen,
            otlp_endpoint,
            jwt_hs256_secret_file,
            jwt_jwks_file,
            jwt_issuer,
            jwt_audience,
            jwt_tenant_claim,
            jwt_leeway_secs,
            api_keys_file,
            insecure_no_auth,
            allowed_hosts,
            max_active_runs_per_tenant,
            max_contexts_per_tenant,
            command: _,
        } = args;
        macro_rules! overlay {
            ($($field:ident),*) => { $( if let Some(value) = $field { config.$field = value; } )* };
        }
        // Settings that default to nothing: a flag sets them.
        macro_rules! overlay_optional {
            ($($field:ident),*) => { $( if $field.is_some() { config.$field = $field; } )* };
        }
        overlay!(
            listen,
            store,
            data_dir,
            nats_url,
            nats_prefix,
            nats_replicas,
            lease_ttl_ms,
            mock_delay_ms,
            max_message_bytes,
            sync_writes,
            llm_max_attempts,
            llm_retry_base_ms,
            llm_retry_max_ms,
            tool_timeout_ms,
            tool_max_output_bytes,
            idle_unload_secs,
            log,
            log_format,
            cors_origins,
            default_model,
            openai_models,
            llm_connect_timeout_ms,
            llm_idle_timeout_ms,
            external_tool_timeout_ms,
            metrics_listen,
            jwt_tenant_claim,
            jwt_leeway_secs,
            allowed_hosts
        );
        overlay_optional!(
            openai_base_url,
            nats_creds,
            nats_nkey_file,
            nats_tls_ca,
            nats_tls_cert,
            nats_tls_key,
            cluster_secret_file,
            tls_cert,
            tls_key,
            peer_tls_ca,
            node_id,
            advertise_addr,
            workspace,
            web_dir,
            otlp_endpoint,
            jwt_hs256_secret_file,
            jwt_jwks_file,
            jwt_issuer,
            jwt_audience,
            api_keys_file,
            max_active_runs_per_tenant,
            max_contexts_per_tenant
        );
        config.insecure_no_auth |= insecure_no_auth;
        config.insecure_cluster |= insecure_cluster;
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text)
            .map_err(|source| Error::Parse { path: path.display().to_string(), source: Box::new(source) })
    }
}
