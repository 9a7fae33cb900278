// The IM service on many nodes: two herald processes on one PostgreSQL database and a
// private Redis, stock clients on either. A message reaches the members on the other
// node in order with its delivery acks back to the author, a member added on one node
// can send on the other at once, typing and presence are seen across nodes (once, not
// once per node), the device policy puts out a device on the other node within 500 ms,
// and messages acked while Redis is down reach the other node's members once it is back,
// each once, in order; a killed node's users go offline for the others.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  dropDatabase,
  imClient,
  jwt,
  logged,
  now,
  once,
  privateRedis,
  sleep,
  startHerald,
  tempDatabase,
  until,
} from "./harness.mjs";

const SECRET = "cluster-im-secret-of-at-least-32-bytes";
const tok = (sub) => jwt({ sub, exp: now(600) }, { secret: SECRET });
const ask = (socket, event, ...args) => socket.timeout(5000).emitWithAck(event, ...args);

let redis, db, h1, h2;
const sockets = [];

async function im(server, user, extra = {}) {
  const socket = imClient(server.url, { token: tok(user), ...extra }, sockets);
  await once(socket, "connect");
  return socket;
}

/** Every `event` `socket` gets, with its ack callback. */
function record(socket, event) {
  const got = [];
  socket.on(event, (data, ack) => got.push({ data, ack }));
  return got;
}

before(async () => {
  redis = await privateRedis();
  db = tempDatabase();
  const env = {
    HERALD_CLUSTER__REDIS_URL: redis.url,
    HERALD_CLUSTER__REQUEST_TIMEOUT_MS: "1000",
    HERALD_IM__STORE: db.url,
    HERALD_IM__DEVICE_POLICY: "one_per_platform",
    HERALD_IM__SEND_RATE: "0",
    HERALD_IM__PRESENCE_GRACE_MS: "0",
    HERALD_IM__TYPING_TTL_MS: "1000",
    HERALD_LIMITS__EVENTS_PER_SECOND: "0",
    HERALD_AUTH__JWT_SECRET: SECRET,
  };
  h1 = await startHerald(env);
  h2 = await startHerald(env);
  await Promise.all([logged(h1, /connected to PostgreSQL/), logged(h2, /connected to PostgreSQL/)]);
  // Each node has heard the other's sessions exchange (the bus is up on both).
  await Promise.all([logged(h1, /caught up with the other nodes/), logged(h2, /caught up with the other nodes/)]);
});

after(async () => {
  for (const s of sockets) s.close();
  await h1?.stop();
  await h2?.stop();
  await redis?.stop();
  if (db) dropDatabase(db);
});

test("a message sent on one node reaches the member on the other, in order, and its delivery acks come back", async () => {
  const alice = await im(h1, "m-alice");
  const bob = await im(h2, "m-bob");
  const { conversation } = await ask(alice, "conversation.create", { type: "direct", with: "m-bob" });
  const got = record(bob, "message");
  const receipts = record(alice, "receipt");
  for (let i = 1; i <= 20; i++) {
    const r = await ask(alice, "send", { conversation: conversation.id, cid: `m-${i}`, body: { n: i } });
    assert.equal(r.seq, i);
  }
  await until(() => got.length >= 20, "20 messages on the other node");
  await sleep(300);
  assert.deepEqual(
    got.map((m) => m.data.seq),
    Array.from({ length: 20 }, (_, i) => i + 1),
    "each once, in order",
  );
  assert.deepEqual(got[4].data.body, { n: 5 });
  assert.equal(got[4].data.from, "m-alice");
  for (const m of got) m.ack();
  await until(
    () => receipts.some((r) => r.data.user === "m-bob" && r.data.delivered_seq === 20),
    "a receipt with delivered_seq 20 on the author's node",
  );
  // Binary bodies cross nodes whole.
  const bin = await ask(alice, "send", { conversation: conversation.id, cid: "m-bin", body: Buffer.from([0, 1, 2, 255]) });
  await until(() => got.some((m) => m.data.seq === bin.seq), "the binary message");
  assert.deepEqual([...got.at(-1).data.body], [0, 1, 2, 255]);
  // Messages from both nodes at once: every member sees one order, with no gap.
  const atAlice = record(alice, "message");
  const sends = [];
  for (let i = 0; i < 10; i++) {
    sends.push(ask(alice, "send", { conversation: conversation.id, cid: `a-${i}`, body: i }));
    sends.push(ask(bob, "send", { conversation: conversation.id, cid: `b-${i}`, body: i }));
  }
  const answers = await Promise.all(sends);
  const fromBob = answers.filter((_, i) => i % 2 === 1).map((a) => a.seq);
  const fromAlice = answers.filter((_, i) => i % 2 === 0).map((a) => a.seq);
  await until(
    () => atAlice.length >= 10 && got.filter((m) => m.data.seq > bin.seq).length >= 10,
    "each member has the other's ten",
  );
  await sleep(500);
  // Each member gets the other's messages (not its own sending socket's), ascending.
  const seenByAlice = atAlice.map((m) => m.data.seq);
  const seenByBob = got.map((m) => m.data.seq).filter((s) => s > bin.seq);
  assert.deepEqual([...seenByAlice].sort((a, b) => a - b), seenByAlice, "alice: in order");
  assert.deepEqual([...seenByBob].sort((a, b) => a - b), seenByBob, "bob: in order");
  assert.deepEqual(seenByAlice, [...fromBob].sort((a, b) => a - b), "alice got each of bob's once");
  assert.deepEqual(seenByBob, [...fromAlice].sort((a, b) => a - b), "bob got each of alice's once");
});

