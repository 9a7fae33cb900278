//! The real `herald` binary: its subcommands, configuration errors (clear message,
//! non-zero exit), protected mode, and a clean exit on SIGTERM.

#![allow(clippy::unwrap_used)] // helpers unwrap what the test set up

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// Runs `herald` with `args` and only the given HERALD_* variables.
fn herald(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    // A message store of the test's own, never one in the source tree.
    cmd.env("HERALD_IM__STORE", temp_store());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("HERALD_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

/// A fresh message store path in the temporary directory.
fn temp_store() -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "sqlite://{}/herald-cli-{}-{n}/herald.db",
        std::env::temp_dir().display(),
        std::process::id()
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// `version` prints the version; `config check` accepts the defaults.
#[test]
fn version_and_check() {
    let o = herald(&["version"], &[]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("herald "));
    let o = herald(&["config", "check"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("configuration ok"));
}

/// A bad value names the key and where it came from, and exits 78.
#[test]
fn bad_value() {
    let o = herald(
        &["config", "check"],
        &[("HERALD_SOCKETIO__PING_INTERVAL_MS", "soon")],
    );
    assert_eq!(o.status.code(), Some(78));
    let e = stderr(&o);
    assert!(e.contains("socketio.ping_interval_ms"), "{e}");
    assert!(e.contains("HERALD_SOCKETIO__PING_INTERVAL_MS"), "{e}");
    // The same when serving: nothing binds.
    let o = herald(&["--port", "0"], &[("HERALD_SOCKETIO__PARSER", "yaml")]);
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("socketio.parser"), "{}", stderr(&o));
}

/// Unknown keys are refused, from the file and from the environment.
#[test]
fn unknown_key() {
    let file = temp_file("unknown.toml", "[server]\nprot = 3000\n");
    let o = herald(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(78));
    let e = stderr(&o);
    assert!(e.contains("server.prot: unknown key"), "{e}");
    assert!(e.contains(file.to_str().unwrap()), "{e}");
    let o = herald(&["config", "check"], &[("HERALD_API__KYE", "x")]);
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("HERALD_API__KYE"), "{}", stderr(&o));
    // A variable that is not SECTION__KEY is no key: a warning with a hint, not an error
    // (orchestrators set HERALD_* variables of their own).
    let o = herald(&["config", "check"], &[("HERALD_API_KEY", "x")]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("did you mean HERALD_API__KEY?"),
        "{}",
        stderr(&o)
    );
}

/// A file that is missing or not TOML is refused with the reason.
#[test]
fn bad_file() {
    let o = herald(
        &["config", "check", "--config", "/nonexistent/herald.toml"],
        &[],
    );
    assert_eq!(o.status.code(), Some(78));
    assert!(
        stderr(&o).contains("cannot read config file"),
        "{}",
        stderr(&o)
    );
    let file = temp_file("broken.toml", "[server\nport = ");
    let o = herald(
        &["config", "check"],
        &[("HERALD_CONFIG", file.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("TOML"), "{}", stderr(&o));
}

/// Protected mode: no auth and a non-loopback address refuses to start and says how to
/// configure auth; with a secret it is accepted.
#[test]
fn protected_mode() {
    let o = herald(&["--host", "0.0.0.0", "--port", "0"], &[]);
    assert_eq!(o.status.code(), Some(78));
    let e = stderr(&o);
    assert!(e.contains("server.host"), "{e}");
    assert!(e.contains("auth.jwt_secret"), "{e}");
    assert!(e.contains("flag --host"), "{e}");
    let o = herald(
        &["config", "check", "--host", "0.0.0.0"],
        &[(
            "HERALD_AUTH__JWT_SECRET",
            "0123456789abcdef0123456789abcdef",
        )],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `config print` shows the effective values with their sources, secrets redacted.
#[test]
fn print() {
    let file = temp_file("print.toml", "[socketio]\nping_interval_ms = 1000\n");
    let o = herald(
        &[
            "config",
            "print",
            "--config",
            file.to_str().unwrap(),
            "--port",
            "4321",
        ],
        &[("HERALD_API__KEY", "very-secret-key")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("port = 4321  # from flag --port"), "{out}");
    assert!(
        out.contains("ping_interval_ms = 1000  # from file"),
        "{out}"
    );
    assert!(out.contains("key = \"<redacted>\"  # from environment variable HERALD_API__KEY"));
    assert!(!out.contains("very-secret-key"));
    // What it prints is a valid config file.
    let printed = temp_file("printed.toml", &out.replace("\"<redacted>\"", "\"k\""));
    let o = herald(
        &["config", "check", "--config", printed.to_str().unwrap()],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The server logs its address, config sources and open-file limit, serves, and exits 0
/// on SIGTERM.
#[test]
fn serves_and_stops_on_sigterm() {
    let mut cmd = Command::new(BIN);
    // A message store of the test's own, never one in the source tree.
    cmd.env("HERALD_IM__STORE", temp_store());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("HERALD_")) {
        cmd.env_remove(k);
    }
    let mut child = cmd
        .args(["--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains("listening on"))
        .unwrap();
    assert!(line.contains("open-file limit"), "{line}");
    assert!(line.contains("config=defaults"), "{line}");
    let port: u16 = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    // One request, by hand: /livez answers.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut res = String::new();
    s.read_to_string(&mut res).unwrap();
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    // A WebSocket upgrade for a path that is not the engine's still reaches the
    // router (WebSockets for the engine's path are answered without it).
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        b"GET /livez HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 256];
    let n = s.read(&mut head).unwrap();
    let res = String::from_utf8_lossy(&head[..n]);
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // Up to 10 s, in steps of 20 ms.
    let mut waited = 0;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(waited < 500, "herald did not exit");
        waited += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

/// `--log-format json` writes one JSON object per line, the listening address among
/// the fields.
#[test]
fn json_logs() {
    let mut cmd = Command::new(BIN);
    // A message store of the test's own, never one in the source tree.
    cmd.env("HERALD_IM__STORE", temp_store());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("HERALD_")) {
        cmd.env_remove(k);
    }
    let mut child = cmd
        .args(["--port", "0", "--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Every line is a JSON object; the startup line says where it listens.
    let mut listening = None;
    for line in BufReader::new(child.stderr.take().unwrap())
        .lines()
        .take(20)
    {
        let line = line.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("listening on")
        {
            listening = Some((v, line));
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (v, first) = listening.expect("no `listening on` line");
    assert_eq!(v["level"], "INFO", "{first}");
    assert!(v["open_files"].as_u64().unwrap() > 0, "{first}");
}

/// `herald bench` is the load generator, and it refuses targets off this machine.
#[test]
fn bench_subcommand() {
    let o = herald(&["bench", "--help"], &[]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for mode in ["idle", "connect-storm", "fanout", "fanout-max", "echo"] {
        assert!(help.contains(mode), "{help}");
    }
    let o = herald(&["bench", "--target", "192.0.2.1:3000", "idle"], &[]);
    assert_eq!(o.status.code(), Some(64));
    assert!(
        stderr(&o).contains("not a loopback address"),
        "{}",
        stderr(&o)
    );
}
