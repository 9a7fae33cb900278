//! The conformance server: what the official protocol test suites expect.
//!
//! - `/engine.io/`: an Engine.IO echo of every message, text and binary
//!   (socketio/engine.io-protocol).
//! - `/socket.io/`: namespaces `/` and `/custom` emit `auth` with the CONNECT payload; `/`
//!   answers `message` with `message-back` (same arguments) and acks `message-with-ack`
//!   with its arguments; other namespaces are refused with `Invalid namespace`; connect
//!   timeout 1,000 ms (socketio/socket.io-protocol).
//!
//! Both: ping interval 300 ms, ping timeout 200 ms, max payload 1,000,000 bytes. Each
//! connection is served by the Socket.IO engine (`engineio::serve_connection`, direct
//! WebSockets as Herald serves them), with the Engine.IO echo as its fallback for
//! `/engine.io/` (through hyper).
//!
//! ```text
//! conformance [--port P] [--parser default|msgpack]   # or PORT=P; binds 127.0.0.1:P
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

/// The Engine.IO echo as the fallback of the Socket.IO engine's connections.
#[derive(Clone)]
struct EchoFallback(Arc<Engine<Echo>>);

impl engineio::serve::Fallback for EchoFallback {
    type Body = http_body_util::Full<Bytes>;
    type Error = std::convert::Infallible;

    async fn call(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
        remote: SocketAddr,
    ) -> hyper::Response<Self::Body> {
        if self.0.matches(req.uri().path()) {
            self.0
                .handle::<engineio::Rewind<tokio::net::TcpStream>, _>(req, remote)
                .await
        } else {
            engineio::NotFound.call(req, remote).await
        }
    }
}

fn args() -> Result<(u16, socketio::Parser), String> {
    let mut args = std::env::args().skip(1);
    let mut port = std::env::var("PORT").ok();
    let mut parser = socketio::Parser::Default;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = Some(args.next().ok_or("--port needs a value")?),
            "--parser" => {
                parser = match args.next().as_deref() {
                    Some("default") => socketio::Parser::Default,
                    Some("msgpack") => socketio::Parser::Msgpack,
                    other => {
                        return Err(format!("--parser takes default or msgpack, not {other:?}"))
                    }
                }
            }
            "-h" | "--help" => {
                println!("usage: conformance [--port P] [--parser default|msgpack]   (or PORT=P)");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let port = match port {
        None => 3000,
        Some(p) => p.parse().map_err(|_| format!("invalid port {p:?}"))?,
    };
    Ok((port, parser))
}

/// The Socket.IO server the socket.io-protocol suite expects.
fn socketio_server(parser: socketio::Parser) -> socketio::Server {
    let config = socketio::Config {
        engine: Config {
            path: "/socket.io/".to_owned(),
            ..timings()
        },
        connect_timeout: Duration::from_millis(1000),
        parser,
        ..socketio::Config::default()
    };
    socketio::Server::builder()
        .ns("/", |socket, req| {
            let _ = socket.emit("auth", (req.auth_json(),));
        })
        .on("message", |socket, ev| {
            let _ = socket.emit("message-back", ev.raw_args());
        })
        .on("message-with-ack", |_socket, ev| {
            let _ = ev.ack(ev.raw_args());
        })
        .ns("/custom", |socket, req| {
            let _ = socket.emit("auth", (req.auth_json(),));
        })
        .build(config)
}

/// Ping interval 300 ms, ping timeout 200 ms, max payload 1,000,000 bytes.
fn timings() -> Config {
    Config {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..Config::default()
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
    let (port, parser) = match args() {
        Ok(parsed) => parsed,
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
    if let Err(e) = runtime.block_on(serve(port, parser, fd_limit)) {
        eprintln!("conformance: {e}");
        std::process::exit(1);
    }
}

async fn serve(port: u16, parser: socketio::Parser, fd_limit: u64) -> std::io::Result<()> {
    let engine = Engine::new(
        Config {
            path: "/engine.io/".to_owned(),
            ..timings()
        },
        Echo,
    );
    let sio = socketio_server(parser);
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
        let _ = stream.set_nodelay(true);
        // Socket.IO on the engine's own path (direct WebSockets, as Herald serves them);
        // the Engine.IO echo behind it, through hyper.
        tokio::spawn(engineio::serve_connection(
            sio.engine().clone(),
            stream,
            remote,
            EchoFallback(engine.clone()),
        ));
    }
}
