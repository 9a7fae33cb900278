// The chat example (crates/socketio/examples/chat.rs) with two real socket.io clients.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";
import { once } from "./harness.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const binDir = process.env.HERALD_BIN_DIR ?? path.join(root, "target", "debug");
let child;
let port;

before(async () => {
  child = spawn(path.join(binDir, "examples", "chat"), [], {
    env: { ...process.env, PORT: "0" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the chat example did not start")), 10_000);
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /^LISTENING (\d+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });
});

after(() => child.kill("SIGKILL"));

// Two users join a room; a message from one reaches the other, and leaving is announced.
test("chat example", async () => {
  const alice = io(`http://127.0.0.1:${port}`, { auth: { name: "alice" }, forceNew: true });
  const bob = io(`http://127.0.0.1:${port}`, { auth: { name: "bob" }, forceNew: true });
  await Promise.all([once(alice, "connect"), once(bob, "connect")]);
  assert.deepEqual(await alice.emitWithAck("join", "lobby"), "joined");
  await bob.emitWithAck("join", "lobby");
  const heard = once(bob, "chat");
  alice.emit("chat", { room: "lobby", text: "hello bob" });
  assert.deepEqual(await heard, ["lobby", "alice", "hello bob"]);
  const left = once(bob, "left");
  alice.close();
  assert.deepEqual(await left, ["alice", "client namespace disconnect"]);
  bob.close();
});
