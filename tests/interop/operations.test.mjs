// Operations features of the `herald` binary, each limit with an abusive client over
// real sockets, checking both what the abuser sees and that well-behaved clients on the
// same server are unaffected: connect floods, spoofed X-Forwarded-For, access lists,
// per-address caps, tiers and eviction, event floods, per-user publish rates, a client
// that stops reading during a broadcast storm, oversized payloads.
import { test, after, describe } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { io } from "socket.io-client";
import { startHerald, once, sleep, jwt, now } from "./harness.mjs";

const SECRET = "ops-secret-ops-secret-ops-secret-!!";
const API_KEY = "ops-api-key";
const servers = [];
const clients = [];

after(async () => {
  for (const c of clients) c.close();
  for (const s of servers) await s.stop();
});

async function herald(env) {
  const s = await startHerald({ HERALD_API__KEY: API_KEY, ...env });
  servers.push(s);
  return s;
}

function client(target, opts = {}) {
  const socket = io(target.url, { forceNew: true, reconnection: false, transports: ["websocket"], ...opts });
  clients.push(socket);
  return socket;
}

async function connected(target, opts = {}) {
  const socket = client(target, opts);
  await once(socket, "connect");
  return socket;
}

/** A polling handshake from `localAddress`; resolves with { status, headers, body }. */
function handshake(target, localAddress, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: "127.0.0.1", port: target.port, path: "/socket.io/?EIO=4&transport=polling", localAddress, headers, agent: false },
      (res) => {
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
  });
}

