// Starts the project's binaries for the interop tests and stops them by PID.
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import { createHmac, sign as cryptoSign } from "node:crypto";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { io } from "socket.io-client";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const binDir = process.env.HERALD_BIN_DIR ?? path.join(root, "target", "debug");

/**
 * Starts `name` with `args` (and `env` added to this process's); resolves with
 * { port, pid, stop() } once it prints LISTENING.
 */
export function startServer(name, args = ["--port", "0"], env = {}) {
  const child = spawn(path.join(binDir, name), args, {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, ...env },
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not print LISTENING`)), 10_000);
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`${name} exited with ${code}`)));
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const m = /^LISTENING (\d+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve({
          port: Number(m[1]),
          pid: child.pid,
          alive: () => child.exitCode === null && child.signalCode === null,
          stop: () =>
            new Promise((done) => {
              if (child.exitCode !== null || child.signalCode !== null) return done();
              child.once("exit", () => done());
              child.kill("SIGKILL");
            }),
        });
      }
    });
  });
}

/** Resolves with the first `event` of `emitter`, or rejects after `ms`. */
export function once(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${event}" within ${ms} ms`)), ms);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args.length > 1 ? args : args[0]);
    });
  });
}

/** Collects `n` "message" events of `socket`; rejects after `ms`. */
export function collect(socket, n, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(
      () => reject(new Error(`got ${got.length} of ${n} messages within ${ms} ms`)),
      ms,
    );
    const onMessage = (data) => {
      got.push(data);
      if (got.length === n) {
        clearTimeout(timer);
        socket.off("message", onMessage);
        resolve(got);
      }
    };
    socket.on("message", onMessage);
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts the `herald` binary on a free port with `env` (HERALD_* variables of this
 * process are not passed on) and `args`; resolves with { port, url, pid, stop(), logs }
 * once it logs the address it listens on.
 */
export function startHerald(env = {}, args = []) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HERALD_")));
  // Each server its own message store, unless the test names one: a SQLite file, or
  // with IM_TEST_STORE=postgres a database of its own on POSTGRES (dropped at stop).
  const database = process.env.IM_TEST_STORE === "postgres" && !env.HERALD_IM__STORE ? tempDatabase() : null;
  const store = { HERALD_IM__STORE: database ? database.url : `sqlite://${tempStore()}` };
  const child = spawn(path.join(binDir, "herald"), ["--port", "0", ...args], {
    env: { ...clean, ...store, ...env },
    stdio: ["ignore", "inherit", "pipe"],
  });
  const logs = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`herald did not start:\n${logs.join("\n")}`)), 10_000);
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`herald exited with ${code}:\n${logs.join("\n")}`)));
    createInterface({ input: child.stderr }).on("line", (line) => {
      logs.push(line);
      if (process.env.HERALD_TEST_LOGS) process.stderr.write(line + "\n");
      const m = /listening on (https?):\/\/[^ ]*:(\d+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        const port = Number(m[2]);
        const server = {
          port,
          url: `${m[1]}://127.0.0.1:${port}`,
          pid: child.pid,
          logs,
          child,
          alive: () => child.exitCode === null && child.signalCode === null,
          stop: (signal = "SIGKILL") =>
            new Promise((done) => {
              const dropped = (code) => {
                if (database) dropDatabase(database);
                done(code);
              };
              if (child.exitCode !== null || child.signalCode !== null) return dropped(child.exitCode);
              child.removeAllListeners("exit");
              child.once("exit", dropped);
              child.kill(signal);
            }),
        };
        // On PostgreSQL the store connects in the background: the server is ready for
        // the IM tests once it has.
        if (!database) return resolve(server);
        logged(server, /connected to PostgreSQL/).then(() => resolve(server), reject);
      }
    });
  });
}

let stores = 0;
/** A fresh path for a message store, in the system's temporary directory. */
export function tempStore() {
  stores += 1;
  return path.join(os.tmpdir(), `herald-test-${process.pid}-${stores}-${Date.now()}`, "herald.db");
}

/**
 * The PostgreSQL server the tests use (HERALD_TEST_POSTGRES, default the one on this
 * machine): `scripts/test` starts it when it is not running.
 */
export const POSTGRES = process.env.HERALD_TEST_POSTGRES ?? "postgres://postgres@127.0.0.1:5432/postgres";

let databases = 0;
/** Creates a database of the test's own on POSTGRES (with `psql`); returns its URL. */
export function tempDatabase() {
  databases += 1;
  const name = `herald_interop_${process.pid}_${databases}`;
  execFileSync("psql", [POSTGRES, "-q", "-v", "ON_ERROR_STOP=1", "-c", `CREATE DATABASE ${name}`], { stdio: "pipe" });
  return { url: `${POSTGRES.replace(/\/[^/]*$/, "")}/${name}`, name };
}

