//! What the bench servers share: their command line (`--port P` or `PORT`), their
//! runtime, their listener and the `PID`/`LISTENING` lines `scripts/compare.py` waits for.

use std::io::Write as _;

/// The port from `--port P`, else `PORT`, else 3000; exits with 64 when it is not one.
pub fn port(program: &str, args: &[String]) -> u16 {
    args.iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var("PORT").ok())
        .map_or(Ok(3000), |p| p.parse())
        .unwrap_or_else(|_| fail(program, 64, "invalid port"))
}

/// The multi-threaded runtime every bench server runs on; exits with 70 without one.
pub fn runtime(program: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(program, 70, &e.to_string()))
}

/// A listener on 127.0.0.1:`port` with a long accept queue (capped by
/// `net.core.somaxconn`), as the herald binary has; says `PID` and `LISTENING` once
/// bound. Exits with 1 when the port cannot be bound.
pub fn listen(program: &str, port: u16) -> tokio::net::TcpListener {
    let bound = tokio::net::TcpSocket::new_v4().and_then(|s| {
        s.set_reuseaddr(true)?;
        s.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
        s.listen(65_535)
    });
    let listener = bound.unwrap_or_else(|e| fail(program, 1, &format!("bind: {e}")));
    let port = listener.local_addr().map_or(port, |a| a.port());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "PID {}", std::process::id());
    let _ = writeln!(out, "LISTENING {port}");
    let _ = out.flush();
    listener
}

fn fail(program: &str, code: i32, message: &str) -> ! {
    eprintln!("{program}: {message}");
    std::process::exit(code)
}
