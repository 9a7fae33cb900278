// The herald server on many nodes: two herald processes and a Node socket.io server
// (npm @socket.io/redis-adapter) on a private Redis. The HTTP API works cluster-wide,
// /api/cluster and /metrics show the nodes, and the failure cases hold: a paused node
// costs a timeout, not a hang; Redis restarted, the nodes come back by themselves.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { Server } from "socket.io";
import { io as connect } from "socket.io-client";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { jwt, now, once, privateRedis, sleep, startHerald, until } from "./harness.mjs";

const SECRET = "cluster-secret-of-at-least-32-bytes!";
const KEY = "cluster-api-key";
let redis, h1, h2, nodeIo, nodeUrl;
const clients = [];
const redisClients = [];

function env() {
  return {
    HERALD_CLUSTER__REDIS_URL: redis.url,
    HERALD_CLUSTER__REQUEST_TIMEOUT_MS: "1000",
    HERALD_IM__ENABLED: "false",
    HERALD_DOCS__ENABLED: "false",
    HERALD_AUTH__JWT_SECRET: SECRET,
    HERALD_API__KEY: KEY,
  };
}

async function api(node, method, route, body) {
  const res = await fetch(node.url + route, {
    method,
    headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, json, text };
}

async function connected(url, auth) {
  const socket = connect(url, { forceNew: true, reconnection: false, transports: ["websocket"], auth });
  clients.push(socket);
  await once(socket, "connect");
  return socket;
}

const token = (sub, rooms) => jwt({ sub, exp: now(600), rooms }, { secret: SECRET });

before(async () => {
  redis = await privateRedis();
  h1 = await startHerald(env());
  h2 = await startHerald(env());
  const http = createServer();
  nodeIo = new Server(http);
  const pub = createClient({ url: redis.url });
  pub.on("error", () => {});
  const sub = pub.duplicate();
  sub.on("error", () => {});
  await Promise.all([pub.connect(), sub.connect()]);
  redisClients.push(pub, sub);
  nodeIo.adapter(createAdapter(pub, sub, { requestsTimeout: 1000 }));
  nodeIo.on("connection", (socket) => socket.join("news"));
  await new Promise((r) => http.listen(0, "127.0.0.1", r));
  nodeUrl = `http://127.0.0.1:${http.address().port}`;
  await until(async () => (await api(h1, "GET", "/api/cluster")).json.servers === 3, "three servers counted");
});

after(async () => {
  for (const c of clients) c.close();
  nodeIo?.close();
  for (const c of redisClients) await c.quit().catch(() => {});
  await h1?.stop();
  await h2?.stop();
  await redis?.stop();
});

test("the HTTP API reaches every node's clients", async () => {
  const ann = await connected(h1.url, { token: token("ann", ["news"]) });
  assert.deepEqual(await ann.emitWithAck("subscribe", "news"), { ok: true });
  const nora = await connected(nodeUrl, {});

  let got = [once(ann, "headline"), once(nora, "headline")];
  let res = await api(h2, "POST", "/api/emit", { rooms: ["news"], event: "headline", data: { n: 1 } });
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(await Promise.all(got), [{ n: 1 }, { n: 1 }]);

  // A user's room, on another node.
  got = once(ann, "dm");
  res = await api(h2, "POST", "/api/emit", { users: ["ann"], event: "dm", data: "hi" });
  assert.equal(await got, "hi");

  res = await api(h2, "GET", "/api/rooms");
  assert.equal(res.json.scope, "cluster");
  const news = res.json.rooms.find((r) => r.name === "news");
  assert.deepEqual(news, { name: "news", local_sockets: 0 }, JSON.stringify(res.json));
  assert.ok(!res.json.rooms.some((r) => r.name === nora.id), "sockets' own rooms are not listed");

  // Disconnected from another node, by user and by socket id.
  const gone = once(ann, "disconnect");
  res = await api(h2, "POST", "/api/disconnect", { users: ["ann"] });
  assert.deepEqual(res.json, { ok: true, disconnected: 1 });
  assert.equal((await gone)[0], "io server disconnect");
  const goneToo = once(nora, "disconnect");
  res = await api(h2, "POST", "/api/disconnect", { sockets: [nora.id] });
  assert.deepEqual(res.json, { ok: true, disconnected: 1 });
  assert.equal((await goneToo)[0], "io server disconnect");
});

test("/api/cluster and /metrics show every node", async () => {
  const ben = await connected(h2.url, { token: token("ben") });
  await until(
    async () => (await api(h1, "GET", "/api/cluster")).json.nodes.some((n) => n.connections >= 1),
    "a heartbeat with ben's connection",
  );
  const res = await api(h1, "GET", "/api/cluster");
  assert.equal(res.json.clustered, true);
  assert.equal(res.json.redis_connected, true);
  assert.equal(res.json.servers, 3, "two herald nodes and the Node server");
  assert.equal(res.json.nodes.length, 2);
  for (const n of res.json.nodes) {
    assert.equal(typeof n.uid, "string");
    assert.ok(n.last_heartbeat_ms < 5000, JSON.stringify(n));
    assert.ok(n.load >= 0 && n.load < 1);
  }
  const metrics = await (await fetch(`${h1.url}/metrics`)).text();
  assert.match(metrics, /^herald_cluster_redis_connected 1$/m);
  assert.match(metrics, /^herald_cluster_nodes 2$/m);
  assert.match(metrics, /^herald_cluster_subscriptions [1-9]\d*$/m);
  ben.close();
});

test("a paused node costs a request its timeout, never a hang", async () => {
  // Every server counted first (one run in five or so answered at once: to look into).
  await until(async () => (await api(h1, "GET", "/api/cluster")).json.servers === 3, "three servers counted");
  process.kill(h2.pid, "SIGSTOP");
  try {
    const started = Date.now();
    const res = await api(h1, "GET", "/api/rooms");
    const took = Date.now() - started;
    assert.equal(res.status, 200);
    assert.ok(took >= 900 && took < 3000, `took ${took} ms`);
  } finally {
    process.kill(h2.pid, "SIGCONT");
  }
});

test("a node too slow for Redis's output buffer limit (1 MB): dropped, counted and logged, then back", async () => {
  await until(async () => (await api(h1, "GET", "/api/cluster")).json.servers === 3, "three servers counted");
  const admin = createClient({ url: redis.url });
  admin.on("error", () => {});
  await admin.connect();
  redisClients.push(admin);
  const limits = await admin.configGet("client-output-buffer-limit");
  // Whichever class Redis puts a RESP3 subscriber in.
  await admin.configSet("client-output-buffer-limit", "normal 1048576 0 0 pubsub 1048576 0 0");
  process.kill(h2.pid, "SIGSTOP");
  try {
    // On the heartbeat channel: only the Herald nodes subscribe it.
    // Each far below the limit (a node that reads keeps up), all together far above
    // what the kernel's socket buffers hold.
    const big = "x".repeat(16 * 1024);
    for (let i = 0; i < 1000; i++) await admin.publish("socket.io-herald-nodes#", big);
  } finally {
    process.kill(h2.pid, "SIGCONT");
    await admin.configSet(limits);
  }
  const dropped = async () => {
    const m = /^herald_cluster_dropped_total (\d+)$/m.exec(await (await fetch(`${h2.url}/metrics`)).text());
    return m ? Number(m[1]) : 0;
  };
  await until(async () => (await dropped()) >= 1, "the drop counted", 10_000);
  assert.ok(
    h2.logs.some((l) => /closed this node's connection while it kept running/.test(l)),
    "and logged",
  );
  assert.equal(
    /^herald_cluster_dropped_total (\d+)$/m.exec(await (await fetch(`${h1.url}/metrics`)).text())?.[1],
    "0",
    "the node that kept up was not dropped",
  );
  await until(async () => (await api(h1, "GET", "/api/cluster")).json.servers === 3, "the slow node back in the count");
});

test("Redis restarted: /readyz says so, and the nodes come back by themselves", async () => {
  const cat = await connected(h1.url, { token: token("cat", ["news"]) });
  assert.deepEqual(await cat.emitWithAck("subscribe", "news"), { ok: true });
  await redis.stop();
  await until(async () => (await fetch(`${h1.url}/readyz`)).status === 503, "/readyz 503 without Redis");
  const body = await (await fetch(`${h1.url}/readyz`)).text();
  assert.match(body, /redis unreachable/);
  // Alone meanwhile, a node still serves its own clients.
  let got = once(cat, "local");
  await api(h1, "POST", "/api/emit", { rooms: ["news"], event: "local", data: 1 });
  assert.equal(await got, 1);

  await redis.start();
  const back = Date.now();
  await until(async () => (await fetch(`${h1.url}/readyz`)).status === 200, "/readyz 200 with Redis back");
  await until(
    async () => (await api(h1, "GET", "/api/cluster")).json.servers >= 2,
    "the herald nodes subscribed again",
  );
  assert.ok(Date.now() - back < 2000, `resubscribed ${Date.now() - back} ms after Redis came back`);
  got = once(cat, "again");
  await api(h2, "POST", "/api/emit", { rooms: ["news"], event: "again", data: 2 });
  assert.equal(await got, 2);
});

test("a killed node drops out of the count at once", async () => {
  await h2.stop("SIGKILL");
  await until(async () => (await api(h1, "GET", "/api/cluster")).json.servers <= 2, "h2 no longer counted", 2000);
  const started = Date.now();
  const res = await api(h1, "GET", "/api/rooms");
  assert.equal(res.status, 200);
  assert.ok(Date.now() - started < 900, "no timeout waited for a dead node");
});