/** Drops a database made by tempDatabase. */
export function dropDatabase({ name }) {
  execFileSync("psql", [POSTGRES, "-q", "-c", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`], { stdio: "pipe" });
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A PostgreSQL server of the test's own (initdb in a temporary directory, on a free
 * port), so that a test may stop and start it: resolves with { url, stop(), start(),
 * remove() }. Runs the server as user `postgres` when the tests run as root.
 */
export async function privatePostgres() {
  const versions = fs.readdirSync("/usr/lib/postgresql").sort((a, b) => Number(b) - Number(a));
  if (!versions.length) throw new Error("no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)");
  const bin = `/usr/lib/postgresql/${versions[0]}/bin`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-pg-"));
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
    fs.chownSync(dir, uid, gid);
  }
  const run = (cmd, args) =>
    execFileSync(asRoot ? "runuser" : cmd, asRoot ? ["-u", "postgres", "--", cmd, ...args] : args, { stdio: "pipe" });
  run(`${bin}/initdb`, ["-D", `${dir}/data`, "-A", "trust", "-U", "postgres", "--no-sync"]);
  const port = await freePort();
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
  const start = () => run(`${bin}/pg_ctl`, ["-D", `${dir}/data`, "-o", options, "-l", `${dir}/log`, "-w", "start"]);
  const stop = () => run(`${bin}/pg_ctl`, ["-D", `${dir}/data`, "-m", "fast", "-w", "stop"]);
  start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start,
    stop,
    remove: () => {
      try {
        stop();
      } catch {
        // Already stopped.
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Resolves once `server` has logged a line matching `pattern` (within 10 s). */
export async function logged(server, pattern) {
  for (let i = 0; i < 200; i++) {
    if (server.logs.some((l) => pattern.test(l))) return;
    await sleep(50);
  }
  throw new Error(`no log line matching ${pattern}:\n${server.logs.join("\n")}`);
}

/** Runs the `herald` binary to completion; resolves with { code, stdout, stderr }. */
export function runHerald(args, env = {}) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HERALD_")));
  const child = spawn(path.join(binDir, "herald"), args, {
    env: { ...clean, HERALD_IM__STORE: `sqlite://${tempStore()}`, ...env },
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`herald ${args.join(" ")} did not exit`));
    }, 10_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const b64url = (x) => Buffer.from(x).toString("base64url");

/**
 * Signs a JWT with node:crypto: HS256 with `secret`, RS256 or ES256 with the private
 * `key`. `header` adds header fields.
 */
export function jwt(claims, { secret, key, alg = "HS256", header = {} } = {}) {
  const input = `${b64url(JSON.stringify({ alg, typ: "JWT", ...header }))}.${b64url(JSON.stringify(claims))}`;
  let sig;
  if (alg === "HS256") sig = createHmac("sha256", secret).update(input).digest();
  else if (alg === "RS256") sig = cryptoSign("sha256", Buffer.from(input), key);
  else if (alg === "ES256") sig = cryptoSign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
  else throw new Error(`alg ${alg}`);
  return `${input}.${b64url(sig)}`;
}

/** Seconds since the epoch, plus `s`. */
export const now = (s = 0) => Math.floor(Date.now() / 1000) + s;

/**
 * A stock client on namespace `/im` of `url` with `auth`: the WebSocket transport, a
 * connection of its own, no reconnection; pushed to `sockets` (the test closes them at
 * the end). Not connected yet: wait for its `connect` (or `connect_error`).
 */
export function imClient(url, auth, sockets) {
  const socket = io(`${url}/im`, { auth, forceNew: true, transports: ["websocket"], reconnection: false });
  sockets?.push(socket);
  return socket;
}

/**
 * A redis-server of the test's own on a free port (never the shared one): resolves with
 * { url, port, stop(), start(), pause(), resume() } once it answers.
 */
export async function privateRedis() {
  const port = await freePort();
  let child = null;
  const start = async () => {
    child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: "ignore",
    });
    for (let i = 0; i < 200; i++) {
      const up = await new Promise((resolve) => {
        const s = net.connect(port, "127.0.0.1", () => s.end(() => resolve(true)));
        s.once("error", () => resolve(false));
      });
      if (up) return;
      await sleep(25);
    }
    throw new Error("redis-server did not start (apt-get install redis-server)");
  };
  const stop = () =>
    new Promise((done) => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return done();
      child.once("exit", () => done());
      child.kill("SIGKILL");
    });
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    start,
    stop,
    pause: () => child.kill("SIGSTOP"),
    resume: () => child.kill("SIGCONT"),
  };
}

/** Resolves once `f()` (maybe async) is true, checking every 25 ms; rejects after `ms`. */
export async function until(f, what, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(25);
  }
}
