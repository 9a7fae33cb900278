//! The load generator against the bench app, every mode with small numbers, single and
//! multi-process, WebSocket and polling, and `im-direct` against the `herald` binary:
//! what it reports adds up (connections opened, nothing lost or out of order, every echo
//! answered, every send acked and delivered once).

#![allow(clippy::unwrap_used)] // helpers unwrap what the test set up

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    port: u16,
    pid: u32,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server() -> Server {
    start(env!("CARGO_BIN_EXE_bench-server"))
}

fn start(bin: &str) -> Server {
    let mut child = Command::new(bin)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid = lines.next().unwrap().unwrap()["PID ".len()..]
        .parse()
        .unwrap();
    let port = lines.next().unwrap().unwrap()["LISTENING ".len()..]
        .parse()
        .unwrap();
    Server { child, port, pid }
}

/// The load generator, built next to the bench app by `cargo build --workspace --bins`.
fn bench_bin() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_bench-server"));
    let bin = dir.parent().unwrap().join("herald-bench");
    assert!(
        bin.exists(),
        "{} is missing: run cargo build --workspace --bins",
        bin.display()
    );
    bin
}

fn run(s: &Server, args: &[&str]) -> serde_json::Value {
    let out = Command::new(bench_bin())
        .args(["--target", &format!("127.0.0.1:{}", s.port)])
        .args(["--server-pid", &s.pid.to_string()])
        .args(["--sources", "127.0.0.2,127.0.0.3"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no report: {}", String::from_utf8_lossy(&out.stderr)));
    serde_json::from_str(line).unwrap()
}

/// `idle` opens and holds every connection, over WebSocket and polling, in one or
/// several processes, and measures the server.
#[test]
fn idle() {
    let s = server();
    for args in [
        vec![
            "idle",
            "--socketio",
            "--connections",
            "200",
            "--hold",
            "2",
            "--settle",
            "1",
        ],
        vec![
            "--procs",
            "2",
            "idle",
            "--socketio",
            "--connections",
            "201",
            "--hold",
            "2",
            "--settle",
            "1",
        ],
        vec![
            "idle",
            "--socketio",
            "--polling",
            "--connections",
            "50",
            "--hold",
            "2",
            "--settle",
            "1",
        ],
    ] {
        let r = run(&s, &args);
        let n: u64 = args[args.iter().position(|a| *a == "--connections").unwrap() + 1]
            .parse()
            .unwrap();
        assert_eq!(r["connected"], n, "{args:?}: {r}");
        assert_eq!(r["dropped_while_held"], 0, "{r}");
        assert!(
            r["server_rss_per_connection_bytes"].as_u64().unwrap() > 0,
            "{r}"
        );
        assert_eq!(r["handshake_latency"]["count"], n, "{r}");
    }
}

/// `fanout` delivers every message to every receiver in order, single and
/// multi-process; `fanout-max` reports steps and a maximum.
#[test]
fn fanout() {
    let s = server();
    for procs in ["1", "2"] {
        let r = run(
            &s,
            &[
                "--procs",
                procs,
                "fanout",
                "--receivers",
                "100",
                "--rate",
                "20",
                "--duration",
                "2",
                "--drain",
                "5",
            ],
        );
        assert_eq!(r["receivers"], 100, "{r}");
        assert_eq!(r["sent"], 40, "{r}");
        assert_eq!(r["deliveries"], 4000, "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["out_of_order"], 0, "{r}");
        assert_eq!(r["latency"]["count"], 4000, "{r}");
    }
    let r = run(
        &s,
        &[
            "fanout-max",
            "--receivers",
            "50",
            "--start-rate",
            "10",
            "--factor",
            "2",
            "--steps",
            "2",
            "--step-secs",
            "1",
            "--drain",
            "3",
        ],
    );
    assert_eq!(r["steps"].as_array().unwrap().len(), 2, "{r}");
    assert!(r["max_deliveries_per_s"].as_f64().unwrap() > 0.0, "{r}");
}

/// `echo` gets every event answered; `connect-storm` opens every connection.
#[test]
fn echo_and_storm() {
    let s = server();
    for procs in ["1", "2"] {
        let r = run(
            &s,
            &[
                "--procs",
                procs,
                "echo",
                "--connections",
                "40",
                "--rate",
                "200",
                "--duration",
                "2",
            ],
        );
        assert_eq!(r["sent"], 400, "{r}");
        assert_eq!(r["acked"], 400, "{r}");
        assert_eq!(r["rtt"]["count"], 400, "{r}");
        let r = run(
            &s,
            &["--procs", procs, "connect-storm", "--connections", "300"],
        );
        assert_eq!(r["connected"], 300, "{r}");
        assert!(r["handshakes_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// The floor server answers the same scenarios: every echo answered, every broadcast
/// delivered in order, every connection opened.
#[test]
fn floor_server() {
    let s = start(env!("CARGO_BIN_EXE_bench-floor"));
    let r = run(
        &s,
        &[
            "echo",
            "--connections",
            "20",
            "--rate",
            "100",
            "--duration",
            "1",
        ],
    );
    assert_eq!(r["acked"], 100, "{r}");
    let r = run(
        &s,
        &[
            "fanout",
            "--receivers",
            "50",
            "--rate",
            "10",
            "--duration",
            "1",
            "--drain",
            "3",
        ],
    );
    assert_eq!(r["deliveries"], 500, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["out_of_order"], 0, "{r}");
    let r = run(&s, &["connect-storm", "--connections", "100"]);
    assert_eq!(r["connected"], 100, "{r}");
}

/// `im-direct` against the `herald` binary (IM on a SQLite file of the test's own):
/// every send acked, each conversation's seqs from 1 once, every push delivered once.
#[test]
fn im_direct() {
    const SECRET: &str = "loadgen-im-secret-loadgen-im-secret!";
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_bench-server"));
    let herald = dir.parent().unwrap().join("herald");
    assert!(
        herald.exists(),
        "{} is missing: run cargo build --workspace --bins",
        herald.display()
    );
    let store = std::env::temp_dir().join(format!("herald-loadgen-im-{}", std::process::id()));
    let mut child = Command::new(&herald)
        .args(["--port", "0"])
        .env("HERALD_AUTH__JWT_SECRET", SECRET)
        .env(
            "HERALD_IM__STORE",
            format!("sqlite://{}", store.join("herald.db").display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port: u16 = loop {
        let line = lines
            .next()
            .expect("herald exited before listening")
            .unwrap();
        if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
            break rest.split(' ').next().unwrap().parse().unwrap();
        }
    };
    // Keep reading its log, so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let s = Server {
        pid: child.id(),
        child,
        port,
    };
    let r = run(
        &s,
        &[
            "im-direct",
            "--clients",
            "40",
            "--rate",
            "400",
            "--duration",
            "2",
            "--drain",
            "2",
            "--secret",
            SECRET,
        ],
    );
    assert_eq!(r["clients"], 40, "{r}");
    assert_eq!(r["conversations"], 20, "{r}");
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent >= 700, "{r}");
    assert_eq!(r["acked"].as_u64(), Some(sent), "{r}");
    assert_eq!(r["delivered"].as_u64(), Some(sent), "{r}");
    for key in [
        "seq_gaps",
        "seq_duplicates",
        "deliveries_missing",
        "deliveries_twice",
        "refused",
    ] {
        assert_eq!(r[key], 0, "{key}: {r}");
    }
    assert!(r["ack_latency"]["p50_us"].as_u64().unwrap() > 0, "{r}");
    drop(s);
    let _ = std::fs::remove_dir_all(&store);
}
