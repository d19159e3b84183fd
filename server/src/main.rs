use std::io::IsTerminal;
use std::process::ExitCode;

use ctxd::auth::{Scope, new_key};
use ctxd::config::{ApiKeyCommand, Args, Command, Config, LogFormat};
use ctxd::domain::TenantId;
use ctxd::migrate::Place;
use ctxd::telemetry::traces::Exporting;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, fmt};

fn main() -> ExitCode {
    let mut args = Args::parse_with_defaults();
    if let Some(command) = args.command.take() {
        return run_command(command, args);
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
    // Client-given strings in fields are escaped: no forged lines, no terminal escapes.
    let text = (config.log_format == LogFormat::Text).then(|| {
        fmt::layer()
            .fmt_fields(ctxd::telemetry::escaped_fields())
            .with_writer(writer.clone())
            .with_ansi(std::io::stderr().is_terminal())
    });
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

/// A subcommand: everything but serving. `args`: the settings it may need (the stores').
fn run_command(command: Command, args: Args) -> ExitCode {
    match command {
        Command::Migrate { from, to } => migrate(&from, &to, args),
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

/// `ctxd migrate`: the copy's progress on stderr, its outcome on stdout; exit 1 if any
/// context could not be copied, 2 if the stores could not be opened.
fn migrate(from: &Place, to: &Place, args: Args) -> ExitCode {
    if from == to {
        eprintln!("ctxd: --from and --to are the same store");
        return ExitCode::from(2);
    }
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ctxd: {error}");
            return ExitCode::from(2);
        }
    };
    // The stores' own lines (e.g. waiting for the NATS cluster) say what is happening.
    tracing_subscriber::registry()
        .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,ctxd=info")))
        .with(fmt::layer().with_writer(std::io::stderr))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ctxd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let nats = config.nats_options();
        let (source, layout_1) = match from.open(&nats, true).await {
            Ok(source) => source,
            Err(error) => {
                eprintln!("ctxd: cannot open {from}: {error}");
                return ExitCode::from(2);
            }
        };
        let destination = match to.open(&nats, false).await {
            Ok((destination, _)) => destination,
            Err(error) => {
                eprintln!("ctxd: cannot open {to}: {error}");
                source.close().await;
                return ExitCode::from(2);
            }
        };
        eprintln!("copying every context from {from} to {to}");
        let done = ctxd::migrate::run(source.as_ref(), destination.as_ref(), |key, report| {
            let count = report.copied + report.present + report.failed.len() as u64;
            if count.is_multiple_of(100) {
                eprintln!("{count} contexts done (last {key})");
            }
        })
        .await;
        destination.close().await;
        source.close().await;
        match done {
            Ok(report) => {
                println!(
                    "copied {} contexts, {} already there and identical, {} messages; each checked by count and SHA-256",
                    report.copied, report.present, report.messages
                );
                for (key, why) in &report.failed {
                    println!("not copied: {key}: {why}");
                }
                if !report.failed.is_empty() {
                    return ExitCode::FAILURE;
                }
                // Copied in place from the previous layout: its streams go, so that ctxd
                // nodes start on the copy.
                if layout_1 && from == to {
                    if let Err(error) = from.retire_layout_1(&nats).await {
                        eprintln!("ctxd: copied, but could not delete the layout-1 streams: {error}; delete {}_log, {}_tree and {}_contexts", nats.prefix, nats.prefix, nats.prefix);
                        return ExitCode::FAILURE;
                    }
                    println!("deleted the previous layout's streams ({0}_log, {0}_tree, {0}_contexts)", nats.prefix);
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("ctxd: migration stopped: {error}; run it again to go on");
                ExitCode::FAILURE
            }
        }
    })
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
