//! `herald-bench`: Herald's load generator. Loopback targets only; every run is bounded
//! in count and time and stops by itself.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Herald's load generator.
#[derive(Debug, Parser)]
#[command(name = "herald-bench", version)]
struct Cli {
    /// Server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:3000", global = true)]
    target: SocketAddr,
    /// Engine.IO path.
    #[arg(long, default_value = "/engine.io/", global = true)]
    path: String,
    /// Source addresses to spread connections over, comma-separated (loopback only).
    #[arg(long, value_delimiter = ',', global = true)]
    sources: Vec<IpAddr>,
    /// The server's process id, to read its memory and CPU from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open N connections at a bounded rate and hold them.
    Idle {
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// New connections per second at most.
        #[arg(long, default_value_t = 2000)]
        rate: u32,
        /// Handshakes in flight at most.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Seconds to hold the connections.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        /// Seconds to wait after the last handshake before reading server memory.
        #[arg(long, default_value_t = 3)]
        settle: u64,
        /// Also join the Socket.IO namespace `/` on each connection (use with
        /// `--path /socket.io/`).
        #[arg(long)]
        socketio: bool,
    },
    /// N receivers; one trigger makes the server queue one frame COUNT times on every
    /// session (needs eio-bench-server).
    Burst {
        /// Receiving connections.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Connection rate while opening.
        #[arg(long, default_value_t = 2000)]
        rate: u32,
        /// Frames per receiver.
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// Payload bytes per frame.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Seconds before giving up.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Socket.IO receivers in one room of the bench app (`bench-server`, path
    /// `/socket.io/`); a publisher sends COUNT broadcasts at once.
    SioBurst {
        /// Receivers in the room.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Connection rate while opening.
        #[arg(long, default_value_t = 2000)]
        rate: u32,
        /// Broadcasts.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Padding bytes per message.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Seconds before giving up.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let target = bench::Target {
        addr: cli.target,
        path: cli.path.clone(),
        sources: cli.sources.clone(),
    };
    if let Err(e) = target.check_loopback() {
        eprintln!("herald-bench: {e}: load is only sent to this machine");
        std::process::exit(64);
    }
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    eprintln!("herald-bench: open-file limit {fd_limit}");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald-bench: {e}");
            std::process::exit(70);
        }
    };
    let report = runtime.block_on(async {
        match cli.mode {
            Mode::Idle {
                connections,
                rate,
                concurrency,
                hold,
                settle,
                socketio,
            } => {
                let opts = bench::idle::IdleOptions {
                    connections,
                    rate,
                    concurrency,
                    hold: Duration::from_secs(hold.max(settle)),
                    settle: Duration::from_secs(settle),
                    server_pid: cli.server_pid,
                    socketio,
                };
                bench::idle::run(&target, &opts).await
            }
            Mode::Burst {
                connections,
                rate,
                count,
                size,
                timeout,
            } => {
                let opts = bench::burst::BurstOptions {
                    connections: connections + 1,
                    rate,
                    count,
                    size,
                    timeout: Duration::from_secs(timeout),
                    server_pid: cli.server_pid,
                };
                bench::burst::run(&target, &opts).await
            }
            Mode::SioBurst {
                connections,
                rate,
                count,
                size,
                timeout,
            } => {
                let opts = bench::sio_burst::SioBurstOptions {
                    connections: connections + 1,
                    rate,
                    count,
                    size,
                    timeout: Duration::from_secs(timeout),
                    server_pid: cli.server_pid,
                };
                bench::sio_burst::run(&target, &opts).await
            }
        }
    });
    println!("{}", report.json_line());
    eprintln!("{}", report.summary());
}
