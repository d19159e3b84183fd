use std::io::IsTerminal;
use std::process::ExitCode;

use ctxd::auth::{Scope, new_key};
use ctxd::config::{ApiKeyCommand, Args, Command, Config, LogFormat};
use ctxd::domain::TenantId;
use ctxd::telemetry::traces::Exporting;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, fmt};

fn main() -> ExitCode {
    let mut args = Args::parse_with_defaults();
    if let Some(command) = args.command.take() {
        return run_command(command);
    }
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ctxd: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ctxd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log));
    // Log lines (one per save) are written by a thread of their own, so a slow terminal or
    // pipe never holds up a context; lossless: a full buffer waits rather than drops a line.
    let (writer, _flush_on_exit) =
        tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(std::io::stderr());
    let text = (config.log_format == LogFormat::Text)
        .then(|| fmt::layer().with_writer(writer.clone()).with_ansi(std::io::stderr().is_terminal()));
    // Fields at the top level of each object, beside "message", as log collectors expect;
    // with tracing on, "span" names the run or call (and its trace_id) a line belongs to.
    let json = (config.log_format == LogFormat::Json).then(|| {
        fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false).with_writer(writer)
    });
    // The OTLP exporter's gRPC client lives on this runtime.
    let traces = match &config.otlp_endpoint {
        Some(endpoint) => {
            let node = format!("{}:{}", config.listen, std::process::id());
            match runtime.block_on(async { Exporting::start(endpoint, &node) }) {
                Ok((exporting, layer)) => Some((exporting, layer)),
                Err(error) => {
                    eprintln!("ctxd: {error}");
                    return ExitCode::from(2);
                }
            }
        }
        None => None,
    };
    let (exporting, otel) = traces.map_or((None, None), |(exporting, layer)| (Some(exporting), Some(layer)));
    tracing_subscriber::registry().with(filter).with(text).with(json).with(otel).init();
    if let Some(endpoint) = &config.otlp_endpoint {
        tracing::info!(%endpoint, "exporting traces over OTLP");
    }

    let code = match runtime.block_on(ctxd::server::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("ctxd: {error}");
            ExitCode::FAILURE
        }
    };
    if let Some(exporting) = exporting {
        // Flushing exports on the runtime; leave its context first.
        runtime.block_on(async { tokio::task::spawn_blocking(move || exporting.shutdown()).await.ok() });
    }
    code
}

/// A subcommand: everything but serving.
fn run_command(command: Command) -> ExitCode {
    match command {
        Command::ApiKey(ApiKeyCommand::New { tenant, scopes }) => {
            let tenant = match TenantId::parse(&tenant) {
                Ok(tenant) => tenant,
                Err(error) => {
                    eprintln!("ctxd: {error}");
                    return ExitCode::from(2);
                }
            };
            let mut parsed = Vec::new();
            for name in &scopes {
                match Scope::parse(name) {
                    Some(scope) => parsed.push(scope),
                    None => {
                        eprintln!("ctxd: unknown scope {name:?} (known: ctxd:read, ctxd:write, ctxd:admin)");
                        return ExitCode::from(2);
                    }
                }
            }
            let (key, line) = new_key(&tenant, &parsed);
            // stdout: the key, then the line for the keys file (`{ read key; read line; }`);
            // the advice goes to stderr.
            println!("{key}");
            println!("{line}");
            eprintln!(
                "The first line is the key, shown only now; add the second to the API keys file (--api-keys-file)."
            );
            ExitCode::SUCCESS
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