test("a member added on one node sends on the other at once, and the others get it", async () => {
  const owner = await im(h1, "g-owner");
  const bob = await im(h2, "g-bob");
  const carol = await im(h2, "g-carol");
  const { conversation } = await ask(owner, "conversation.create", { type: "group", title: "g", members: ["g-bob"] });
  const atBob = record(bob, "message");
  // The group is in use on the second node (bob's copy of it).
  await ask(owner, "send", { conversation: conversation.id, cid: "g-1", body: "before" });
  await until(() => atBob.length === 1, "bob has the first message");
  const added = once(carol, "conversation");
  const change = await ask(owner, "conversation.members", { conversation: conversation.id, add: ["g-carol"] });
  assert.equal(change.ok, true, JSON.stringify(change));
  assert.equal((await added).change, "added");
  // The second node knows carol is a member now: her send is accepted there.
  await until(async () => (await ask(carol, "send", { conversation: conversation.id, cid: "g-c1", body: "hi" })).ok, "carol's send accepted");
  const atCarol = record(carol, "message");
  await ask(owner, "send", { conversation: conversation.id, cid: "g-2", body: "welcome" });
  await until(() => atCarol.some((m) => m.data.cid === "g-2"), "carol gets the next message");
  await until(() => atBob.some((m) => m.data.cid === "g-c1"), "bob, on carol's node, gets hers");
});

test("typing on one node is pushed to the members on the other, once per window, and lasts while it goes on", async () => {
  const alice = await im(h1, "t-alice");
  const bob = await im(h2, "t-bob");
  const { conversation } = await ask(alice, "conversation.create", { type: "direct", with: "t-bob" });
  const pushes = record(alice, "typing");
  bob.emit("typing", { conversation: conversation.id, typing: true });
  await until(() => pushes.some((p) => p.data.users.includes("t-bob")), "alice sees bob typing");
  // Keystrokes every 100 ms for twice the TTL (1 s here): the other node is told again
  // while it goes on, so bob never times out there, and alice is pushed nothing more.
  for (let i = 0; i < 20; i++) {
    bob.emit("typing", { conversation: conversation.id, typing: true });
    await sleep(100);
  }
  assert.deepEqual(
    pushes.map((p) => p.data.users),
    [["t-bob"]],
    "one push: bob typing, never timed out meanwhile",
  );
  bob.emit("typing", { conversation: conversation.id, typing: false });
  await until(() => pushes.at(-1).data.users.length === 0, "alice sees bob stop");
});

test("presence of a user on the other node: online when they connect, offline when they leave, pushed once", async () => {
  const watcher = await im(h1, "p-watcher");
  const pushes = record(watcher, "presence");
  const first = await ask(watcher, "presence.subscribe", { users: ["p-dave"] });
  assert.equal(first.ok, true);
  const dave = await im(h2, "p-dave", { device: "phone", platform: "ios" });
  await until(() => pushes.some((p) => p.data.user === "p-dave" && p.data.online), "online");
  const asked = await ask(watcher, "presence.subscribe", { users: ["p-dave"] });
  const now = JSON.stringify(asked);
  assert.ok(now.includes('"online":true'), now);
  dave.disconnect();
  await until(() => pushes.some((p) => p.data.user === "p-dave" && !p.data.online), "offline");
  await sleep(300);
  assert.equal(pushes.filter((p) => p.data.user === "p-dave").length, 2, JSON.stringify(pushes.map((p) => p.data)));
});

