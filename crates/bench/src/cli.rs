//! The command line of the load generator, shared by `herald-bench` and `herald bench`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::report::Report;

/// Herald's load generator: loopback targets only; every run is bounded in count and
/// time and stops by itself. One JSON line on stdout, a summary on stderr.
#[derive(Debug, Args)]
pub struct Cli {
    /// Server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:3000", global = true)]
    target: SocketAddr,
    /// Engine.IO path (`/socket.io/` for Socket.IO servers, `/engine.io/` for the
    /// Engine.IO bench server).
    #[arg(long, default_value = "/socket.io/", global = true)]
    path: String,
    /// Source addresses to spread connections over, comma-separated (loopback only;
    /// about 28,000 ports each).
    #[arg(long, value_delimiter = ',', global = true)]
    sources: Vec<IpAddr>,
    /// The server's process id, to read its memory and CPU from /proc.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// More servers of one cluster (loopback only, comma-separated): connections go
    /// round-robin over `--target` and these, the publisher of `fanout` to `--target`.
    #[arg(long, value_delimiter = ',', global = true)]
    also: Vec<SocketAddr>,
    /// Process ids of the `--also` servers, whose CPU and memory `fanout` adds to the
    /// server's (comma-separated).
    #[arg(long, value_delimiter = ',', global = true)]
    also_pids: Vec<u32>,
    /// The process id of the cluster's bus (redis-server), whose CPU `fanout` reports
    /// on its own.
    #[arg(long, global = true)]
    bus_pid: Option<u32>,
    /// Client processes to spread the connections over (one process holds about
    /// 19,900 sockets here): idle, connect-storm, fanout, fanout-max, echo.
    #[arg(long, default_value_t = 1, global = true)]
    procs: usize,
    /// This process is shard I of a multi-process run (set by the parent).
    #[arg(long, hide = true, global = true)]
    shard: Option<usize>,
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
        /// Also join the Socket.IO namespace `/` on each connection.
        #[arg(long)]
        socketio: bool,
        /// HTTP long-polling instead of WebSocket (for small runs: each session holds
        /// two TCP connections and a pending request).
        #[arg(long)]
        polling: bool,
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
    /// N Socket.IO receivers in a room, one publisher at RATE messages/s: deliveries/s,
    /// latency percentiles, lost, out-of-order, disconnects, server memory.
    Fanout {
        /// Receivers in the room.
        #[arg(long, default_value_t = 1000)]
        receivers: usize,
        /// Messages per second.
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
        /// Seconds to send.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Padding bytes per message.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Connections opened per second while setting up.
        #[arg(long, default_value_t = 4000)]
        connect_rate: u32,
        /// Seconds to wait for deliveries after the last send.
        #[arg(long, default_value_t = 10)]
        drain: u64,
    },
    /// Fanout at rising rates on the same receivers until p99 passes a bound or a packet
    /// is lost: the highest sustained deliveries/s.
    FanoutMax {
        /// Receivers in the room.
        #[arg(long, default_value_t = 1000)]
        receivers: usize,
        /// Messages per second of the first step.
        #[arg(long, default_value_t = 10.0)]
        start_rate: f64,
        /// Rate multiplier between steps.
        #[arg(long, default_value_t = 1.5)]
        factor: f64,
        /// Steps at most.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Seconds per step.
        #[arg(long, default_value_t = 5)]
        step_secs: u64,
        /// The p99 latency a sustained step keeps under, in milliseconds.
        #[arg(long, default_value_t = 500)]
        p99_ms: u64,
        /// Padding bytes per message.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Connections opened per second while setting up.
        #[arg(long, default_value_t = 4000)]
        connect_rate: u32,
        /// Seconds to wait for deliveries after each step's last send.
        #[arg(long, default_value_t = 5)]
        drain: u64,
    },
    /// M connections sending `echo` events with an ack at an aggregate rate: RTT.
    Echo {
        /// Connections.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Echoes per second, all connections together.
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
        /// Seconds to send.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Padding bytes per echo.
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// Connections opened per second while setting up.
        #[arg(long, default_value_t = 4000)]
        connect_rate: u32,
    },
    /// The IM service, 1:1: CLIENTS on `/im` in CLIENTS/2 direct conversations, each
    /// sending with an ack at its share of RATE, acking every message pushed to it:
    /// acked sends/s, ack and delivery latency, sequence gaps and duplicates.
    ImDirect {
        /// Clients (two per conversation).
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Sends per second, all clients together.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds to send.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Padding bytes per body.
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// The HS256 secret the server checks tokens with (`auth.jwt_secret`).
        #[arg(long)]
        secret: String,
        /// Connections opened per second while setting up.
        #[arg(long, default_value_t = 2000)]
        connect_rate: u32,
        /// Seconds to wait for acks and pushes after the last send (pushes not in by
        /// then count as missing).
        #[arg(long, default_value_t = 15)]
        drain: u64,
    },
    /// The IM service, mixed: a share of CLIENTS in groups of GROUP_SIZE, the rest in
    /// direct conversations, each client sending with an ack at its share of RATE and
    /// acking every message pushed to it: acked sends/s, deliveries/s, server CPU per
    /// delivery, ack and delivery latency, sequence gaps and duplicates.
    ImMixed {
        /// Clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Members of each group.
        #[arg(long, default_value_t = 50)]
        group_size: usize,
        /// The share of the clients, and so of the sends, in groups.
        #[arg(long, default_value_t = 0.5)]
        group_share: f64,
        /// Sends per second, all clients together.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds to send.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Padding bytes per body.
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// The HS256 secret the server checks tokens with (`auth.jwt_secret`).
        #[arg(long)]
        secret: String,
        /// Connections opened per second while setting up.
        #[arg(long, default_value_t = 2000)]
        connect_rate: u32,
        /// Seconds to wait for acks and pushes after the last send.
        #[arg(long, default_value_t = 15)]
        drain: u64,
    },
    /// The IM service, offline sync: one user offline while MESSAGES arrive in
    /// CONVERSATIONS; then `sync` for the summaries, and `sync` paging everything in.
    ImSync {
        /// Conversations of the offline user (one writer each).
        #[arg(long, default_value_t = 100)]
        conversations: usize,
        /// Messages that arrive while offline, over all conversations.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// Times to measure the two syncs.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Padding bytes per body.
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// The HS256 secret the server checks tokens with (`auth.jwt_secret`).
        #[arg(long)]
        secret: String,
    },
    /// The IM service, reconnect with catch-up: CLIENTS in groups, dropped, BEHIND
    /// messages sent to each group, then all reconnecting at once and paging in with `sync`.
    ImCatchup {
        /// Clients that reconnect.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Members of each group.
        #[arg(long, default_value_t = 100)]
        group_size: usize,
        /// Messages each client misses.
        #[arg(long, default_value_t = 100)]
        behind: usize,
        /// Connections opened per second at most (the reconnect included).
        #[arg(long, default_value_t = 20_000)]
        connect_rate: u32,
        /// Handshakes in flight at most.
        #[arg(long, default_value_t = 1024)]
        concurrency: usize,
        /// Padding bytes per body.
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// The HS256 secret the server checks tokens with (`auth.jwt_secret`).
        #[arg(long)]
        secret: String,
    },
    /// The IM service, typing: MEMBERS in one group, TYPERS of them sending `typing`
    /// RATE times a second each: pushes and bytes the members got, against relaying every
    /// event to every other member, and how soon each typer was seen.
    ImTyping {
        /// Members of the group.
        #[arg(long, default_value_t = 1000)]
        members: usize,
        /// Members who type.
        #[arg(long, default_value_t = 50)]
        typers: usize,
        /// Keystrokes per second per typer.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        /// Seconds each typer types.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Connections opened per second while setting up.
        #[arg(long, default_value_t = 2000)]
        connect_rate: u32,
        /// The HS256 secret the server checks tokens with (`auth.jwt_secret`).
        #[arg(long)]
        secret: String,
    },
    /// Documents: DOCS Yjs documents with EDITORS each (the `y-socket.io` protocol),
    /// spread over CONNECTIONS, making RATE updates a second together: propagation
    /// latency, lost deliveries, server memory per open document and CPU, and at the end
    /// the copies of the first VERIFY_DOCS documents compared (state vectors, text).
    DocsEdit {
        /// Documents.
        #[arg(long, default_value_t = 1)]
        docs: usize,
        /// Editors per document.
        #[arg(long, default_value_t = 50)]
        editors: usize,
        /// Engine.IO connections to spread the editors over (at least EDITORS; one
        /// socket per document on each).
        #[arg(long, default_value_t = 0)]
        connections: usize,
        /// Updates per second, all editors together.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        /// Seconds of editing.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Seconds to wait for deliveries after the last update, at most.
        #[arg(long, default_value_t = 10)]
        drain: u64,
        /// Connections opened per second while setting up.
        #[arg(long, default_value_t = 2000)]
        connect_rate: u32,
        /// Document sockets joined per second while setting up.
        #[arg(long, default_value_t = 5000)]
        join_rate: u32,
        /// Seconds to wait before each reading of the server's memory.
        #[arg(long, default_value_t = 3)]
        settle: u64,
        /// Documents whose copies are compared at the end.
        #[arg(long, default_value_t = 1)]
        verify_docs: usize,
    },
    /// Documents, cursors: USERS on one document, each moving its cursor HZ times a
    /// second: the awareness frames they got against relaying each move to every other
    /// user, and how soon a move was seen.
    DocsCursors {
        /// Users on the document.
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Cursor moves per second per user.
        #[arg(long, default_value_t = 30.0)]
        hz: f64,
        /// Seconds of moving.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Seconds to wait for frames after the last move, at most.
        #[arg(long, default_value_t = 5)]
        drain: u64,
    },
    /// Documents, cold load: UPDATES written to one document, then after the server
    /// unloaded it, LOADS fresh clients each timed from the TCP connect to the whole state.
    DocsCold {
        /// Updates written.
        #[arg(long, default_value_t = 100_000)]
        updates: usize,
        /// Characters each update inserts.
        #[arg(long, default_value_t = 10)]
        chars: usize,
        /// Loads measured.
        #[arg(long, default_value_t = 3)]
        loads: usize,
        /// Seconds to wait after the writer leaves and after each load (the server's
        /// idle unload must have run).
        #[arg(long, default_value_t = 5)]
        unload_wait: u64,
    },
    /// The IM service, presence: USERS on `/im`, each watcher watching WATCH others, a
    /// pool of CHURNERS coming and going CHURN_PER_MIN times a minute (the server's CPU
    /// over a quiet phase's), then FLAPPERS flapping ten times in ten seconds (what each
    /// watcher was told about them).
    ImPresence {
        /// Users in all (watchers and pool).
        #[arg(long, default_value_t = 18_000)]
        users: usize,
        /// Users each watcher watches.
        #[arg(long, default_value_t = 10)]
        watch: usize,
        /// Users of the pool that comes and goes (the rest watch).
        #[arg(long, default_value_t = 2000)]
        churners: usize,
        /// State changes of the pool per minute in the churn phase.
        #[arg(long, default_value_t = 1000.0)]
        churn_per_min: f64,
        /// Seconds of the quiet phase and of the churn phase each.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Users of the pool that flap at the end.
        #[arg(long, default_value_t = 20)]
        flappers: usize,
        /// The server's `im.presence_flap_window_ms`.
        #[arg(long, default_value_t = 10_000)]
        flap_window_ms: u64,
        /// Connections opened per second while setting up.
        #[arg(long, default_value_t = 2000)]
        connect_rate: u32,
        /// The HS256 secret the server checks tokens with (`auth.jwt_secret`).
        #[arg(long)]
        secret: String,
    },
    /// The IM service, the device policy (the server on `im.device_policy = "single"`):
    /// ITERATIONS times a device connects, then another of the same user: the time from
    /// the new one's CONNECT to the old one's `kicked`.
    ImKick {
        /// Logins measured.
        #[arg(long, default_value_t = 1000)]
        iterations: usize,
        /// The HS256 secret the server checks tokens with (`auth.jwt_secret`).
        #[arg(long)]
        secret: String,
    },
    /// The IM service, storm control: one member of a group of MEMBERS floods FLOOD_RATE
    /// sends a second while a calm group of CALM_MEMBERS gets CALM_RATE: the calm group's
    /// latency without and with the storm, and what the flooder got through.
    ImStorm {
        /// Members of the flooded group.
        #[arg(long, default_value_t = 1000)]
        members: usize,
        /// Sends a second of the flooder.
        #[arg(long, default_value_t = 10_000.0)]
        flood_rate: f64,
        /// Members of the calm group.
        #[arg(long, default_value_t = 100)]
        calm_members: usize,
        /// Sends a second into the calm group, in all (senders of 10 a second each).
        #[arg(long, default_value_t = 40.0)]
        calm_rate: f64,
        /// Seconds of each phase (baseline, storm).
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Connections opened per second while setting up.
        #[arg(long, default_value_t = 2000)]
        connect_rate: u32,
        /// The HS256 secret the server checks tokens with (`auth.jwt_secret`).
        #[arg(long)]
        secret: String,
    },
    /// As many Socket.IO handshakes per second as the server takes.
    ConnectStorm {
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Handshakes in flight at most.
        #[arg(long, default_value_t = 512)]
        concurrency: usize,
    },
}