async function api(target, method, route, body) {
  const res = await fetch(target.url + route, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

async function metric(target, line) {
  const text = await (await fetch(`${target.url}/metrics`)).text();
  const m = new RegExp(`^${line.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : NaN;
}

/** A bystander on `target` that must keep working: an event round trip. */
async function stillServes(socket) {
  assert.ok(socket.connected, "the bystander was disconnected");
  assert.deepEqual(await socket.timeout(3000).emitWithAck("subscribe", "bystanders"), { ok: true });
}

describe("admission", () => {
  // Loopback clients are trusted and exempt from the per-address limits by default (a
  // proxy on the same host, a local load test): a burst past the default connect burst
  // (100) from one loopback address is admitted whole, and the startup line says so.
  test("loopback is exempt by default", async () => {
    const s = await herald({});
    assert.ok(s.logs.some((l) => l.includes("loopback peers trusted as proxies and exempt from per-address limits")), s.logs.join("\n"));
    const results = await Promise.all(Array.from({ length: 150 }, () => handshake(s, "127.0.0.2")));
    assert.deepEqual(results.map((r) => r.status), Array(150).fill(200));
    // Behind a proxy on the same host, its clients are told apart by X-Forwarded-For.
    const proxied = await Promise.all(
      Array.from({ length: 120 }, () => handshake(s, "127.0.0.1", { "x-forwarded-for": "203.0.113.9" })),
    );
    const limited = proxied.filter((r) => r.status === 429);
    assert.ok(limited.length >= 15, `the proxied client was limited ${limited.length} times`);
    assert.equal(JSON.parse(limited[0].body).code, "connect_rate_exceeded");
    assert.ok(s.logs.some((l) => l.includes("connection refused from 203.0.113.9")), s.logs.join("\n"));
  });

  // A connect flood from one address hits the rate: 429 with Retry-After and a code; a
  // client from another address, and one already connected, are not affected. The
  // refusals are logged with the address and the setting, at most a line a second.
  test("connect flood from one address", async () => {
    const s = await herald({
      HERALD_SERVER__TRUST_LOOPBACK: "false",
      HERALD_LIMITS__CONNECT_RATE_PER_IP: "5",
      HERALD_LIMITS__CONNECT_BURST_PER_IP: "10",
    });
    const bystander = await connected(s, { localAddress: "127.0.0.3" });
    const results = await Promise.all(Array.from({ length: 40 }, () => handshake(s, "127.0.0.2")));
    const ok = results.filter((r) => r.status === 200);
    const limited = results.filter((r) => r.status === 429);
    assert.ok(ok.length >= 10 && ok.length <= 12, `admitted ${ok.length}`);
    assert.equal(ok.length + limited.length, 40);
    for (const r of limited) {
      assert.equal(JSON.parse(r.body).code, "connect_rate_exceeded");
      assert.ok(Number(r.headers["retry-after"]) >= 1);
    }
    await stillServes(bystander);
    const other = await connected(s, { localAddress: "127.0.0.4" });
    await stillServes(other);
    assert.ok((await metric(s, 'herald_handshake_refusals_total{reason="connect_rate_exceeded"}')) >= 28);
    const lines = s.logs.filter((l) => l.includes("connection refused from 127.0.0.2"));
    assert.ok(lines.length >= 1 && lines.length <= 3, `${lines.length} refusal lines:\n${lines.join("\n")}`);
    assert.match(lines[0], /limits\.connect_rate_per_ip = 5\/s, limits\.connect_burst_per_ip = 10/);
  });

  // X-Forwarded-For counts only from a trusted proxy: spoofed headers from anyone else
  // change nothing, while the proxy's clients are told apart.
  test("spoofed forwarded-for from an untrusted peer", async () => {
    const s = await herald({
      HERALD_SERVER__TRUST_LOOPBACK: "false",
      HERALD_SERVER__TRUSTED_PROXIES: "127.0.0.5",
      HERALD_LIMITS__CONNECT_RATE_PER_IP: "1",
      HERALD_LIMITS__CONNECT_BURST_PER_IP: "3",
    });
    const spoofed = await Promise.all(
      Array.from({ length: 10 }, (_, i) => handshake(s, "127.0.0.2", { "x-forwarded-for": `10.1.1.${i}` })),
    );
    assert.equal(spoofed.filter((r) => r.status === 200).length, 3);
    assert.equal(spoofed.filter((r) => r.status === 429).length, 7);
    const proxied = await Promise.all(
      Array.from({ length: 10 }, (_, i) => handshake(s, "127.0.0.5", { "x-forwarded-for": `10.2.2.${i}` })),
    );
    assert.deepEqual(proxied.map((r) => r.status), Array(10).fill(200));
    // A client claiming to be someone before the proxy is still the proxy's client.
    const chained = await Promise.all(
      Array.from({ length: 5 }, () => handshake(s, "127.0.0.5", { "x-forwarded-for": "6.6.6.6, 10.3.3.3" })),
    );
    assert.equal(chained.filter((r) => r.status === 200).length, 3);
  });

  // Concurrent connections per address: the extra one is refused until one closes.
  test("connections per address", async () => {
    const s = await herald({
      HERALD_SERVER__TRUST_LOOPBACK: "false",
      HERALD_LIMITS__MAX_CONNECTIONS_PER_IP: "3",
      HERALD_SOCKETIO__CORS_ORIGINS: "https://app.test",
    });
    const three = [];
    for (let i = 0; i < 3; i++) three.push(await connected(s, { localAddress: "127.0.0.6" }));
    const fourth = client(s, { localAddress: "127.0.0.6" });
    const err = await once(fourth, "connect_error");
    assert.match(String(err.message), /websocket error|xhr poll error|429/i);
    const res = await handshake(s, "127.0.0.6", { origin: "https://app.test" });
    assert.equal(res.status, 429);
    assert.equal(JSON.parse(res.body).code, "too_many_connections_from_address");
    // A browser may read the refusal: it carries the CORS headers of any answer.
    assert.equal(res.headers["access-control-allow-origin"], "https://app.test");
    three[0].close();
    await sleep(200);
    const again = await connected(s, { localAddress: "127.0.0.6" });
    await stillServes(again);
    await stillServes(three[1]);
  });

  // TCP connections that never send a request count against their address too (twice
  // the per-address cap plus 16): past that, new ones are closed at once; others are
  // not affected, and the address gets its share back as they close.
  test("idle TCP connections per address", async () => {
    const s = await herald({ HERALD_SERVER__TRUST_LOOPBACK: "false", HERALD_LIMITS__MAX_CONNECTIONS_PER_IP: "2" });
    const idle = [];
    for (let i = 0; i < 20; i++) {
      const sock = net.connect({ host: "127.0.0.1", port: s.port, localAddress: "127.0.0.7" });
      await once(sock, "connect");
      idle.push(sock);
    }
    await sleep(100);
    const extra = net.connect({ host: "127.0.0.1", port: s.port, localAddress: "127.0.0.7" });
    extra.on("error", () => {});
    await once(extra, "close");
    for (const sock of idle) assert.ok(!sock.destroyed, "the first 20 stay open");
    const bystander = await connected(s, { localAddress: "127.0.0.8" });
    await stillServes(bystander);
    for (const sock of idle) sock.destroy();
    await sleep(200);
    assert.equal((await handshake(s, "127.0.0.7")).status, 200);
    assert.ok((await metric(s, 'herald_handshake_refusals_total{reason="too_many_connections_from_address"}')) >= 1);
  });

  // Access lists change at run time: denied addresses get 403, allowed ones skip the
  // per-address limits; bad networks are refused with 400.
  test("allow and deny lists through the API", async () => {
    const s = await herald({ HERALD_SERVER__TRUST_LOOPBACK: "false", HERALD_LIMITS__MAX_CONNECTIONS_PER_IP: "1" });
    let res = await api(s, "POST", "/api/access", { deny: ["127.0.0.7/32"] });
    assert.equal(res.status, 200);
    assert.deepEqual(res.json.deny, ["127.0.0.7/32"]);
    const denied = await handshake(s, "127.0.0.7");
    assert.equal(denied.status, 403);
    assert.equal(JSON.parse(denied.body).code, "address_denied");
    assert.equal(denied.headers["retry-after"], undefined);
    assert.equal((await handshake(s, "127.0.0.8")).status, 200);
    res = await api(s, "POST", "/api/access", { allow: ["127.0.0.8"], deny: [] });
    assert.deepEqual(res.json, { ok: true, allow: ["127.0.0.8/32"], deny: [] });
    const many = await Promise.all(Array.from({ length: 5 }, () => handshake(s, "127.0.0.8")));
    assert.deepEqual(many.map((r) => r.status), Array(5).fill(200));
    assert.equal((await handshake(s, "127.0.0.7")).status, 200);
    res = await api(s, "POST", "/api/access", { deny: ["not-a-network"] });
    assert.equal(res.status, 400);
    assert.equal((await api(s, "GET", "/api/access")).json.allow[0], "127.0.0.8/32");
  });
});

describe("tiers", () => {
  // Full server: a critical newcomer evicts the oldest degraded socket (told first), a
  // degraded newcomer is refused, tier caps hold.
  test("eviction of the oldest degraded socket", async () => {
    const s = await herald({
      HERALD_AUTH__JWT_SECRET: SECRET,
      HERALD_LIMITS__MAX_CONNECTIONS: "3",
      HERALD_TIERS__CRITICAL_MAX_CONNECTIONS: "1",
    });
    const tok = (sub, tier) => jwt({ sub, tier, exp: now(600), rooms: ["*"] }, { secret: SECRET });
    const old = await connected(s, { auth: { token: tok("d1", "degraded") } });
    const told = once(old, "forced_disconnect");
    const gone = once(old, "disconnect");
    const young = await connected(s, { auth: { token: tok("d2", "degraded") } });
    const std = await connected(s, { auth: { token: tok("s1", "standard") } });
    const late = client(s, { auth: { token: tok("d3", "degraded") } });
    const refusal = await once(late, "connect_error");
    assert.equal(refusal.data.code, "server_full");
    assert.ok(refusal.data.retryAfterMs > 0);
    const vip = await connected(s, { auth: { token: tok("c1", "critical") } });
    assert.deepEqual(await told, { reason: "evicted", message: "the server is full and needs room for a connection of a higher tier" });
    const reason = await gone;
    assert.equal(Array.isArray(reason) ? reason[0] : reason, "io server disconnect");
    assert.ok(young.connected && std.connected && vip.connected);
    await stillServes(young);
    const vip2 = client(s, { auth: { token: tok("c2", "critical") } });
    assert.equal((await once(vip2, "connect_error")).data.code, "tier_full");
    assert.equal(await metric(s, 'herald_forced_disconnects_total{reason="evicted"}'), 1);
    assert.equal(await metric(s, 'herald_sockets_by_tier{tier="critical"}'), 1);
  });
});

describe("tier ping intervals", () => {
  // A tier's own ping interval applies from the start: critical connections are pinged
  // more often than the interval the handshake announced.
  test("critical connections are pinged more often", async () => {
    const s = await herald({
      HERALD_AUTH__JWT_SECRET: SECRET,
      HERALD_SOCKETIO__PING_INTERVAL_MS: "3000",
      HERALD_TIERS__CRITICAL_PING_INTERVAL_MS: "300",
    });
    const tok = (sub, tier) => jwt({ sub, tier, exp: now(600) }, { secret: SECRET });
    const vip = await connected(s, { auth: { token: tok("p1", "critical") } });
    const std = await connected(s, { auth: { token: tok("p2", "standard") } });
    const pings = { vip: 0, std: 0 };
    vip.io.engine.on("ping", () => pings.vip++);
    std.io.engine.on("ping", () => pings.std++);
    await sleep(2000);
    assert.ok(pings.vip >= 4, `critical pinged ${pings.vip} times in 2 s`);
    assert.equal(pings.std, 0, "standard follows the announced 3 s interval");
    assert.ok(vip.connected && std.connected);
  });
});

describe("rates", () => {
  // An event flood gets rate_limited acks with a retry hint, then a forced disconnect;
  // a calm socket on the same server is unaffected.
  test("event flood", async () => {
    const s = await herald({
      HERALD_LIMITS__EVENTS_PER_SECOND: "10",
      HERALD_LIMITS__EVENTS_BURST: "20",
      HERALD_LIMITS__MAX_RATE_VIOLATIONS: "30",
    });
    const calm = await connected(s);
    const flood = await connected(s);
    const told = once(flood, "forced_disconnect");
    const acks = [];
    for (let i = 0; i < 100; i++) acks.push(flood.timeout(3000).emitWithAck("subscribe", "r").catch(() => "none"));
    const results = await Promise.all(acks);
    const ok = results.filter((r) => r && r.ok === true).length;
    const limited = results.filter((r) => r && r.error && r.error.code === "rate_limited");
    assert.ok(ok >= 20 && ok <= 22, `ok ${ok}`);
    assert.ok(limited.length >= 29, `limited ${limited.length}`);
    assert.ok(limited.every((r) => r.error.retryAfterMs > 0));
    assert.deepEqual(await told, { reason: "rate_limited", message: "rate limited" });
    await sleep(100);
    assert.equal(flood.connected, false);
    await stillServes(calm);
    assert.equal(await metric(s, 'herald_forced_disconnects_total{reason="rate_limited"}'), 1);
  });

  // Publishes are limited per user across all the user's sockets.
  test("publishes per user", async () => {
    const s = await herald({
      HERALD_AUTH__JWT_SECRET: SECRET,
      HERALD_LIMITS__USER_PUBLISHES_PER_SECOND: "2",
      HERALD_LIMITS__USER_PUBLISHES_BURST: "4",
    });
    const tok = (sub) => jwt({ sub, exp: now(600), publish: ["*"] }, { secret: SECRET });
    const a = await connected(s, { auth: { token: tok("u") } });
    const b = await connected(s, { auth: { token: tok("u") } });
    const other = await connected(s, { auth: { token: tok("v") } });
    const outcomes = [];
    for (let i = 0; i < 4; i++) outcomes.push(await (i % 2 ? a : b).emitWithAck("publish", "room", "e", i));
    assert.ok(outcomes.every((o) => o.ok));
    const fifth = await a.emitWithAck("publish", "room", "e", 5);
    assert.equal(fifth.error.code, "rate_limited");
    assert.ok(fifth.error.retryAfterMs > 0);
    assert.equal((await b.emitWithAck("publish", "room", "e", 6)).error.code, "rate_limited");
    assert.deepEqual(await other.emitWithAck("publish", "room", "e", 7), { ok: true });
  });
});

describe("slow consumers and payloads", () => {
  // A client that stops reading during a broadcast storm is disconnected (slow
  // consumer); a reader in the same room gets every message, in order; the publisher is
  // never held up.
  test("a client that stops reading", async () => {
    const s = await herald({
      HERALD_LIMITS__OUTBOUND_BUFFER_BYTES: "524288",
      HERALD_LIMITS__EVENTS_PER_SECOND: "0",
      HERALD_LIMITS__USER_PUBLISHES_PER_SECOND: "0",
    });
    // The stuck client: a raw WebSocket that joins the room, then never reads again.
    const stuck = net.connect({ host: "127.0.0.1", port: s.port });
    await once(stuck, "connect");
    stuck.write(
      "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" +
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    const frame = (text) => {
      const payload = Buffer.from(text);
      const mask = Buffer.from([1, 2, 3, 4]);
      const head = Buffer.from([0x81, 0x80 | payload.length]);
      return Buffer.concat([head, mask, payload.map((b, i) => b ^ mask[i % 4])]);
    };
    stuck.write(frame("40"));
    await sleep(100);
    stuck.write(frame('421["subscribe","storm"]'));
    await sleep(200);
    stuck.pause();

    const reader = await connected(s);
    assert.deepEqual(await reader.emitWithAck("subscribe", "storm"), { ok: true });
    const publisher = await connected(s);
    const N = 3000;
    const seen = [];
    const done = new Promise((resolve) => {
      reader.on("m", (n, _filler, sender) => {
        assert.deepEqual(sender, { from: null });
        seen.push(n);
        if (seen.length === N) resolve();
      });
    });
    // 12 MB in all, more than the stuck client's kernel buffers and budget together;
    // paced by an ack every 50 so that the reader, which does read, keeps up.
    const filler = "x".repeat(4000);
    for (let i = 0; i < N; i++) {
      if (i % 50 === 49) assert.deepEqual(await publisher.emitWithAck("publish", "storm", "m", i, filler), { ok: true });
      else publisher.emit("publish", "storm", "m", i, filler);
    }
    await Promise.race([done, sleep(20_000)]);
    assert.equal(seen.length, N, "the reader missed messages");
    assert.deepEqual(seen, Array.from({ length: N }, (_, i) => i), "out of order");
    assert.ok((await metric(s, 'herald_disconnects_total{reason="slow_consumer"}')) >= 1);
    assert.ok((await metric(s, 'herald_dropped_packets_total{reason="slow_consumer"}')) >= 1);
    await stillServes(reader);
    stuck.destroy();
  });

  // A payload over max_http_buffer_size closes the sender's connection only.
  test("oversized payload", async () => {
    const s = await herald({ HERALD_SOCKETIO__MAX_HTTP_BUFFER_SIZE: "10000" });
    const bystander = await connected(s);
    const big = await connected(s);
    const gone = once(big, "disconnect");
    big.emit("publish", "r", "e", "y".repeat(20_000));
    const reason = await gone;
    assert.equal(Array.isArray(reason) ? reason[0] : reason, "transport close");
    await stillServes(bystander);
    assert.ok((await metric(s, 'herald_disconnects_total{reason="payload_too_large"}')) >= 1);
  });
});