test("the device policy across nodes: a new device of the platform puts out the one on the other node within 500 ms", async () => {
  const phone = await im(h1, "k-erin", { device: "phone-1", platform: "ios" });
  const seen = {};
  phone.on("kicked", (k) => (seen.kicked = { ...k, at: Date.now() }));
  phone.on("disconnect", (reason) => (seen.disconnect = { reason, at: Date.now() }));
  const laptop = await im(h2, "k-erin", { device: "laptop", platform: "web" });
  const second = await im(h2, "k-erin", { device: "phone-2", platform: "ios" });
  const connected = Date.now();
  await until(() => seen.disconnect, "the first phone disconnected", 2000);
  assert.equal(seen.kicked?.reason, "login_elsewhere");
  assert.equal(seen.kicked?.device, "phone-2");
  assert.equal(seen.disconnect.reason, "io server disconnect");
  assert.ok(seen.disconnect.at - connected <= 500, `put out ${seen.disconnect.at - connected} ms after the new CONNECT`);
  await sleep(200);
  assert.ok(laptop.connected, "another platform stays");
  assert.ok(second.connected, "the new device stays");
});

test("a node killed (SIGKILL): its users go offline for the watchers on the other nodes", async () => {
  const h3 = await startHerald({
    HERALD_CLUSTER__REDIS_URL: redis.url,
    HERALD_IM__STORE: db.url,
    HERALD_IM__PRESENCE_GRACE_MS: "0",
    HERALD_AUTH__JWT_SECRET: SECRET,
  });
  try {
    await logged(h3, /caught up with the other nodes/);
    const watcher = await im(h1, "x-watcher");
    const pushes = record(watcher, "presence");
    await ask(watcher, "presence.subscribe", { users: ["x-frank"] });
    await im(h3, "x-frank");
    await until(() => pushes.some((p) => p.data.user === "x-frank" && p.data.online), "online");
    const killed = Date.now();
    await h3.stop("SIGKILL");
    await until(() => pushes.some((p) => p.data.user === "x-frank" && !p.data.online), "offline after the kill", 10_000);
    const after = Date.now() - killed;
    assert.ok(after <= 8000, `offline ${after} ms after the kill`);
  } finally {
    await h3.stop();
  }
});

test("messages acked while Redis is down reach the member on the other node once it is back, each once, in order", async () => {
  const alice = await im(h1, "r-alice");
  const bob = await im(h2, "r-bob");
  const { conversation } = await ask(alice, "conversation.create", { type: "direct", with: "r-bob" });
  const got = record(bob, "message");
  const presence = record(alice, "presence");
  await ask(alice, "presence.subscribe", { users: ["r-bob"] });
  await ask(alice, "send", { conversation: conversation.id, cid: "r-0", body: 0 });
  await until(() => got.length === 1, "the first message");
  await redis.stop();
  for (let i = 1; i <= 5; i++) {
    const r = await ask(alice, "send", { conversation: conversation.id, cid: `r-${i}`, body: i });
    assert.equal(r.seq, i + 1, "acked: stored while the bus is down");
  }
  // Longer than a node may stay silent: with the bus down, silence says nothing.
  await sleep(6000);
  await redis.start();
  await until(() => got.length >= 6, "the five sent while Redis was down", 10_000);
  // After the catch-up, the bus carries the next one as usual.
  await ask(alice, "send", { conversation: conversation.id, cid: "r-6", body: 6 });
  await until(() => got.length >= 7, "the next one", 5000);
  await sleep(500);
  assert.deepEqual(got.map((m) => m.data.seq), [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(
    presence.filter((p) => !p.data.online).map((p) => p.data),
    [],
    "bob, on the other node, never seen offline through the outage",
  );
  const seen = await ask(alice, "presence.subscribe", { users: ["r-bob"] });
  assert.ok(JSON.stringify(seen).includes('"online":true'), JSON.stringify(seen));
});
