//! The conformance server: what the official Engine.IO protocol test suite expects on
//! `/engine.io/` (an echo of every message, text and binary; ping interval 300 ms, ping
//! timeout 200 ms, max payload 1,000,000 bytes).
//!
//! ```text
//! conformance [--port P]      # or PORT=P; binds 127.0.0.1:P (0 picks a free port)
//! ```
//!
//! Prints `PID <pid>` and then `LISTENING <port>` on stdout once it accepts connections.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engineio::{CloseReason, Config, Engine, EngineHandler, Socket};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Sends every message back as it came.
struct Echo;

impl EngineHandler for Echo {
    type Data = ();

    fn on_open(&self, _socket: &Arc<Socket<()>>) {}

    fn on_message(&self, socket: &Arc<Socket<()>>, text: Bytes) {
        if socket.send_text(&text).is_err() {
            socket.close();
        }
    }

    fn on_binary(&self, socket: &Arc<Socket<()>>, data: Bytes) {
        if socket.send_binary(&data).is_err() {
            socket.close();
        }
    }

    fn on_close(&self, _socket: &Arc<Socket<()>>, _reason: CloseReason) {}
}

fn port_from_args() -> Result<u16, String> {
    let mut args = std::env::args().skip(1);
    let mut port = std::env::var("PORT").ok();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = Some(args.next().ok_or("--port needs a value")?),
            "-h" | "--help" => {
                println!("usage: conformance [--port P]   (or PORT=P)");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match port {
        None => Ok(3000),
        Some(p) => p.parse().map_err(|_| format!("invalid port {p:?}")),
    }
}

/// Raises the open-file soft limit to the hard limit; returns the new soft limit.
fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft),
    }
}

fn main() {
    let port = match port_from_args() {
        Ok(port) => port,
        Err(e) => {
            eprintln!("conformance: {e}");
            std::process::exit(64);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let fd_limit = raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("conformance: cannot start the runtime: {e}");
            std::process::exit(70);
        }
    };
    if let Err(e) = runtime.block_on(serve(port, fd_limit)) {
        eprintln!("conformance: {e}");
        std::process::exit(1);
    }
}

async fn serve(port: u16, fd_limit: u64) -> std::io::Result<()> {
    let config = Config {
        path: "/engine.io/".to_owned(),
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..Config::default()
    };
    let engine = Engine::new(config, Echo);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let bound = listener.local_addr()?.port();
    tracing::info!(
        port = bound,
        fd_limit,
        "conformance server listening (open-file limit raised to the hard limit)"
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "PID {}", std::process::id())?;
        writeln!(out, "LISTENING {bound}")?;
        out.flush()?;
    }
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(engineio::serve_connection(engine.clone(), stream, remote));
    }
}
