// The `herald` binary with the npm socket.io-client: JWT auth (HS256, RS256, ES256),
// rooms allowed and refused by claims, user rooms, publish, and the HTTP API.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";
import { startHerald, once, sleep, jwt, now } from "./harness.mjs";

const SECRET = "test-secret-test-secret-test-secret!";
const API_KEY = "test-api-key";
const dir = mkdtempSync(path.join(tmpdir(), "herald-test-"));
const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
const rsaPub = path.join(dir, "rsa.pem");
const ecPub = path.join(dir, "ec.pem");
writeFileSync(rsaPub, rsa.publicKey.export({ type: "spki", format: "pem" }));
writeFileSync(ecPub, ec.publicKey.export({ type: "spki", format: "pem" }));

let srv; // HS256 secret, audience "herald", API key
const clients = [];

before(async () => {
  srv = await startHerald({
    HERALD_AUTH__JWT_SECRET: SECRET,
    HERALD_AUTH__AUDIENCE: "herald",
    HERALD_API__KEY: API_KEY,
  });
});

after(async () => {
  for (const c of clients) c.close();
  await srv.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A token for `sub` on the main server, with `extra` claims. */
function token(sub, extra = {}) {
  return jwt({ sub, aud: "herald", exp: now(600), ...extra }, { secret: SECRET });
}

function client(opts = {}, target = srv) {
  const socket = io(target.url, { forceNew: true, reconnection: false, transports: ["websocket"], ...opts });
  clients.push(socket);
  return socket;
}

/** Connects with `token`; resolves once connected. */
async function connected(tok, opts = {}, target = srv) {
  const socket = client({ auth: tok === undefined ? {} : { token: tok }, ...opts }, target);
  await once(socket, "connect");
  return socket;
}

/** Connects with `tok` and resolves with the connect_error. */
async function refused(tok, target = srv) {
  const socket = client({ auth: tok === undefined ? {} : { token: tok } }, target);
  const err = await once(socket, "connect_error");
  assert.equal(socket.connected, false);
  socket.close();
  return err;
}

async function api(method, route, body, key = API_KEY, target = srv) {
  const headers = { "content-type": "application/json" };
  if (key !== null) headers.authorization = `Bearer ${key}`;
  const res = await fetch(target.url + route, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, json, text, headers: res.headers };
}

/** The reason of a "disconnect" event (it may come with details). */
const reason = async (p) => {
  const r = await p;
  return Array.isArray(r) ? r[0] : r;
};

/** Resolves with the events named `event` that arrive within `ms`. */
async function gather(socket, event, ms = 300) {
  const got = [];
  const on = (...args) => got.push(args);
  socket.on(event, on);
  await sleep(ms);
  socket.off(event, on);
  return got;
}

describe("auth", () => {
  // A good token connects, over WebSocket and over polling.
  test("good token", async () => {
    for (const transports of [["websocket"], ["polling"]]) {
      const socket = await connected(token("alice"), { transports });
      assert.ok(socket.connected);
      socket.close();
    }
  });

  // Each kind of bad token is refused with a CONNECT_ERROR whose data says why.
  test("refusals say why", async () => {
    const cases = [
      [undefined, "token_missing"],
      ["", "token_missing"],
      ["not-a-jwt", "token_malformed"],
      [42, "token_malformed"],
      [jwt({ sub: "a", aud: "herald", exp: now(600) }, { secret: "another-secret-another-secret-12345" }), "bad_signature"],
      [token("a", { exp: now(-3600) }), "token_expired"],
      [token("a", { aud: "someone-else" }), "wrong_audience"],
      [token("a", { nbf: now(3600) }), "token_not_yet_valid"],
      [jwt({ aud: "herald", exp: now(600) }, { secret: SECRET }), "invalid_claims"],
      [token("a", { rooms: "chat:*" }), "invalid_claims"],
      [jwt({ sub: "a", aud: "herald", exp: now(600) }, { key: rsa.privateKey, alg: "RS256" }), "wrong_algorithm"],
    ];
    for (const [tok, code] of cases) {
      const err = await refused(tok);
      assert.equal(err.data?.code, code, `token ${JSON.stringify(tok)}: ${JSON.stringify(err.data)}`);
      assert.ok(err.message.length > 0);
      assert.equal(err.data.message, err.message);
    }
  });

  // The metrics count the refusals by reason, and the server is still fine.
  test("refusals are counted", async () => {
    await refused(token("a", { exp: now(-3600) }));
    const res = await fetch(`${srv.url}/metrics`);
    const text = await res.text();
    const m = /herald_auth_refusals_total\{reason="token_expired"\} (\d+)/.exec(text);
    assert.ok(m && Number(m[1]) >= 1, text);
    const socket = await connected(token("still-works"));
    socket.close();
  });

  // RS256 and ES256 tokens verify with a public key file.
  for (const [alg, pub, key] of [["RS256", rsaPub, rsa.privateKey], ["ES256", ecPub, ec.privateKey]]) {
    test(`${alg} with a public key file`, async () => {
      const s = await startHerald({ HERALD_AUTH__PUBLIC_KEY_FILE: pub });
      try {
        const good = jwt({ sub: "pk-user", exp: now(600) }, { key, alg });
        const socket = await connected(good, {}, s);
        socket.close();
        const other = generateKeyPairSync(alg === "RS256" ? "rsa" : "ec", alg === "RS256" ? { modulusLength: 2048 } : { namedCurve: "P-256" });
        const forged = jwt({ sub: "pk-user", exp: now(600) }, { key: other.privateKey, alg });
        assert.equal((await refused(forged, s)).data.code, "bad_signature");
        const hs = jwt({ sub: "pk-user", exp: now(600) }, { secret: SECRET });
        assert.equal((await refused(hs, s)).data.code, "wrong_algorithm");
      } finally {
        await s.stop();
      }
    });
  }

  // A token's rights end at its expiry, also for a socket still connected.
  test("rights end when the token expires", async () => {
    const s = await startHerald({ HERALD_AUTH__JWT_SECRET: SECRET, HERALD_AUTH__LEEWAY_S: "0" });
    try {
      const tok = jwt({ sub: "brief", exp: now(2), rooms: ["*"], publish: ["*"] }, { secret: SECRET });
      const socket = await connected(tok, {}, s);
      assert.deepEqual(await socket.emitWithAck("subscribe", "a"), { ok: true });
      await sleep(3200);
      assert.equal((await socket.emitWithAck("subscribe", "b")).error.code, "token_expired");
      assert.equal((await socket.emitWithAck("publish", "a", "x", 1)).error.code, "token_expired");
      socket.close();
    } finally {
      await s.stop();
    }
  });

  // A configured issuer must be present in the token, not only right when present.
  test("required issuer", async () => {
    const s = await startHerald({ HERALD_AUTH__JWT_SECRET: SECRET, HERALD_AUTH__ISSUER: "https://issuer.test" });
    try {
      const ok = jwt({ sub: "i", exp: now(60), iss: "https://issuer.test" }, { secret: SECRET });
      (await connected(ok, {}, s)).close();
      const none = jwt({ sub: "i", exp: now(60) }, { secret: SECRET });
      assert.equal((await refused(none, s)).data.code, "wrong_issuer");
    } finally {
      await s.stop();
    }
  });

  // With auth on, anonymous clients get in only when allowed, with their own rights.
  test("anonymous clients when allowed", async () => {
    assert.equal((await refused(undefined)).data.code, "token_missing");
    const s = await startHerald({
      HERALD_AUTH__JWT_SECRET: SECRET,
      HERALD_AUTH__ALLOW_ANONYMOUS: "true",
      HERALD_AUTH__ANONYMOUS_ROOMS: "public:*",
      HERALD_AUTH__ANONYMOUS_PUBLISH: "",
    });
    try {
      const anon = await connected(undefined, {}, s);
      assert.deepEqual(await anon.emitWithAck("subscribe", "public:news"), { ok: true });
      const no = await anon.emitWithAck("subscribe", "private:x");
      assert.equal(no.error.code, "forbidden");
      const pub = await anon.emitWithAck("publish", "public:news", "msg", 1);
      assert.equal(pub.error.code, "forbidden");
      // A bad token is refused even though anonymous clients are allowed.
      assert.equal((await refused("garbage", s)).data.code, "token_malformed");
      anon.close();
    } finally {
      await s.stop();
    }
  });
});

describe("rooms", () => {
  // Subscribing is allowed by the token's `rooms` patterns and refused otherwise; user
  // rooms are never open to clients.
  test("subscribe allowed and refused by claims", async () => {
    const socket = await connected(token("bob", { rooms: ["chat:*", "doc:?"] }));
    assert.deepEqual(await socket.emitWithAck("subscribe", "chat:general"), { ok: true });
    assert.deepEqual(await socket.emitWithAck("subscribe", "chat:general"), { ok: true });
    assert.deepEqual(await socket.emitWithAck("subscribe", "doc:1"), { ok: true });
    for (const room of ["doc:12", "secret", "user:alice", "user:bob"]) {
      const ack = await socket.emitWithAck("subscribe", room);
      assert.equal(ack.ok, false, room);
      assert.equal(ack.error.code, "forbidden", room);
      assert.ok(ack.error.message.length > 0);
    }
    for (const bad of [42, "", "x".repeat(201), undefined]) {
      const ack = await socket.emitWithAck("subscribe", bad);
      assert.equal(ack.error.code, "bad_request", String(bad));
    }
    const rooms = await api("GET", "/api/rooms?prefix=chat:");
    assert.equal(rooms.status, 200);
    assert.deepEqual(rooms.json.rooms, [{ name: "chat:general", sockets: 1 }]);
    assert.deepEqual(await socket.emitWithAck("unsubscribe", "chat:general"), { ok: true });
    assert.equal((await socket.emitWithAck("unsubscribe", "user:bob")).error.code, "forbidden");
    assert.equal((await api("GET", "/api/rooms?prefix=chat:")).json.total, 0);
    // A socket's own room is its own: another client may not join it, whatever its
    // token allows (it would read what is meant for that socket alone).
    const wild = await connected(token("wild", { rooms: ["*"] }));
    const ack = await wild.emitWithAck("subscribe", socket.id);
    assert.equal(ack.error.code, "forbidden");
    assert.match(ack.error.message, /socket id/);
    assert.deepEqual(await wild.emitWithAck("subscribe", "not-a-socket-id"), { ok: true });
    wild.close();
    socket.close();
  });

  // A socket may hold a bounded number of rooms.
  test("room limit", async () => {
    const s = await startHerald({ HERALD_AUTH__JWT_SECRET: SECRET, HERALD_LIMITS__MAX_ROOMS_PER_SOCKET: "2" });
    try {
      const socket = await connected(jwt({ sub: "c", exp: now(600), rooms: ["*"] }, { secret: SECRET }), {}, s);
      assert.equal((await socket.emitWithAck("subscribe", "a")).ok, true);
      assert.equal((await socket.emitWithAck("subscribe", "b")).ok, true);
      assert.equal((await socket.emitWithAck("subscribe", "c")).error.code, "too_many_rooms");
      socket.close();
    } finally {
      await s.stop();
    }
  });

  // Publishing reaches the room's subscribers when `publish` allows it, and nobody when
  // it does not.
  test("publish allowed and refused by claims", async () => {
    const reader = await connected(token("reader", { rooms: ["chat:*"] }));
    assert.equal((await reader.emitWithAck("subscribe", "chat:room")).ok, true);
    const writer = await connected(token("writer", { publish: ["chat:*"] }));
    const got = once(reader, "message");
    assert.deepEqual(await writer.emitWithAck("publish", "chat:room", "message", { text: "hi", n: [1, 2] }), { ok: true });
    // The data as sent, then what the server vouches for: who published it.
    assert.deepEqual(await got, [{ text: "hi", n: [1, 2] }, { from: "writer" }]);

    const mute = await connected(token("mute", { rooms: ["chat:*"] }));
    const pending = gather(reader, "message");
    const no = await mute.emitWithAck("publish", "chat:room", "message", "should not arrive");
    assert.equal(no.error.code, "forbidden");
    assert.deepEqual(await pending, []);

    // A bare pattern does not reach user rooms; one that names them does.
    const star = await connected(token("star", { publish: ["*"] }));
    assert.equal((await star.emitWithAck("publish", "user:reader", "dm", 1)).error.code, "forbidden");
    const dm = await connected(token("dm", { publish: ["user:reader"] }));
    const direct = once(reader, "dm");
    assert.deepEqual(await dm.emitWithAck("publish", "user:reader", "dm", 1), { ok: true });
    assert.deepEqual(await direct, [1, { from: "dm" }]);
    star.close();
    dm.close();

    for (const [args, code] of [
      [["chat:room"], "bad_request"],
      [["chat:room", 7, "x"], "bad_request"],
      [["chat:room", "connect", "x"], "bad_request"],
      [["chat:room", "", "x"], "bad_request"],
      [["", "message", "x"], "bad_request"],
    ]) {
      const ack = await writer.emitWithAck("publish", ...args);
      assert.equal(ack.error.code, code, JSON.stringify(args));
    }
    reader.close();
    writer.close();
    mute.close();
  });

  // Binary data and several arguments are relayed as they came, over both transports.
  test("publish relays binary and several arguments", async () => {
    const reader = await connected(token("r2", { rooms: ["bin:*"] }), { transports: ["polling"] });
    assert.equal((await reader.emitWithAck("subscribe", "bin:x")).ok, true);
    const writer = await connected(token("w2", { publish: ["bin:*"] }));
    const got = once(reader, "file");
    await writer.emitWithAck("publish", "bin:x", "file", Buffer.from([1, 2, 3]), { name: "a.bin", inner: Buffer.from([9]) });
    const [data, meta, sender] = await got;
    assert.deepEqual(sender, { from: "w2" });
    assert.deepEqual([...new Uint8Array(data)], [1, 2, 3]);
    assert.equal(meta.name, "a.bin");
    assert.deepEqual([...new Uint8Array(meta.inner)], [9]);
    reader.close();
    writer.close();
  });

  // The msgpack parser: the same events, binary inline.
  test("msgpack parser", async () => {
    const s = await startHerald({ HERALD_AUTH__JWT_SECRET: SECRET, HERALD_SOCKETIO__PARSER: "msgpack" });
    try {
      const tok = (sub) => jwt({ sub, exp: now(600), rooms: ["m:*"], publish: ["m:*"] }, { secret: SECRET });
      const a = await connected(tok("ma"), { parser: msgpackParser }, s);
      const b = await connected(tok("mb"), { parser: msgpackParser }, s);
      assert.deepEqual(await a.emitWithAck("subscribe", "m:1"), { ok: true });
      const got = once(a, "ev");
      assert.deepEqual(await b.emitWithAck("publish", "m:1", "ev", { x: 1 }, Buffer.from([7])), { ok: true });
      const [obj, bin, sender] = await got;
      assert.deepEqual(sender, { from: "mb" });
      assert.deepEqual(obj, { x: 1 });
      assert.deepEqual([...new Uint8Array(bin)], [7]);
      assert.equal((await b.emitWithAck("subscribe", "user:ma")).error.code, "forbidden");
      a.close();
      b.close();
    } finally {
      await s.stop();
    }
  });

  // Without auth (protected mode on loopback) every client is anonymous and may use
  // any room but user rooms.
  test("no auth on loopback", async () => {
    const s = await startHerald({});
    try {
      const a = await connected(undefined, {}, s);
      const b = await connected("some token that means nothing here", {}, s);
      assert.deepEqual(await a.emitWithAck("subscribe", "lobby"), { ok: true });
      const got = once(a, "message");
      assert.deepEqual(await b.emitWithAck("publish", "lobby", "message", "hello"), { ok: true });
      assert.deepEqual(await got, ["hello", { from: null }]);
      assert.equal((await a.emitWithAck("subscribe", "user:x")).error.code, "forbidden");
      a.close();
      b.close();
    } finally {
      await s.stop();
    }
  });
});

describe("http api", () => {
  // A missing or wrong key answers 401 on every endpoint, with a reason.
  test("keys", async () => {
    for (const [method, route, body] of [
      ["POST", "/api/emit", { event: "x" }],
      ["POST", "/api/disconnect", { users: ["x"] }],
      ["GET", "/api/rooms"],
      ["GET", "/api/stats"],
    ]) {
      for (const key of [null, "wrong-key", ""]) {
        const res = await api(method, route, body, key);
        assert.equal(res.status, 401, `${method} ${route} with ${key}`);
        assert.equal(res.json.ok, false);
        assert.equal(res.json.error.code, "unauthorized");
        assert.match(res.headers.get("www-authenticate"), /Bearer/);
      }
      const ok = await api(method, route, body);
      assert.equal(ok.status, 200, `${method} ${route}: ${ok.text}`);
    }
    // A server without api.key refuses every call and says how to turn the API on.
    const s = await startHerald({});
    try {
      const res = await api("GET", "/api/stats", undefined, "anything", s);
      assert.equal(res.status, 401);
      assert.match(res.json.error.message, /api\.key/);
    } finally {
      await s.stop();
    }
  });

  // Emit to rooms, to users (every socket of the user), and to everyone.
  test("emit", async () => {
    const a1 = await connected(token("ann", { rooms: ["news"] }));
    const a2 = await connected(token("ann"), { transports: ["polling"] });
    const b = await connected(token("ben", { rooms: ["news"] }));
    assert.equal((await a1.emitWithAck("subscribe", "news")).ok, true);
    assert.equal((await b.emitWithAck("subscribe", "news")).ok, true);

    let got = [once(a1, "dm"), once(a2, "dm")];
    const quiet = gather(b, "dm");
    let res = await api("POST", "/api/emit", { users: ["ann"], event: "dm", data: { text: "for ann" } });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { ok: true, delivered: 2 });
    assert.deepEqual(await Promise.all(got), [{ text: "for ann" }, { text: "for ann" }]);
    assert.deepEqual(await quiet, []);

    got = [once(a1, "headline"), once(b, "headline")];
    res = await api("POST", "/api/emit", { rooms: ["news"], event: "headline", data: null });
    assert.equal(res.json.delivered, 2);
    assert.deepEqual(await Promise.all(got), [null, null]);

    // Volatile: delivered to sockets whose queue has room (all of these).
    got = [once(a1, "flash"), once(b, "flash")];
    res = await api("POST", "/api/emit", { rooms: ["news"], event: "flash", data: 1, volatile: true });
    assert.deepEqual(res.json, { ok: true, delivered: 2 });
    assert.deepEqual(await Promise.all(got), [1, 1]);

    // Lists given but empty reach nobody; leaving them out reaches everyone.
    const none = gather(b, "nobody");
    res = await api("POST", "/api/emit", { users: [], rooms: [], event: "nobody" });
    assert.deepEqual(res.json, { ok: true, delivered: 0 });
    assert.deepEqual(await none, []);

    got = [once(a1, "all"), once(a2, "all"), once(b, "all")];
    res = await api("POST", "/api/emit", { event: "all" });
    assert.ok(res.json.delivered >= 3);
    await Promise.all(got);

    // Every socket is in the room of its own id, as in the Node server: one socket of
    // a user, and no other, is reached that way; the id rooms are not listed.
    const only = once(a2, "just-you");
    const others = [gather(a1, "just-you"), gather(b, "just-you")];
    res = await api("POST", "/api/emit", { rooms: [a2.id], event: "just-you", data: { n: 1, a: 2 } });
    assert.deepEqual(res.json, { ok: true, delivered: 1 });
    // The data keeps its key order on the way through.
    assert.equal(JSON.stringify(await only), '{"n":1,"a":2}');
    assert.deepEqual(await Promise.all(others), [[], []]);
    const listed = (await api("GET", "/api/rooms")).json.rooms.map((r) => r.name);
    assert.ok(!listed.includes(a2.id), `${listed}`);
    for (const s of [a1, a2, b]) s.close();
  });

  // Bad bodies answer 400 with a message that says what is wrong.
  test("bad bodies", async () => {
    for (const [route, body, hint] of [
      ["/api/emit", "", /empty/],
      ["/api/emit", "{not json", /invalid body/],
      ["/api/emit", { rooms: ["a"] }, /event/],
      ["/api/emit", { event: "x", room: ["a"] }, /unknown field `room`/],
      ["/api/emit", { event: "x", rooms: "a" }, /invalid type/],
      ["/api/emit", { event: "x", volatile: "yes" }, /invalid type/],
      ["/api/emit", { event: "disconnect" }, /reserved/],
      ["/api/emit", { event: "" }, /empty/],
      ["/api/emit", { event: "x", rooms: [""] }, /rooms/],
      ["/api/emit", [1, 2], /invalid/],
      ["/api/disconnect", {}, /users, rooms or sockets/],
      ["/api/disconnect", { sockets: ["nope"] }, /not a socket id/],
    ]) {
      const res = await api("POST", route, body);
      assert.equal(res.status, 400, `${route} ${JSON.stringify(body)}: ${res.text}`);
      assert.equal(res.json.ok, false);
      assert.equal(res.json.error.code, "bad_request");
      assert.match(res.json.error.message, hint);
    }
    const res = await api("GET", "/api/rooms?limit=lots");
    assert.equal(res.status, 400);
    // Still serving.
    assert.equal((await api("GET", "/api/stats")).status, 200);
  });

  // Disconnect by user, by room and by socket id: the client is told (no reconnect).
  test("disconnect", async () => {
    const u1 = await connected(token("kick-me"));
    const u2 = await connected(token("kick-me"));
    const other = await connected(token("stay", { rooms: ["r"] }));
    const gone = [reason(once(u1, "disconnect")), reason(once(u2, "disconnect"))];
    let res = await api("POST", "/api/disconnect", { users: ["kick-me"] });
    assert.deepEqual(res.json, { ok: true, disconnected: 2 });
    assert.deepEqual(await Promise.all(gone), ["io server disconnect", "io server disconnect"]);
    assert.ok(other.connected);

    assert.equal((await other.emitWithAck("subscribe", "r")).ok, true);
    const byRoom = reason(once(other, "disconnect"));
    res = await api("POST", "/api/disconnect", { rooms: ["r"] });
    assert.equal(res.json.disconnected, 1);
    assert.equal(await byRoom, "io server disconnect");

    const s = await connected(token("by-id"));
    const byId = reason(once(s, "disconnect"));
    res = await api("POST", "/api/disconnect", { sockets: [s.id, "AAAAAAAAAAAAAAAAAAAA"] });
    assert.equal(res.json.disconnected, 1);
    assert.equal(await byId, "io server disconnect");
  });

  // Rooms with occupancy, stats, health and metrics.
  test("rooms, stats, health, metrics", async () => {
    const a = await connected(token("occ1", { rooms: ["occ:*"] }));
    const b = await connected(token("occ2", { rooms: ["occ:*"] }));
    await a.emitWithAck("subscribe", "occ:x");
    await b.emitWithAck("subscribe", "occ:x");
    await b.emitWithAck("subscribe", "occ:y");
    let res = await api("GET", "/api/rooms?prefix=occ:");
    assert.deepEqual(res.json.rooms, [
      { name: "occ:x", sockets: 2 },
      { name: "occ:y", sockets: 1 },
    ]);
    res = await api("GET", "/api/rooms?prefix=user:occ&limit=1");
    assert.equal(res.json.total, 2);
    assert.equal(res.json.rooms.length, 1);

    res = await api("GET", "/api/stats");
    assert.ok(res.json.connections.total >= 2);
    assert.ok(res.json.sockets >= 2);
    assert.ok(res.json.handshakes >= 2);

    assert.equal((await fetch(`${srv.url}/livez`)).status, 200);
    assert.equal((await fetch(`${srv.url}/readyz`)).status, 200);
    const metrics = await fetch(`${srv.url}/metrics`);
    assert.match(metrics.headers.get("content-type"), /text\/plain/);
    const text = await metrics.text();
    for (const name of ["herald_connections", "herald_handshakes_total", "herald_packets_received_total", "herald_packets_sent_total"]) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, "m"), name);
    }
    const ws = /^herald_connections\{transport="websocket"\} (\d+)$/m.exec(text);
    assert.ok(Number(ws[1]) >= 2, text);
    a.close();
    b.close();
  });
});
