// Presence on the IM service with the stock socket.io client: subscribe answers the state
// now; watchers get `presence` when a user comes online, changes devices and leaves;
// a Socket.IO disconnect is pushed at once, a lost connection only after the grace (a
// quick reconnect is never seen); a client that vanishes (its process stopped) is
// declared gone by the heartbeat; a flapping user is pushed at most twice per window;
// the subscription cap, bad arguments (never a disconnect), unsubscribe, last_seen
// kept in the store across a restart, and GET /api/im/users/{user}/presence.
import { spawn } from "node:child_process";
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startHerald, once, sleep, jwt, now, tempStore, tempDatabase, dropDatabase, logged, imClient } from "./harness.mjs";

const SECRET = "im-presence-secret-im-presence-secret";
const KEY = "im-presence-api-key";
const GRACE_MS = 1000;
const FLAP_WINDOW_MS = 3000;
const CAP = 5;
const PING_INTERVAL_MS = 300;
const PING_TIMEOUT_MS = 300;
const tok = (sub) => jwt({ sub, exp: now(600) }, { secret: SECRET });

const ENV = {
  HERALD_AUTH__JWT_SECRET: SECRET,
  HERALD_API__KEY: KEY,
  HERALD_IM__PRESENCE_GRACE_MS: String(GRACE_MS),
  HERALD_IM__PRESENCE_FLAP_WINDOW_MS: String(FLAP_WINDOW_MS),
  HERALD_IM__MAX_PRESENCE_SUBSCRIPTIONS: String(CAP),
  HERALD_SOCKETIO__PING_INTERVAL_MS: String(PING_INTERVAL_MS),
  HERALD_SOCKETIO__PING_TIMEOUT_MS: String(PING_TIMEOUT_MS),
};

let server;
const sockets = [];

async function im(user, device = `${user}-dev`) {
  const socket = imClient(server.url, { token: tok(user), device }, sockets);
  await once(socket, "connect");
  return socket;
}

const ask = (socket, event, ...args) => socket.timeout(5000).emitWithAck(event, ...args);

/** A watcher of `users`: its `presence` pushes, each with the time it came. */
async function watcher(name, users) {
  const socket = await im(name);
  const got = [];
  socket.on("presence", (p) => got.push({ ...p, at: Date.now() }));
  const answer = await ask(socket, "presence.subscribe", { users });
  assert.equal(answer.ok, true, JSON.stringify(answer));
  return { socket, got, answer };
}

/** Waits until `got` has a push about `user` matching `fields`; returns it. */
async function until(got, user, fields, ms = 3000) {
  const end = Date.now() + ms;
  for (;;) {
    const p = got.find((p) => p.user === user && Object.entries(fields).every(([k, v]) => p[k] === v));
    if (p) return p;
    if (Date.now() > end) {
      assert.fail(`no presence push of ${user} with ${JSON.stringify(fields)} in ${ms} ms; got ${JSON.stringify(got)}`);
    }
    await sleep(10);
  }
}

/** Kills the TCP connection under `socket` (no Socket.IO disconnect is sent). */
function cut(socket) {
  socket.io.engine.transport.ws._socket.destroy();
}

