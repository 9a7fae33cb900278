// Typing on the IM service with the stock socket.io client: the set of typers pushed at
// most once per window and only when it changed; cleared by `typing: false`, by sending,
// by the typing TTL, when the user's last socket leaves and when a client vanishes
// without closing (its process stopped: the heartbeat ends it); refused for non-members
// and bad arguments without a disconnect.
import { spawn } from "node:child_process";
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startHerald, once, sleep, jwt, now, imClient } from "./harness.mjs";

const SECRET = "im-typing-secret-im-typing-secret";
const TTL_MS = 2500;
const WINDOW_MS = 100;
// A short heartbeat, so that a client that stopped answering is gone well before the TTL.
const PING_INTERVAL_MS = 300;
const PING_TIMEOUT_MS = 300;
const tok = (sub) => jwt({ sub, exp: now(600) }, { secret: SECRET });

let server;
const sockets = [];

async function im(user, device = `${user}-dev`) {
  const socket = imClient(server.url, { token: tok(user), device }, sockets);
  await once(socket, "connect");
  await sleep(50);
  return socket;
}

const ask = (socket, event, ...args) => socket.timeout(5000).emitWithAck(event, ...args);

/** Records every `typing` push of `socket` for conversation `id`. */
function record(socket, id) {
  const got = [];
  socket.on("typing", (p) => {
    if (p.conversation === id) got.push({ at: Date.now(), users: p.users });
  });
  return got;
}

/** Waits until `got` has a push whose users are `users`, at most `ms`. */
async function until(got, users, ms = 3000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (got.some((p) => JSON.stringify(p.users) === JSON.stringify(users))) return;
    await sleep(20);
  }
  assert.fail(`no typing push of ${JSON.stringify(users)} in ${ms} ms; got ${JSON.stringify(got.map((p) => p.users))}`);
}

async function group(owner, members) {
  const made = await ask(owner, "conversation.create", { type: "group", title: "typing", members });
  assert.equal(made.ok, true, JSON.stringify(made));
  await sleep(50);
  return made.conversation.id;
}

before(async () => {
  server = await startHerald({
    HERALD_AUTH__JWT_SECRET: SECRET,
    HERALD_IM__TYPING_TTL_MS: String(TTL_MS),
    HERALD_IM__TYPING_WINDOW_MS: String(WINDOW_MS),
    HERALD_SOCKETIO__PING_INTERVAL_MS: String(PING_INTERVAL_MS),
    HERALD_SOCKETIO__PING_TIMEOUT_MS: String(PING_TIMEOUT_MS),
  });
});

after(async () => {
  for (const s of sockets) s.close();
  await server.stop();
});

