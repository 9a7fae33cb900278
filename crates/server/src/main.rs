//! `herald`: the Socket.IO server that runs with no code.
//!
//! ```text
//! herald [serve] [--config FILE] [--host H] [--port P]   # run (the default)
//! herald config check [--config FILE]                    # validate, exit 0 or 78
//! herald config print [--config FILE]                    # effective config, secrets redacted
//! herald version
//! herald bench <mode> ...                                # the load generator
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use server::config::{self, Flags, Loaded};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// sysexits: the configuration is unusable.
const EX_CONFIG: u8 = 78;
/// sysexits: a service could not start (the address is taken).
const EX_UNAVAILABLE: u8 = 69;

/// Herald: a Socket.IO server for instant messaging and collaboration.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
struct Cli {
    #[command(flatten)]
    opts: Opts,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Args)]
struct Opts {
    /// TOML config file (also HERALD_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to bind (server.host).
    #[arg(long, global = true)]
    host: Option<String>,
    /// Port to bind; 0 picks a free one (server.port).
    #[arg(long, global = true)]
    port: Option<u16>,
    /// Log format, text or json (log.format).
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter, e.g. info or debug (log.level).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (what runs without a subcommand).
    Serve,
    /// Check or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the version.
    Version,
    /// Herald's load generator (loopback targets only): idle, connect-storm, fanout,
    /// fanout-max, echo.
    Bench(Box<bench::cli::Cli>),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration; exit 0 when it is usable, 78 when not.
    Check,
    /// Print the effective configuration as TOML, secrets redacted, each value that is
    /// not a default followed by its source.
    Print,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Bench(args)) => ExitCode::from(bench::cli::run(*args).clamp(0, 255) as u8),
        Some(Command::Version) => {
            println!("herald {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(Command::Config(ConfigCommand::Check)) => match load(&cli.opts) {
            Ok(loaded) => {
                println!("configuration ok (from {})", loaded.sources());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Some(Command::Config(ConfigCommand::Print)) => match load(&cli.opts) {
            Ok(loaded) => {
                print!("{}", loaded.to_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Some(Command::Serve) | None => match load(&cli.opts) {
            Ok(loaded) => serve(loaded),
            Err(code) => code,
        },
    }
}

/// Loads the configuration, printing every problem on failure.
fn load(opts: &Opts) -> Result<Loaded, ExitCode> {
    let file = opts
        .config
        .clone()
        .or_else(|| std::env::var_os(config::ENV_CONFIG_FILE).map(PathBuf::from));
    let flags = Flags {
        host: opts.host.clone(),
        port: opts.port,
        log_format: opts.log_format.clone(),
        log_level: opts.log_level.clone(),
    };
    // Variables that are not Unicode cannot be Herald's: skipped rather than a panic.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let loaded = config::load(file.as_deref(), env, &flags).map_err(|e| {
        eprintln!("herald: {e}");
        ExitCode::from(EX_CONFIG)
    })?;
    for warning in &loaded.warnings {
        eprintln!("herald: warning: {warning}");
    }
    Ok(loaded)
}

fn serve(loaded: Loaded) -> ExitCode {
    if let Err(e) = server::telemetry::init(&loaded.config.log) {
        eprintln!("herald: logging: {e}");
        return ExitCode::from(EX_CONFIG);
    }
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(before);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let config = loaded.config.clone();
        // Signals are taken over before anything binds: a SIGTERM or SIGHUP that comes
        // while the server starts is handled (after it started), not fatal.
        let (mut signals, mut hup) = match Signals::new().and_then(|s| {
            let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            Ok((s, hup))
        }) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("herald: cannot listen for signals: {e}");
                return ExitCode::FAILURE;
            }
        };
        let app = match server::start(loaded.config.clone(), fd_limit).await {
            Ok(app) => app,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("herald: {e}");
                return ExitCode::from(EX_UNAVAILABLE);
            }
        };
        let addr = app.local_addr();
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        let loopback = if config.admission.exempt_loopback {
            "loopback peers trusted as proxies and exempt from per-address limits"
        } else {
            "loopback peers limited as any address"
        };
        tracing::info!(
            config = %loaded.sources(),
            open_files = fd_limit,
            open_files_before = before,
            trust_loopback = config.admission.exempt_loopback,
            "herald {} listening on {scheme}://{addr} (open-file limit {fd_limit}, raised from {before}; \
             {loopback}: server.trust_loopback)",
            env!("CARGO_PKG_VERSION"),
        );
        describe(&config, addr);
        // SIGHUP reloads the TLS files (and never stops the server).
        let tls = app.tls();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match &tls {
                    Some(tls) => match tls.reload() {
                        Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload failed; the old certificate stays"),
                    },
                    None => tracing::info!("SIGHUP: nothing to reload (no TLS)"),
                }
            }
        });
        let why = tokio::select! {
            signal = signals.next() => signal,
            () = app.shutdown_requested() => "POST /api/shutdown",
        };
        tracing::info!(
            "{why}: draining over {} ms (a second signal stops at once)",
            config.drain.window.as_millis()
        );
        tokio::select! {
            () = app.drain() => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            signal = signals.next() => {
                tracing::warn!("{signal} during the drain: stopping now");
                ExitCode::FAILURE
            }
        }
    })
}

/// Says how the server is set up, so an operator sees what the defaults mean.
fn describe(config: &server::Config, addr: std::net::SocketAddr) {
    let auth = &config.auth;
    if auth.enabled() {
        let mut keys = Vec::new();
        if auth.hmac_secret.is_some() {
            keys.push("HS256 secret".to_owned());
        }
        if let Some((path, _)) = &auth.public_key {
            keys.push(format!("public key {}", path.display()));
        }
        tracing::info!(
            "auth: JWT ({}); anonymous clients {}",
            keys.join(", "),
            if auth.allow_anonymous {
                "allowed"
            } else {
                "refused"
            }
        );
    } else {
        tracing::warn!(
            "auth: off (protected mode: every client is anonymous, and Herald only binds \
             loopback addresses); set auth.jwt_secret to require tokens"
        );
    }
    if config.api_key.is_none() {
        tracing::info!("api: off (set api.key to publish over HTTP)");
    }
    if config.demo.enabled {
        tracing::info!(
            "demo page: http://{addr}/ (client: {})",
            config
                .demo
                .client_js
                .as_ref()
                .map_or("from CDN".to_owned(), |(p, _)| p.display().to_string())
        );
    }
}

/// SIGTERM and SIGINT.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
