// The IM service (namespace /im, IM.md) with the stock socket.io client: conversations,
// durable messages, history, sync, read watermarks and receipts, bad requests.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";
import { startHerald, tempStore, tempDatabase, dropDatabase, privatePostgres, logged, once, sleep, jwt, now } from "./harness.mjs";

const SECRET = "im-test-secret-im-test-secret-1234";
const env = (extra = {}) => ({ HERALD_AUTH__JWT_SECRET: SECRET, HERALD_IM__RECEIPT_WINDOW_MS: "100", ...extra });
const tok = (sub) => jwt({ sub, exp: now(600) }, { secret: SECRET });

let server;
const sockets = [];

/** A socket of `user` on /im (device `device`), connected. */
async function im(user, { device, options = {}, s = server } = {}) {
  const socket = io(`${s.url}/im`, {
    auth: { token: tok(user), device: device ?? `${user}-dev` },
    forceNew: true,
    transports: ["websocket"],
    reconnection: false,
    ...options,
  });
  sockets.push(socket);
  await once(socket, "connect");
  // The service joins the socket's conversation rooms right after the connect; a
  // message sent in between would only be found by `sync`.
  await sleep(50);
  return socket;
}

/** The store's counts for IM operation `op`, from /metrics. */
async function opCounts(op) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const get = (what) => Number(new RegExp(`^herald_store_operation_${what}_total\\{op="${op}"\\} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
  return { requests: get("requests"), reads: get("reads"), writes: get("writes") };
}

/** Emits `event` with an ack and returns the reply. */
const ask = (socket, event, ...args) => socket.timeout(5000).emitWithAck(event, ...args);

/** Collects `n` events named `event` of `socket`, each with its ack callback. */
function gather(socket, event, n, ms = 5000) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(() => reject(new Error(`${got.length} of ${n} "${event}" within ${ms} ms`)), ms);
    const on = (data, ack) => {
      got.push({ data, ack });
      if (got.length === n) {
        clearTimeout(timer);
        socket.off(event, on);
        resolve(got);
      }
    };
    socket.on(event, on);
  });
}

/** Resolves with every `event` of `socket` within `ms`. */
async function quiet(socket, event, ms) {
  const got = [];
  const on = (data) => got.push(data);
  socket.on(event, on);
  await sleep(ms);
  socket.off(event, on);
  return got;
}

before(async () => {
  server = await startHerald(env());
});

after(async () => {
  for (const s of sockets) s.close();
  await server.stop();
});

describe("im", () => {
  test("anonymous clients are refused on /im with token_missing; a bad token with its code", async () => {
    for (const [auth, code] of [
      [{}, "token_missing"],
      [{ token: "not-a-jwt" }, "token_malformed"],
    ]) {
      const socket = io(`${server.url}/im`, { auth, forceNew: true, reconnection: false });
      sockets.push(socket);
      const err = await once(socket, "connect_error");
      assert.equal(err.data?.code, code, JSON.stringify(err.data));
      socket.close();
    }
  });

  test("a direct conversation is unique per pair, and its other member is told", async () => {
    const alice = await im("d-alice");
    const bob = await im("d-bob");
    const told = once(bob, "conversation");
    const first = await ask(alice, "conversation.create", { type: "direct", with: "d-bob" });
    assert.equal(first.ok, true, JSON.stringify(first));
    const c = first.conversation;
    assert.equal(c.type, "direct");
    assert.deepEqual(c.members, ["d-alice", "d-bob"]);
    assert.equal(c.member_count, 2);
    assert.equal(c.last_seq, 0);
    assert.equal(c.unread, 0);
    assert.equal(c.last_message, null);
    const push = await told;
    assert.equal(push.change, "added");
    assert.equal(push.conversation.id, c.id);
    // Again, from either side: the same conversation.
    const again = await ask(alice, "conversation.create", { type: "direct", with: "d-bob" });
    const reverse = await ask(bob, "conversation.create", { type: "direct", with: "d-alice" });
    assert.equal(again.conversation.id, c.id);
    assert.equal(reverse.conversation.id, c.id);
    const list = await ask(bob, "conversation.list", {});
    assert.deepEqual(
      list.conversations.map((x) => x.id),
      [c.id],
    );
  });

  test("send: acked once committed, pushed in order to every other socket, idempotent on cid", async () => {
    const alice1 = await im("s-alice", { device: "phone" });
    const alice2 = await im("s-alice", { device: "laptop" });
    const bob = await im("s-bob");
    const { conversation } = await ask(alice1, "conversation.create", { type: "direct", with: "s-bob" });
    const N = 30;
    const before = await opCounts("send");
    const atBob = gather(bob, "message", N);
    const atLaptop = gather(alice2, "message", N);
    const atSender = quiet(alice1, "message", 600);
    const acks = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        ask(alice1, "send", { conversation: conversation.id, cid: `s-${i}`, body: { text: `hi ${i}`, n: i } }),
      ),
    );
    for (const a of acks) assert.equal(a.ok, true, JSON.stringify(a));
    // Contiguous from 1, one per message.
    assert.deepEqual(
      acks.map((a) => a.seq).sort((x, y) => x - y),
      Array.from({ length: N }, (_, i) => i + 1),
    );
    for (const got of [await atBob, await atLaptop]) {
      assert.deepEqual(
        got.map((m) => m.data.seq),
        Array.from({ length: N }, (_, i) => i + 1),
        "pushed in seq order",
      );
      const m = got.find((x) => x.data.cid === "s-3").data;
      assert.equal(m.conversation, conversation.id);
      assert.equal(m.from, "s-alice");
      assert.deepEqual(m.body, { text: "hi 3", n: 3 });
      assert.equal(m.id, acks[3].id);
      assert.equal(m.seq, acks[3].seq);
      assert.equal(m.ts, acks[3].ts);
      assert.equal(typeof got[0].ack, "function", "message is emitted with an ack");
    }
    assert.deepEqual(await atSender, [], "the sending socket gets no copy");
    // The conversation is in use (its creation cached it): the sends read nothing from
    // the store and wrote two rows each (the message, the conversation's head).
    const during = await opCounts("send");
    assert.deepEqual(
      { requests: during.requests - before.requests, reads: during.reads - before.reads, writes: during.writes - before.writes },
      { requests: N, reads: 0, writes: 2 * N },
    );
    // A retry (from another device of the sender) returns the first id and seq, and
    // stores and pushes nothing.
    const extra = quiet(bob, "message", 400);
    const retry = await ask(alice2, "send", { conversation: conversation.id, cid: "s-3", body: { text: "other" } });
    assert.deepEqual(
      { ok: retry.ok, id: retry.id, seq: retry.seq, ts: retry.ts },
      { ok: true, id: acks[3].id, seq: acks[3].seq, ts: acks[3].ts },
    );
    assert.deepEqual(await extra, []);
    const h = await ask(bob, "history", { conversation: conversation.id, limit: 200 });
    assert.equal(h.messages.length, N);
    // The store's group commit shows in /metrics: every send a job, fewer commits.
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const metric = (name) => Number(new RegExp(`^${name} (\\d+)$`, "m").exec(text)?.[1]);
    assert.ok(metric("herald_store_jobs_total") >= N, text);
    assert.ok(metric("herald_store_commits_total") >= 1);
    assert.ok(metric("herald_store_commits_total") <= metric("herald_store_jobs_total"));
    assert.equal(metric("herald_store_failed_commits_total"), 0);
    // The same cid in another conversation is a conflict.
    const { conversation: other } = await ask(alice1, "conversation.create", { type: "direct", with: "s-carol" });
    const clash = await ask(alice1, "send", { conversation: other.id, cid: "s-3", body: "x" });
    assert.equal(clash.ok, false);
    assert.equal(clash.error.code, "conflict", JSON.stringify(clash));
  });

  test("two senders at once: one contiguous order that every member sees", async () => {
    const a = await im("o-a");
    const b = await im("o-b");
    const c = await im("o-c");
    const { conversation } = await ask(a, "conversation.create", { type: "group", title: "order", members: ["o-b", "o-c"] });
    assert.equal(conversation.type, "group");
    assert.equal(conversation.owner, "o-a");
    assert.equal(conversation.title, "order");
    const N = 25;
    const atC = gather(c, "message", 2 * N);
    const send = (s, who) =>
      Array.from({ length: N }, (_, i) => ask(s, "send", { conversation: conversation.id, cid: `${who}-${i}`, body: i }));
    const acks = await Promise.all([...send(a, "a"), ...send(b, "b")]);
    assert.deepEqual(
      acks.map((x) => x.seq).sort((x, y) => x - y),
      Array.from({ length: 2 * N }, (_, i) => i + 1),
    );
    const seen = (await atC).map((m) => m.data);
    assert.deepEqual(
      seen.map((m) => m.seq),
      Array.from({ length: 2 * N }, (_, i) => i + 1),
    );
    // Each sender's messages keep the order that sender sent them in.
    for (const who of ["a", "b"]) {
      const mine = seen.filter((m) => m.cid.startsWith(`${who}-`)).map((m) => m.body);
      assert.deepEqual(mine, Array.from({ length: N }, (_, i) => i));
    }
    const h = await ask(c, "history", { conversation: conversation.id, limit: 200 });
    assert.deepEqual(
      h.messages.map((m) => m.cid),
      seen.map((m) => m.cid),
      "history has the order the pushes had",
    );
  });

  test("history pages oldest first, with before, after and more", async () => {
    const a = await im("h-a");
    const { conversation } = await ask(a, "conversation.create", { type: "direct", with: "h-b" });
    for (let i = 1; i <= 12; i++) {
      await ask(a, "send", { conversation: conversation.id, cid: `h-${i}`, body: i });
    }
    const seqs = (r) => r.messages.map((m) => m.seq);
    const newest = await ask(a, "history", { conversation: conversation.id, limit: 5 });
    assert.deepEqual(seqs(newest), [8, 9, 10, 11, 12]);
    assert.equal(newest.more, true);
    const older = await ask(a, "history", { conversation: conversation.id, before: 8, limit: 5 });
    assert.deepEqual(seqs(older), [3, 4, 5, 6, 7]);
    assert.equal(older.more, true);
    const oldest = await ask(a, "history", { conversation: conversation.id, before: 3, limit: 5 });
    assert.deepEqual(seqs(oldest), [1, 2]);
    assert.equal(oldest.more, false);
    const after = await ask(a, "history", { conversation: conversation.id, after: 4, limit: 3 });
    assert.deepEqual(seqs(after), [5, 6, 7]);
    assert.equal(after.more, true);
    const tail = await ask(a, "history", { conversation: conversation.id, after: 10 });
    assert.deepEqual(seqs(tail), [11, 12]);
    assert.equal(tail.more, false);
    // Not a member: no such conversation, and nothing of it.
    const stranger = await im("h-stranger");
    const denied = await ask(stranger, "history", { conversation: conversation.id });
    assert.equal(denied.ok, false);
    assert.equal(denied.error.code, "not_found");
  });

  test("read moves the watermark forward only; other devices get read, the other member a receipt", async () => {
    const alice = await im("r-alice");
    const bob1 = await im("r-bob", { device: "one" });
    const bob2 = await im("r-bob", { device: "two" });
    const { conversation } = await ask(alice, "conversation.create", { type: "direct", with: "r-bob" });
    const delivered = gather(bob1, "message", 5);
    const atBob = [];
    bob1.on("receipt", (r) => atBob.push(r));
    for (let i = 1; i <= 5; i++) await ask(alice, "send", { conversation: conversation.id, cid: `r-${i}`, body: i });
    // bob's first device confirms delivery of all five: alice learns it, coalesced.
    const receipts = [];
    alice.on("receipt", (r) => receipts.push(r));
    for (const m of await delivered) m.ack();
    await sleep(500);
    const latest = receipts.filter((r) => r.user === "r-bob").at(-1);
    assert.ok(latest, `no receipt about bob: ${JSON.stringify(receipts)}`);
    assert.equal(latest.conversation, conversation.id);
    assert.equal(latest.delivered_seq, 5);
    assert.equal(latest.read_seq, 0);
    assert.ok(receipts.length <= 2, `coalesced: ${JSON.stringify(receipts)}`);
    assert.ok(!receipts.some((r) => r.user === "r-alice"), "nobody gets a receipt about themselves");
    // Sending moved alice's read watermark over her own messages only: bob learns nothing.
    assert.deepEqual(atBob, [], "no receipt that covers none of bob's messages");

    const listed = (await ask(bob1, "conversation.list", {})).conversations.find((c) => c.id === conversation.id);
    assert.equal(listed.unread, 5);
    assert.equal(listed.last_seq, 5);
    assert.equal(listed.last_message.cid, "r-5");

    const onTwo = once(bob2, "read");
    const r = await ask(bob1, "read", { conversation: conversation.id, seq: 3 });
    assert.deepEqual(r, { ok: true, read_seq: 3, unread: 2 });
    assert.deepEqual(await onTwo, { conversation: conversation.id, read_seq: 3, unread: 2 });
    // Backwards is a no-op success; past the end is clamped.
    assert.deepEqual(await ask(bob1, "read", { conversation: conversation.id, seq: 1 }), { ok: true, read_seq: 3, unread: 2 });
    assert.deepEqual(await ask(bob1, "read", { conversation: conversation.id, seq: 99 }), { ok: true, read_seq: 5, unread: 0 });
    await sleep(400);
    const last = receipts.filter((x) => x.user === "r-bob").at(-1);
    assert.equal(last.read_seq, 5);
    assert.equal(last.delivered_seq, 5);
    // Sending reads the conversation for the sender.
    const sent = await ask(bob2, "send", { conversation: conversation.id, cid: "r-reply", body: "ok" });
    const mine = (await ask(bob1, "conversation.list", {})).conversations.find((c) => c.id === conversation.id);
    assert.equal(mine.read_seq, sent.seq);
    assert.equal(mine.unread, 0);
    const hers = (await ask(alice, "conversation.list", {})).conversations.find((c) => c.id === conversation.id);
    assert.equal(hers.unread, 1);
  });

  test("sync: every conversation's summary, then the messages after each since, in pages", async () => {
    const a = await im("y-a");
    const { conversation: one } = await ask(a, "conversation.create", { type: "direct", with: "y-b" });
    const { conversation: two } = await ask(a, "conversation.create", { type: "group", members: ["y-b", "y-c"] });
    for (let i = 1; i <= 4; i++) await ask(a, "send", { conversation: one.id, cid: `y1-${i}`, body: i });
    for (let i = 1; i <= 3; i++) await ask(a, "send", { conversation: two.id, cid: `y2-${i}`, body: i });
    const b = await im("y-b");
    const all = await ask(b, "sync", {});
    assert.equal(all.ok, true);
    assert.deepEqual(all.conversations.map((c) => c.id).sort(), [one.id, two.id].sort());
    assert.deepEqual(all.messages, [], "no since: summaries only");
    const unread = Object.fromEntries(all.conversations.map((c) => [c.id, c.unread]));
    assert.deepEqual(unread, { [one.id]: 4, [two.id]: 3 });
    const some = await ask(b, "sync", { since: { [one.id]: 2, [two.id]: 0 } });
    assert.deepEqual(
      some.messages.map((m) => [m.conversation, m.seq]),
      [
        [one.id, 3],
        [one.id, 4],
        [two.id, 1],
        [two.id, 2],
        [two.id, 3],
      ].sort((x, y) => (x[0] - y[0]) || (x[1] - y[1])),
    );
    assert.equal(some.more, false);
    // A conversation the user is not in gives nothing.
    const c = await im("y-stranger");
    const none = await ask(c, "sync", { since: { [one.id]: 0 } });
    assert.deepEqual(none.messages, []);
    assert.deepEqual(none.conversations, []);
  });

  test("bad requests are answered with their code, never a disconnect, and change nothing", async () => {
    const a = await im("b-a");
    const { conversation } = await ask(a, "conversation.create", { type: "direct", with: "b-b" });
    const big = "x".repeat(70 * 1024);
    const cases = [
      ["send", [{}], "bad_request"],
      ["send", ["not an object"], "bad_request"],
      ["send", [{ conversation: conversation.id, cid: "", body: 1 }], "bad_request"],
      ["send", [{ conversation: conversation.id, cid: "c".repeat(65), body: 1 }], "bad_request"],
      ["send", [{ conversation: conversation.id, cid: "big", body: big }], "too_large"],
      ["send", [{ conversation: 987654321, cid: "nowhere", body: 1 }], "not_found"],
      ["send", [{ conversation: "abc", cid: "str", body: 1 }], "bad_request"],
      // Binary inside a JSON value would lose its bytes: refused, not stored half.
      ["send", [{ conversation: conversation.id, cid: "nested", body: { file: Buffer.from([1, 2]) } }], "bad_request"],
      ["conversation.create", [{ type: "direct", with: "b-a" }], "bad_request"],
      ["conversation.create", [{ type: "channel" }], "bad_request"],
      ["conversation.create", [{ type: "direct" }], "bad_request"],
      ["conversation.create", [{ type: "group" }], "bad_request"],
      ["conversation.create", [{ type: "group", members: ["ok", ""] }], "bad_request"],
      ["history", [{ conversation: conversation.id, limit: 0 }], "bad_request"],
      ["history", [{ conversation: conversation.id, limit: 201 }], "bad_request"],
      ["history", [{ conversation: conversation.id, before: -1 }], "bad_request"],
      ["read", [{ conversation: conversation.id }], "bad_request"],
      ["read", [{ conversation: 987654321, seq: 1 }], "not_found"],
      ["sync", [{ since: { nope: 1 } }], "bad_request"],
      ["sync", [{ since: [1, 2] }], "bad_request"],
    ];
    for (const [event, args, code] of cases) {
      const r = await ask(a, event, ...args);
      assert.equal(r.ok, false, `${event} ${JSON.stringify(args).slice(0, 80)}: ${JSON.stringify(r)}`);
      assert.equal(r.error.code, code, `${event} ${JSON.stringify(args).slice(0, 80)}: ${JSON.stringify(r)}`);
      assert.equal(typeof r.error.message, "string");
    }
    assert.equal(a.connected, true);
    const h = await ask(a, "history", { conversation: conversation.id });
    assert.deepEqual(h.messages, [], "nothing was stored");
    // An event without an ack is ignored, and the socket stays.
    a.emit("send", { conversation: conversation.id, cid: "no-ack", body: 1 });
    a.emit("no.such.event", {});
    await sleep(200);
    assert.equal(a.connected, true);
    const after = await ask(a, "history", { conversation: conversation.id });
    assert.deepEqual(after.messages.map((m) => m.cid), ["no-ack"]);
  });

  test("binary bodies round-trip", async () => {
    const a = await im("bin-a");
    const b = await im("bin-b");
    const { conversation } = await ask(a, "conversation.create", { type: "direct", with: "bin-b" });
    await sleep(50);
    const bytes = Buffer.from([0, 1, 2, 254, 255]);
    const got = gather(b, "message", 1);
    const sent = await ask(a, "send", { conversation: conversation.id, cid: "bin", body: bytes });
    assert.equal(sent.ok, true, JSON.stringify(sent));
    const [{ data: m }] = await got;
    assert.deepEqual(Buffer.from(m.body), bytes);
    const h = await ask(b, "history", { conversation: conversation.id });
    assert.deepEqual(Buffer.from(h.messages[0].body), bytes);
  });
});

describe("im, durability and parsers", () => {
  for (const backend of ["sqlite", "postgres"]) {
  test(`${backend}: everything acked survives kill -9 mid-stream; resent cids are stored once, seq contiguous`, async () => {
    const database = backend === "postgres" ? tempDatabase() : null;
    const store = database ? database.url : `sqlite://${tempStore()}`;
    const up = async (s) => {
      if (database) await logged(s, /connected to PostgreSQL/);
      return s;
    };
    // The resend below is a burst of 400 events per socket: over the default event
    // rate, which would refuse most of them (and then disconnect the socket).
    // A stream as fast as the store takes it: no send rate.
    const config = env({ HERALD_IM__STORE: store, HERALD_LIMITS__EVENTS_PER_SECOND: "0", HERALD_IM__SEND_RATE: "0" });
    let s = await up(await startHerald(config));
    const users = ["k-a", "k-b", "k-c"];
    const first = await Promise.all(users.map((u) => im(u, { s })));
    const { conversation } = await ask(first[0], "conversation.create", { type: "group", members: ["k-b", "k-c"] });
    await sleep(50);
    const PER = 400;
    const cids = users.flatMap((u) => Array.from({ length: PER }, (_, i) => `${u}-${i}`));
    const acked = new Map();
    // Every client streams its sends, 20 in flight at a time; the server is killed once
    // 150 are acked.
    let killed;
    const killing = new Promise((resolve) => (killed = resolve));
    const stream = async (k) => {
      const u = users[k];
      let next = 0;
      const lane = async () => {
        while (next < PER) {
          const i = next++;
          const r = await ask(first[k], "send", { conversation: conversation.id, cid: `${u}-${i}`, body: { u, i } }).catch(() => null);
          if (!r) return;
          if (r.ok) acked.set(`${u}-${i}`, r);
          if (acked.size >= 150) killed();
        }
      };
      await Promise.all(Array.from({ length: 20 }, lane));
    };
    const inflight = users.map((_, k) => stream(k));
    await Promise.race([killing, sleep(5000)]);
    await s.stop("SIGKILL");
    await Promise.allSettled(inflight);
    for (const c of first) c.close();
    assert.ok(acked.size >= 150, `only ${acked.size} sends acked before the kill`);
    assert.ok(acked.size < cids.length, "the kill came while sends were in flight");

    s = await up(await startHerald(config));
    try {
      const again = await Promise.all(users.map((u) => im(u, { s })));
      const all = async () => {
        const out = [];
        for (;;) {
          const h = await ask(again[0], "history", { conversation: conversation.id, limit: 200, after: out.length });
          out.push(...h.messages);
          if (!h.more) return out;
        }
      };
      const stored = await all();
      const byCid = new Map(stored.map((m) => [m.cid, m]));
      assert.equal(byCid.size, stored.length, "no cid stored twice");
      for (const [cid, r] of acked) {
        const m = byCid.get(cid);
        assert.ok(m, `acked ${cid} (seq ${r.seq}) lost`);
        assert.deepEqual([m.id, m.seq], [r.id, r.seq]);
      }
      assert.deepEqual(
        stored.map((m) => m.seq),
        Array.from({ length: stored.length }, (_, i) => i + 1),
        "contiguous",
      );
      // Every client resends everything (as a client that lost its acks does): the
      // stored ones answer their first seq, the others are stored, each once.
      const resent = await Promise.all(
        users.flatMap((u, k) =>
          Array.from({ length: PER }, (_, i) =>
            ask(again[k], "send", { conversation: conversation.id, cid: `${u}-${i}`, body: { u, i } }),
          ),
        ),
      );
      for (const r of resent) assert.equal(r.ok, true, JSON.stringify(r));
      for (const [cid, r] of acked) assert.equal(resent[cids.indexOf(cid)].seq, r.seq, cid);
      const final = await all();
      assert.equal(final.length, cids.length);
      assert.deepEqual(new Set(final.map((m) => m.cid)), new Set(cids));
      assert.deepEqual(
        final.map((m) => m.seq),
        Array.from({ length: cids.length }, (_, i) => i + 1),
      );
    } finally {
      await s.stop();
      if (database) dropDatabase(database);
    }
  });
  }

  test("postgres stopped: requests answered unavailable, the socket kept; back: recovered by itself, nothing acked lost", async () => {
    const pg = await privatePostgres();
    let s;
    try {
      s = await startHerald(env({ HERALD_IM__STORE: pg.url }));
      await logged(s, /connected to PostgreSQL/);
      const a = await im("pg-a", { s });
      const b = await im("pg-b", { s });
      const { conversation } = await ask(a, "conversation.create", { type: "direct", with: "pg-b" });
      const id = conversation.id;
      for (let i = 1; i <= 5; i++) {
        const r = await ask(a, "send", { conversation: id, cid: `pg-${i}`, body: i });
        assert.equal(r.seq, i, JSON.stringify(r));
      }
      pg.stop();
      // Every request is answered, with `unavailable`, while the server is down.
      for (const [event, args] of [
        ["send", { conversation: id, cid: "pg-6", body: 6 }],
        ["send", { conversation: id, cid: "pg-6", body: 6 }],
        ["history", { conversation: id }],
        ["read", { conversation: id, seq: 5 }],
      ]) {
        const r = await ask(b, event, args).catch((e) => ({ timeout: e.message }));
        if (event === "read") {
          // Watermarks move in memory and are written behind: read answers.
          assert.equal(r.ok, true, JSON.stringify(r));
          continue;
        }
        assert.equal(r.error?.code, "unavailable", `${event}: ${JSON.stringify(r)}`);
      }
      assert.equal(a.connected && b.connected, true, "the sockets stay");
      pg.start();
      // Recovered by itself: the retried send goes through, next in sequence.
      let r;
      for (let i = 0; i < 100; i++) {
        r = await ask(a, "send", { conversation: id, cid: "pg-6", body: 6 });
        if (r.ok) break;
        assert.equal(r.error?.code, "unavailable", JSON.stringify(r));
        await sleep(100);
      }
      assert.equal(r.seq, 6, JSON.stringify(r));
      const again = await ask(a, "send", { conversation: id, cid: "pg-6", body: 6 });
      assert.equal(again.seq, 6, "stored once");
      const h = await ask(b, "history", { conversation: id });
      assert.deepEqual(h.messages.map((m) => m.cid), ["pg-1", "pg-2", "pg-3", "pg-4", "pg-5", "pg-6"]);
      assert.ok(s.alive(), "the server stayed up");
    } finally {
      if (s) await s.stop();
      pg.remove();
    }
  });

  test("the msgpack parser carries the same events", async () => {
    const s = await startHerald(env({ HERALD_SOCKETIO__PARSER: "msgpack" }));
    try {
      const options = { parser: msgpackParser };
      const a = await im("m-a", { s, options });
      const b = await im("m-b", { s, options });
      const { conversation } = await ask(a, "conversation.create", { type: "direct", with: "m-b" });
      await sleep(50);
      const got = gather(b, "message", 1);
      const sent = await ask(a, "send", { conversation: conversation.id, cid: "m1", body: { text: "hi", n: [1, 2] } });
      assert.equal(sent.ok, true, JSON.stringify(sent));
      const [{ data: m }] = await got;
      assert.deepEqual(m.body, { text: "hi", n: [1, 2] });
      assert.equal(m.seq, 1);
      const bin = await ask(a, "send", { conversation: conversation.id, cid: "m2", body: new Uint8Array([9, 8, 7]) });
      assert.equal(bin.ok, true, JSON.stringify(bin));
      const h = await ask(b, "history", { conversation: conversation.id });
      assert.deepEqual(
        h.messages.map((x) => x.seq),
        [1, bin.seq],
      );
      assert.deepEqual(Buffer.from(h.messages[1].body), Buffer.from([9, 8, 7]));
      const bad = await ask(a, "send", { conversation: conversation.id });
      assert.equal(bad.error.code, "bad_request");
      const nested = await ask(a, "send", { conversation: conversation.id, cid: "m3", body: { f: new Uint8Array([1]) } });
      assert.equal(nested.error.code, "bad_request", JSON.stringify(nested));
    } finally {
      await s.stop();
    }
  });
});