/// Runs the load generator; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let target = crate::Target {
        addr: cli.target,
        path: cli.path.clone(),
        sources: cli.sources.clone(),
        offset: 0,
        also: cli.also.clone(),
    };
    if let Err(e) = target.check_loopback() {
        eprintln!("bench: {e}: load is only sent to this machine");
        return 64;
    }
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    eprintln!("bench: open-file limit {fd_limit}");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: {e}");
            return 70;
        }
    };
    let server_pid = cli.server_pid;
    let procs = cli.procs.max(1);
    let shard = cli.shard;
    if procs > 1
        && matches!(
            cli.mode,
            Mode::Burst { .. }
                | Mode::SioBurst { .. }
                | Mode::ImDirect { .. }
                | Mode::ImMixed { .. }
                | Mode::ImSync { .. }
                | Mode::ImCatchup { .. }
                | Mode::ImTyping { .. }
                | Mode::ImPresence { .. }
                | Mode::ImKick { .. }
                | Mode::ImStorm { .. }
                | Mode::DocsEdit { .. }
                | Mode::DocsCursors { .. }
                | Mode::DocsCold { .. }
        )
    {
        eprintln!("bench: --procs is for idle, connect-storm, fanout, fanout-max and echo");
        return 64;
    }
    let report: Option<Report> = runtime.block_on(async {
        Some(match cli.mode {
            Mode::Idle {
                connections,
                rate,
                concurrency,
                hold,
                settle,
                socketio,
                polling,
            } => {
                let opts = crate::idle::IdleOptions {
                    connections,
                    rate,
                    concurrency,
                    hold: Duration::from_secs(hold.max(settle)),
                    settle: Duration::from_secs(settle),
                    server_pid,
                    socketio,
                    polling,
                };
                if let Some(i) = shard {
                    crate::idle::run_shard(&target, &opts, procs, i).await;
                    return None;
                }
                crate::idle::run(&target, &opts, procs).await
            }
            Mode::Burst {
                connections,
                rate,
                count,
                size,
                timeout,
            } => {
                let opts = crate::burst::BurstOptions {
                    connections: connections + 1,
                    rate,
                    count,
                    size,
                    timeout: Duration::from_secs(timeout),
                    server_pid,
                };
                crate::burst::run(&target, &opts).await
            }
            Mode::SioBurst {
                connections,
                rate,
                count,
                size,
                timeout,
            } => {
                let opts = crate::sio_burst::SioBurstOptions {
                    connections: connections + 1,
                    rate,
                    count,
                    size,
                    timeout: Duration::from_secs(timeout),
                    server_pid,
                };
                crate::sio_burst::run(&target, &opts).await
            }
            Mode::Fanout {
                receivers,
                rate,
                duration,
                size,
                connect_rate,
                drain,
            } => {
                let opts = crate::fanout::FanoutOptions {
                    receivers,
                    connect_rate,
                    rate,
                    duration: Duration::from_secs(duration),
                    size,
                    drain: Duration::from_secs(drain),
                    server_pid,
                    also_pids: cli.also_pids.clone(),
                    bus_pid: cli.bus_pid,
                    max: None,
                };
                if let Some(i) = shard {
                    crate::fanout::run_shard(&target, &opts, procs, i).await;
                    return None;
                }
                crate::fanout::run(&target, &opts, procs).await
            }
            Mode::FanoutMax {
                receivers,
                start_rate,
                factor,
                steps,
                step_secs,
                p99_ms,
                size,
                connect_rate,
                drain,
            } => {
                let opts = crate::fanout::FanoutOptions {
                    receivers,
                    connect_rate,
                    rate: start_rate,
                    duration: Duration::from_secs(step_secs),
                    size,
                    drain: Duration::from_secs(drain),
                    server_pid,
                    also_pids: cli.also_pids.clone(),
                    bus_pid: cli.bus_pid,
                    max: Some(crate::fanout::MaxOptions {
                        p99_bound: Duration::from_millis(p99_ms),
                        factor: factor.max(1.01),
                        steps,
                    }),
                };
                if let Some(i) = shard {
                    crate::fanout::run_shard(&target, &opts, procs, i).await;
                    return None;
                }
                crate::fanout::run(&target, &opts, procs).await
            }
            Mode::Echo {
                connections,
                rate,
                duration,
                size,
                connect_rate,
            } => {
                let opts = crate::echo::EchoOptions {
                    connections,
                    connect_rate,
                    rate,
                    duration: Duration::from_secs(duration),
                    size,
                    server_pid,
                };
                if let Some(i) = shard {
                    crate::echo::run_shard(&target, &opts, procs, i).await;
                    return None;
                }
                crate::echo::run(&target, &opts, procs).await
            }
            Mode::ImDirect {
                clients,
                rate,
                duration,
                size,
                secret,
                connect_rate,
                drain,
            } => {
                let opts = crate::im::ImOptions {
                    clients,
                    connect_rate,
                    rate,
                    duration: Duration::from_secs(duration),
                    size,
                    secret,
                    drain: Duration::from_secs(drain),
                    server_pid,
                    group_size: 0,
                    group_share: 0.0,
                };
                crate::im::run(&target, &opts).await
            }
            Mode::ImMixed {
                clients,
                group_size,
                group_share,
                rate,
                duration,
                size,
                secret,
                connect_rate,
                drain,
            } => {
                let opts = crate::im::ImOptions {
                    clients,
                    connect_rate,
                    rate,
                    duration: Duration::from_secs(duration),
                    size,
                    secret,
                    drain: Duration::from_secs(drain),
                    server_pid,
                    group_size,
                    group_share,
                };
                crate::im::run(&target, &opts).await
            }
            Mode::ImSync {
                conversations,
                messages,
                runs,
                size,
                secret,
            } => {
                let opts = crate::im_sync::SyncOptions {
                    conversations,
                    messages,
                    runs,
                    size,
                    secret,
                    server_pid,
                };
                crate::im_sync::run_sync(&target, &opts).await
            }
            Mode::ImCatchup {
                clients,
                group_size,
                behind,
                connect_rate,
                concurrency,
                size,
                secret,
            } => {
                let opts = crate::im_sync::CatchupOptions {
                    clients,
                    group_size,
                    behind,
                    connect_rate,
                    concurrency,
                    size,
                    secret,
                    server_pid,
                };
                crate::im_sync::run_catchup(&target, &opts).await
            }
            Mode::ImTyping {
                members,
                typers,
                rate,
                duration,
                connect_rate,
                secret,
            } => {
                let opts = crate::im_typing::TypingOptions {
                    members,
                    typers,
                    rate,
                    duration: Duration::from_secs(duration),
                    connect_rate,
                    secret,
                    server_pid,
                };
                crate::im_typing::run(&target, &opts).await
            }
            Mode::ImPresence {
                users,
                watch,
                churners,
                churn_per_min,
                duration,
                flappers,
                flap_window_ms,
                connect_rate,
                secret,
            } => {
                let opts = crate::im_presence::PresenceOptions {
                    users,
                    watch,
                    churners,
                    churn_per_min,
                    duration: Duration::from_secs(duration),
                    flappers,
                    flap_window: Duration::from_millis(flap_window_ms),
                    connect_rate,
                    secret,
                    server_pid,
                };
                crate::im_presence::run(&target, &opts).await
            }
            Mode::ImStorm {
                members,
                flood_rate,
                calm_members,
                calm_rate,
                duration,
                connect_rate,
                secret,
            } => {
                let opts = crate::im_storm::StormOptions {
                    members,
                    flood_rate,
                    calm_members,
                    calm_rate,
                    duration: Duration::from_secs(duration),
                    connect_rate,
                    secret,
                    server_pid,
                };
                crate::im_storm::run(&target, &opts).await
            }
            Mode::DocsEdit {
                docs,
                editors,
                connections,
                rate,
                duration,
                drain,
                connect_rate,
                join_rate,
                settle,
                verify_docs,
            } => {
                let opts = crate::docs::DocsOptions {
                    docs,
                    editors,
                    connections,
                    activity: crate::docs::Activity::Edit { rate },
                    duration: Duration::from_secs(duration),
                    drain: Duration::from_secs(drain),
                    connect_rate,
                    join_rate,
                    settle: Duration::from_secs(settle),
                    verify_docs,
                    server_pid,
                };
                crate::docs::run(&target, &opts).await
            }
            Mode::DocsCursors {
                users,
                hz,
                duration,
                drain,
            } => {
                let opts = crate::docs::DocsOptions {
                    docs: 1,
                    editors: users,
                    connections: users,
                    activity: crate::docs::Activity::Cursors { hz },
                    duration: Duration::from_secs(duration),
                    drain: Duration::from_secs(drain),
                    connect_rate: 2000,
                    join_rate: 5000,
                    settle: Duration::from_secs(1),
                    verify_docs: 0,
                    server_pid,
                };
                crate::docs::run(&target, &opts).await
            }
            Mode::DocsCold {
                updates,
                chars,
                loads,
                unload_wait,
            } => {
                let opts = crate::docs::ColdOptions {
                    updates,
                    chars,
                    loads,
                    unload_wait: Duration::from_secs(unload_wait),
                };
                crate::docs::run_cold(&target, &opts).await
            }
            Mode::ImKick { iterations, secret } => {
                let opts = crate::im_presence::KickOptions { iterations, secret };
                crate::im_presence::run_kick(&target, &opts).await
            }
            Mode::ConnectStorm {
                connections,
                concurrency,
            } => {
                let opts = crate::storm::StormOptions {
                    connections,
                    concurrency,
                    server_pid,
                };
                if let Some(i) = shard {
                    crate::storm::run_shard(&target, &opts, procs, i).await;
                    return None;
                }
                crate::storm::run(&target, &opts, procs).await
            }
        })
    });
    // A shard reported to its parent already.
    if let Some(report) = report {
        println!("{}", report.json_line());
        eprintln!("{}", report.summary());
    }
    // Connections still open are dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(100));
    0
}