async function api(path, key = KEY) {
  const res = await fetch(`${server.url}${path}`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  return { status: res.status, body: await res.json() };
}

before(async () => {
  server = await startHerald(ENV);
});

after(async () => {
  for (const s of sockets) s.close();
  await server.stop();
});

describe("im presence", () => {
  test("online, devices and offline are pushed as they change; the answer says the state now", async () => {
    const w = await watcher("p1-w", ["p1-a", "p1-never"]);
    assert.deepEqual(w.answer.presence["p1-never"], { online: false, last_seen: null, devices: 0 });
    assert.equal(w.answer.presence["p1-a"].online, false);

    const before = Date.now();
    const phone = await im("p1-a", "phone");
    const online = await until(w.got, "p1-a", { online: true, devices: 1 });
    assert.ok(online.last_seen >= before - 1000, `last_seen ${online.last_seen} is the connect`);
    const laptop = await im("p1-a", "laptop");
    await until(w.got, "p1-a", { online: true, devices: 2 });

    // Both close with a Socket.IO disconnect: offline within a second, whatever the grace.
    const again = await watcher("p1-w2", ["p1-a"]);
    assert.deepEqual(
      { online: again.answer.presence["p1-a"].online, devices: again.answer.presence["p1-a"].devices },
      { online: true, devices: 2 },
    );
    await sleep(FLAP_WINDOW_MS); // the two pushes above used this window
    laptop.disconnect();
    phone.disconnect();
    const left = Date.now();
    const offline = await until(w.got, "p1-a", { online: false }, 1000);
    assert.ok(offline.at - left < 1000, `offline pushed ${offline.at - left} ms after the disconnect`);
    assert.ok(offline.last_seen >= left - 50, "last_seen is when the last device left");
    assert.equal(offline.devices, 0);
    await until(again.got, "p1-a", { online: false }, 1000);
  });

  test("a lost connection back within the grace is never seen; one that stays lost is, after the grace", async () => {
    const a = await im("p2-a", "phone");
    await sleep(300); // its online push is out before the watcher comes
    const w = await watcher("p2-w", ["p2-a"]);
    assert.equal(w.answer.presence["p2-a"].online, true);
    cut(a);
    await sleep(GRACE_MS / 4);
    const back = await im("p2-a", "phone");
    await sleep(GRACE_MS * 2);
    assert.deepEqual(w.got, [], "a reconnect within the grace changes nothing anyone sees");

    cut(back);
    const lost = Date.now();
    const offline = await until(w.got, "p2-a", { online: false }, GRACE_MS + 2000);
    const after = offline.at - lost;
    assert.ok(after >= GRACE_MS - 50, `offline after ${after} ms: not before the grace (${GRACE_MS} ms)`);
    assert.ok(after < GRACE_MS + 1000, `offline after ${after} ms: soon after the grace`);
  });

  test("a client that vanishes without closing is declared gone by the heartbeat", async () => {
    const w = await watcher("p3-w", ["p3-a"]);
    const script = `
      import { io } from "socket.io-client";
      const s = io(process.env.URL + "/im", { auth: { token: process.env.TOKEN }, transports: ["websocket"], reconnection: false });
      s.on("connect", () => console.log("CONNECTED"));
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      cwd: import.meta.dirname,
      env: { ...process.env, URL: server.url, TOKEN: tok("p3-a") },
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      await new Promise((resolve, reject) => {
        child.stdout.on("data", (d) => String(d).includes("CONNECTED") && resolve());
        child.on("exit", (code) => reject(new Error(`the client exited (${code})`)));
      });
      await until(w.got, "p3-a", { online: true });
      child.kill("SIGSTOP");
      const stopped = Date.now();
      // Noticed within ping interval + timeout, then the grace.
      const bound = PING_INTERVAL_MS + PING_TIMEOUT_MS + GRACE_MS + 1000;
      const offline = await until(w.got, "p3-a", { online: false }, bound + 1000);
      assert.ok(offline.at - stopped <= bound, `offline ${offline.at - stopped} ms after the client stopped (bound ${bound})`);
    } finally {
      child.kill("SIGKILL");
    }
  });

  test("a user who flaps ten times is pushed at most twice per window, and the state at its end", async () => {
    const w = await watcher("p4-w", ["p4-a"]);
    const start = Date.now();
    let last;
    for (let i = 0; i < 10; i++) {
      last = await im("p4-a", "phone");
      await sleep(50);
      last.disconnect();
      await sleep(FLAP_WINDOW_MS / 20);
    }
    last = await im("p4-a", "phone");
    const inWindow = () => w.got.filter((p) => p.at - start < FLAP_WINDOW_MS - 100);
    assert.ok(Date.now() - start < FLAP_WINDOW_MS, "the flaps fit in one window");
    assert.ok(inWindow().length <= 2, `${inWindow().length} pushes in one window: ${JSON.stringify(w.got)}`);
    // Online at the end: that is what the watcher ends with, once the window allows.
    await sleep(FLAP_WINDOW_MS + 500);
    assert.ok(w.got.length <= 3, `${w.got.length} pushes in all: ${JSON.stringify(w.got)}`);
    assert.equal(w.got.at(-1).online, true, JSON.stringify(w.got));
    last.disconnect();
  });

  test("unsubscribe stops the pushes; the cap holds; bad arguments are refused without a disconnect", async () => {
    const w = await watcher("p5-w", ["p5-a"]);
    assert.deepEqual(await ask(w.socket, "presence.unsubscribe", { users: ["p5-a", "p5-nobody"] }), { ok: true });
    const a = await im("p5-a");
    await sleep(500);
    assert.deepEqual(w.got, [], "no push after unsubscribe");
    a.disconnect();

    // The cap counts the users watched, a repeat once.
    const users = Array.from({ length: CAP }, (_, i) => `p5-u${i}`);
    const full = await ask(w.socket, "presence.subscribe", { users: [...users, users[0]] });
    assert.equal(full.ok, true, JSON.stringify(full));
    assert.equal(Object.keys(full.presence).length, CAP);
    const over = await ask(w.socket, "presence.subscribe", { users: ["p5-one-more"] });
    assert.equal(over.ok, false);
    assert.equal(over.error.code, "too_large", JSON.stringify(over));
    // Those already watched are no more.
    assert.equal((await ask(w.socket, "presence.subscribe", { users: [users[1]] })).ok, true);

    for (const bad of [
      undefined,
      "p5-a",
      { users: "p5-a" },
      { users: [1, 2] },
      { users: [""] },
      { users: ["a\u0000b"] },
      { users: null },
    ]) {
      const answer = await ask(w.socket, "presence.subscribe", bad);
      assert.equal(answer.ok, false, `${JSON.stringify(bad)}: ${JSON.stringify(answer)}`);
      assert.equal(answer.error.code, "bad_request", JSON.stringify(answer));
      const un = await ask(w.socket, "presence.unsubscribe", bad);
      assert.equal(un.error?.code, "bad_request", JSON.stringify(un));
    }
    assert.equal(w.socket.connected, true);
    // Still served.
    assert.equal((await ask(w.socket, "presence.unsubscribe", { users })).ok, true);
    assert.equal((await ask(w.socket, "presence.subscribe", { users: ["p5-one-more"] })).ok, true);
  });

  test("an invalid device or platform is refused at connect", async () => {
    for (const auth of [{ device: "" }, { device: "x".repeat(65) }, { device: "bad device!" }, { device: 7 }, { platform: "amiga" }]) {
      const socket = imClient(server.url, { token: tok("p6-a"), ...auth }, sockets);
      const err = await once(socket, "connect_error");
      assert.equal(err.data?.code, "bad_request", `${JSON.stringify(auth)}: ${JSON.stringify(err.data)}`);
      socket.close();
    }
  });

  test("GET /api/im/users/{user}/presence", async () => {
    const a = await im("p7-a", "phone");
    await sleep(200);
    const got = await api("/api/im/users/p7-a/presence");
    assert.equal(got.status, 200, JSON.stringify(got));
    assert.equal(got.body.online, true);
    assert.equal(got.body.devices, 1);
    assert.equal(typeof got.body.last_seen, "number");
    const never = await api("/api/im/users/p7-never/presence");
    assert.deepEqual(never.body, { ok: true, online: false, last_seen: null, devices: 0 });
    // Counted in /metrics: the users online now, the pushes so far, the cache.
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const metric = (name) => Number(new RegExp(`^${name} (\\d+)`, "m").exec(text)?.[1]);
    assert.ok(metric("herald_im_online_users") >= 1, "herald_im_online_users");
    assert.ok(metric("herald_im_presence_pushes_total") > 0, "herald_im_presence_pushes_total");
    assert.ok(metric("herald_im_cached_conversations") >= 0, "herald_im_cached_conversations");
    assert.equal((await api("/api/im/users/p7-a/presence", null)).status, 401);
    assert.equal((await api("/api/im/users/p7-a/presence", "wrong")).status, 401);
    a.disconnect();
  });
});

describe("im presence across a restart", () => {
  test("last_seen is kept in the store", async () => {
    // Two servers, one after the other, on one store that outlives them.
    const db = process.env.IM_TEST_STORE === "postgres" ? tempDatabase() : null;
    const store = { HERALD_IM__STORE: db ? db.url : `sqlite://${tempStore()}` };
    const start = async () => {
      const s = await startHerald({ ...ENV, ...store });
      if (db) await logged(s, /connected to PostgreSQL/);
      return s;
    };
    const saved = server;
    try {
      server = await start();
      const a = await im("p8-a");
      await sleep(100);
      a.disconnect();
      await sleep(1500); // offline pushed, last_seen written behind
      const seen = (await api("/api/im/users/p8-a/presence")).body.last_seen;
      assert.equal(typeof seen, "number");
      await server.stop("SIGTERM");
      server = await start();
      const w = await watcher("p8-w", ["p8-a"]);
      assert.deepEqual(w.answer.presence["p8-a"], { online: false, last_seen: seen, devices: 0 });
      await server.stop();
    } finally {
      server = saved;
      if (db) dropDatabase(db);
    }
  });
});