describe("im typing", () => {
  test("keystrokes of many typers reach the others as one set per window, only when it changed", async () => {
    const [a, b, c] = await Promise.all(["ty-a", "ty-b", "ty-c"].map((u) => im(u)));
    const id = await group(a, ["ty-b", "ty-c"]);
    const seen = record(c, id);
    // 40 events from two typers within about 200 ms.
    for (let i = 0; i < 20; i++) {
      a.emit("typing", { conversation: id, typing: true });
      b.emit("typing", { conversation: id, typing: true });
      await sleep(10);
    }
    await until(seen, ["ty-a", "ty-b"]);
    await sleep(4 * WINDOW_MS);
    // At most the two sets the windows can have seen ({a}, then {a, b}), never a repeat.
    assert.ok(seen.length >= 1 && seen.length <= 2, JSON.stringify(seen));
    for (let i = 1; i < seen.length; i++) {
      assert.notDeepEqual(seen[i].users, seen[i - 1].users);
      assert.ok(seen[i].at - seen[i - 1].at >= WINDOW_MS / 2, "two pushes in one window");
    }
    // Typing on changes nothing: nothing is pushed.
    const count = seen.length;
    a.emit("typing", { conversation: id, typing: true });
    await sleep(3 * WINDOW_MS);
    assert.equal(seen.length, count);

    // typing: false, then a message sent: each ends one typer.
    a.emit("typing", { conversation: id, typing: false });
    await until(seen, ["ty-b"]);
    const sent = await ask(b, "send", { conversation: id, cid: "ty-1", body: "hi" });
    assert.equal(sent.ok, true, JSON.stringify(sent));
    await until(seen, []);
  });

  test("a typer counts as typing for the TTL after the last `typing: true`", async () => {
    const [a, c] = await Promise.all(["tt-a", "tt-c"].map((u) => im(u)));
    const id = await group(a, ["tt-c"]);
    const seen = record(c, id);
    const start = Date.now();
    a.emit("typing", { conversation: id, typing: true });
    await until(seen, ["tt-a"]);
    await until(seen, [], TTL_MS + 1500);
    const cleared = seen.find((p) => p.users.length === 0).at - start;
    assert.ok(cleared >= TTL_MS - 50, `cleared after ${cleared} ms, before the TTL`);
  });

  test("a user stops typing when the last of their sockets leaves, not before", async () => {
    const a1 = await im("tl-a", "phone");
    const a2 = await im("tl-a", "laptop");
    const c = await im("tl-c");
    const id = await group(a1, ["tl-c"]);
    const seen = record(c, id);
    a1.emit("typing", { conversation: id, typing: true });
    await until(seen, ["tl-a"]);
    a1.close();
    await sleep(5 * WINDOW_MS);
    assert.deepEqual(seen.at(-1).users, ["tl-a"], "one device left, the user is still there");
    a2.close();
    const start = Date.now();
    await until(seen, [], 1000);
    assert.ok(Date.now() - start < TTL_MS, "cleared by the disconnect, not by the TTL");
  });

  test("a client that vanishes without closing stops typing when the heartbeat ends it", async () => {
    const c = await im("tv-c");
    const id = await group(c, ["tv-a"]);
    const seen = record(c, id);
    // The typer in a process of its own, which is then stopped (SIGSTOP): its
    // connection stays open, it answers no ping.
    const script = `
      import { io } from "socket.io-client";
      const s = io(process.env.URL + "/im", { auth: { token: process.env.TOKEN }, transports: ["websocket"], reconnection: false });
      s.on("connect", () => { s.emit("typing", { conversation: Number(process.env.CONV), typing: true }); console.log("TYPING"); });
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      cwd: import.meta.dirname,
      env: { ...process.env, URL: server.url, TOKEN: tok("tv-a"), CONV: String(id) },
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      await new Promise((resolve, reject) => {
        child.stdout.on("data", (d) => String(d).includes("TYPING") && resolve());
        child.on("exit", (code) => reject(new Error(`the typer exited (${code})`)));
      });
      await until(seen, ["tv-a"]);
      const typedAt = seen.find((p) => p.users.includes("tv-a")).at;
      child.kill("SIGSTOP");
      await until(seen, [], TTL_MS + 1500);
      const cleared = seen.find((p) => p.users.length === 0).at - typedAt;
      assert.ok(
        cleared < TTL_MS / 2,
        `cleared ${cleared} ms after typing: by the TTL (${TTL_MS} ms), not by the heartbeat`,
      );
    } finally {
      child.kill("SIGKILL");
    }
  });

  test("direct conversations too, and the typer's other devices see the set", async () => {
    const a1 = await im("td-a", "phone");
    const a2 = await im("td-a", "laptop");
    const b = await im("td-b");
    const made = await ask(a1, "conversation.create", { type: "direct", with: "td-b" });
    const id = made.conversation.id;
    await sleep(50);
    const atB = record(b, id);
    const atA2 = record(a2, id);
    const answer = await ask(a1, "typing", { conversation: id, typing: true });
    assert.deepEqual(answer, { ok: true });
    await until(atB, ["td-a"]);
    await until(atA2, ["td-a"]);
  });

  test("non-members and bad arguments are refused, change nothing and keep the socket", async () => {
    const [a, b, x] = await Promise.all(["tb-a", "tb-b", "tb-x"].map((u) => im(u)));
    const id = await group(a, ["tb-b"]);
    const seen = record(b, id);
    const cases = [
      [x, { conversation: id, typing: true }, "not_found"],
      [a, { conversation: 999_999_999, typing: true }, "not_found"],
      [a, { conversation: String(id), typing: true }, "bad_request"],
      [a, { conversation: id, typing: "yes" }, "bad_request"],
      [a, { conversation: id }, "bad_request"],
      [a, "typing", "bad_request"],
    ];
    for (const [socket, args, code] of cases) {
      const answer = await ask(socket, "typing", args);
      assert.equal(answer.ok, false, JSON.stringify([args, answer]));
      assert.equal(answer.error.code, code, JSON.stringify([args, answer]));
    }
    // Without an ack: nothing happens either.
    x.emit("typing", { conversation: id, typing: true });
    x.emit("typing", null);
    await sleep(4 * WINDOW_MS);
    assert.deepEqual(seen, [], "nobody was announced as typing");
    for (const s of [a, x]) assert.equal(s.connected, true);
    // And the service still works for them.
    a.emit("typing", { conversation: id, typing: true });
    await until(seen, ["tb-a"]);
  });
});
