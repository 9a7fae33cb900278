// Starts the project's binaries for the interop tests and stops them by PID.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const binDir = process.env.HERALD_BIN_DIR ?? path.join(root, "target", "debug");

/** Starts `name` with `args`; resolves with { port, pid, stop() } once it prints LISTENING. */
export function startServer(name, args = ["--port", "0"]) {
  const child = spawn(path.join(binDir, name), args, { stdio: ["ignore", "pipe", "inherit"] });
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
