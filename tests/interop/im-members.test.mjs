// The IM service's groups with the stock socket.io client: members added and removed by
// the owner and admins, roles, leaving with the group handed over, members paged; and
// the HTTP API for backends (/api/im/...).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { startHerald, once, sleep, jwt, now, imClient } from "./harness.mjs";

const SECRET = "im-members-secret-im-members-secret";
const KEY = "im-api-key";
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

/** Every `event` of `socket` within `ms`. */
async function quiet(socket, event, ms) {
  const got = [];
  const on = (data) => got.push(data);
  socket.on(event, on);
  await sleep(ms);
  socket.off(event, on);
  return got;
}

/** The next `event` of `socket` that `pick` accepts, within 3 s. */
function next(socket, event, pick = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, on);
      reject(new Error(`no matching "${event}" within 3 s`));
    }, 3000);
    const on = (data) => {
      if (!pick(data)) return;
      clearTimeout(timer);
      socket.off(event, on);
      resolve(data);
    };
    socket.on(event, on);
  });
}

/** Every member of a conversation with their roles, through the paged list. */
async function roster(socket, conversation) {
  const roles = {};
  let after;
  for (;;) {
    const page = await ask(socket, "conversation.members.list", { conversation, after, limit: 2 });
    assert.equal(page.ok, true, JSON.stringify(page));
    Object.assign(roles, page.roles);
    if (!page.more) return roles;
    after = page.members.at(-1);
  }
}

/** Calls the HTTP API; resolves with { status, body }. */
async function api(method, path, body, key = KEY) {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

before(async () => {
  server = await startHerald({ HERALD_AUTH__JWT_SECRET: SECRET, HERALD_API__KEY: KEY });
});

after(async () => {
  for (const s of sockets) s.close();
  await server.stop();
});

describe("im groups", () => {
  test("the owner and admins change members, members may not; those concerned are told", async () => {
    const [o, a, b, c] = await Promise.all(["g-o", "g-a", "g-b", "g-c"].map((u) => im(u)));
    const { conversation } = await ask(o, "conversation.create", { type: "group", title: "team", members: ["g-a"] });
    const id = conversation.id;
    assert.equal(conversation.owner, "g-o");

    const bTold = next(b, "conversation", (p) => p.conversation.id === id);
    const aTold = next(a, "conversation", (p) => p.conversation.id === id && p.change === "updated");
    const added = await ask(o, "conversation.members", { conversation: id, add: ["g-b", "g-a"] });
    assert.equal(added.ok, true, JSON.stringify(added));
    assert.deepEqual(added.conversation.members, ["g-a", "g-b", "g-o"]);
    assert.equal((await bTold).change, "added");
    assert.deepEqual((await aTold).conversation.members, ["g-a", "g-b", "g-o"]);

    // A member changes nothing; nothing changed.
    const refused = await ask(b, "conversation.members", { conversation: id, add: ["g-c"] });
    assert.equal(refused.error?.code, "forbidden", JSON.stringify(refused));
    assert.deepEqual(await roster(o, id), { "g-a": "member", "g-b": "member", "g-o": "owner" });

    // The owner makes an admin; an admin adds, but makes no admins and removes no owner.
    const promoted = await ask(o, "conversation.members", { conversation: id, promote: ["g-a"] });
    assert.equal(promoted.ok, true, JSON.stringify(promoted));
    const cTold = next(c, "conversation", (p) => p.conversation.id === id);
    const byAdmin = await ask(a, "conversation.members", { conversation: id, add: ["g-c"] });
    assert.equal(byAdmin.ok, true, JSON.stringify(byAdmin));
    assert.equal((await cTold).change, "added");
    for (const [change, code] of [
      [{ promote: ["g-b"] }, "forbidden"],
      [{ remove: ["g-o"] }, "conflict"],
    ]) {
      const r = await ask(a, "conversation.members", { conversation: id, ...change });
      assert.equal(r.error?.code, code, `${JSON.stringify(change)}: ${JSON.stringify(r)}`);
    }
    assert.deepEqual(await roster(b, id), { "g-a": "admin", "g-b": "member", "g-c": "member", "g-o": "owner" });

    // The member added last receives what is sent now.
    const atC = next(c, "message", (m) => m.conversation === id);
    const sent = await ask(b, "send", { conversation: id, cid: "g-1", body: "hello c" });
    assert.equal(sent.ok, true, JSON.stringify(sent));
    assert.equal((await atC).body, "hello c");

    // Removed: told, and then nothing new reaches or comes from them.
    const bRemoved = next(b, "conversation", (p) => p.conversation.id === id && p.change === "removed");
    const removed = await ask(a, "conversation.members", { conversation: id, remove: ["g-b"] });
    assert.equal(removed.ok, true, JSON.stringify(removed));
    assert.equal(removed.conversation.member_count, 3);
    await bRemoved;
    const atB = quiet(b, "message", 400);
    const after = await ask(o, "send", { conversation: id, cid: "g-2", body: "b is gone" });
    assert.equal(after.ok, true, JSON.stringify(after));
    assert.deepEqual(await atB, [], "a removed member receives nothing new");
    for (const [event, args] of [
      ["send", { conversation: id, cid: "g-3", body: "still here?" }],
      ["history", { conversation: id }],
      ["conversation.members.list", { conversation: id }],
      ["conversation.members", { conversation: id, add: ["g-b"] }],
    ]) {
      const r = await ask(b, event, args);
      assert.equal(r.error?.code, "not_found", `${event}: ${JSON.stringify(r)}`);
    }
    const h = await ask(o, "history", { conversation: id });
    assert.deepEqual(h.messages.map((m) => m.cid), ["g-1", "g-2"], "the removed member's attempt stored nothing");
    assert.equal(b.connected, true);
  });

  test("bad member changes are refused with their code and change nothing", async () => {
    const [o, p] = await Promise.all(["x-o", "x-p"].map((u) => im(u)));
    const { conversation } = await ask(o, "conversation.create", { type: "group", members: ["x-p"] });
    const direct = (await ask(o, "conversation.create", { type: "direct", with: "x-p" })).conversation;
    const id = conversation.id;
    const cases = [
      [{ conversation: id, add: "x-q" }, "bad_request"],
      [{ conversation: "one", add: ["x-q"] }, "bad_request"],
      [{ conversation: id, add: [""] }, "bad_request"],
      [{ conversation: id, add: ["x-q"], remove: ["x-q"] }, "bad_request"],
      [{ conversation: id, add: [7] }, "bad_request"],
      [{ conversation: id, add: Array.from({ length: 10_001 }, (_, i) => `m${i}`) }, "too_large"],
      [{ conversation: 999_999, add: ["x-q"] }, "not_found"],
      [{ conversation: direct.id, add: ["x-q"] }, "conflict"],
      [{ conversation: id, promote: ["x-nobody"] }, "conflict"],
      [{ conversation: id, demote: ["x-o"] }, "conflict"],
    ];
    for (const [args, code] of cases) {
      const r = await ask(o, "conversation.members", args);
      assert.equal(r.error?.code, code, `${JSON.stringify(args).slice(0, 80)}: ${JSON.stringify(r)}`);
    }
    for (const [event, args, code] of [
      ["conversation.members", "nope", "bad_request"],
      ["conversation.leave", {}, "bad_request"],
      ["conversation.leave", { conversation: direct.id }, "conflict"],
      ["conversation.members.list", { conversation: id, limit: 0 }, "bad_request"],
      ["conversation.members.list", { conversation: id, limit: 1001 }, "bad_request"],
    ]) {
      const r = await ask(o, event, args);
      assert.equal(r.error?.code, code, `${event} ${JSON.stringify(args)}: ${JSON.stringify(r)}`);
    }
    assert.deepEqual(await roster(p, id), { "x-o": "owner", "x-p": "member" });
    assert.equal(o.connected, true);
  });

  test("an owner who leaves hands the group to the longest-standing admin", async () => {
    const [o, a, b] = await Promise.all(["l-o", "l-a", "l-b"].map((u) => im(u)));
    const { conversation } = await ask(o, "conversation.create", { type: "group", members: ["l-a"] });
    const id = conversation.id;
    await ask(o, "conversation.members", { conversation: id, add: ["l-b"] });
    await ask(o, "conversation.members", { conversation: id, promote: ["l-b"] });
    const aTold = next(a, "conversation", (p) => p.conversation.id === id && p.conversation.owner === "l-b");
    const left = await ask(o, "conversation.leave", { conversation: id });
    assert.deepEqual(left, { ok: true });
    assert.equal((await aTold).change, "updated");
    assert.deepEqual(await roster(a, id), { "l-a": "member", "l-b": "owner" });
    const list = await ask(o, "conversation.list", {});
    assert.ok(!list.conversations.some((c) => c.id === id), "gone from the leaver's list");
    // The new owner has the owner's rights.
    const r = await ask(b, "conversation.members", { conversation: id, promote: ["l-a"] });
    assert.equal(r.ok, true, JSON.stringify(r));
    // The last members leave; nobody is left to see it.
    assert.equal((await ask(a, "conversation.leave", { conversation: id })).ok, true);
    assert.equal((await ask(b, "conversation.leave", { conversation: id })).ok, true);
    const again = await ask(b, "conversation.leave", { conversation: id });
    assert.equal(again.error?.code, "not_found");
  });

  test("large groups page their members; the conversation object lists at most 100", async () => {
    const o = await im("p-o");
    const members = Array.from({ length: 250 }, (_, i) => `p-${String(i).padStart(3, "0")}`);
    const { conversation } = await ask(o, "conversation.create", { type: "group", members });
    assert.equal(conversation.member_count, 251);
    assert.equal(conversation.members, null);
    const seen = [];
    let after;
    for (;;) {
      const page = await ask(o, "conversation.members.list", { conversation: conversation.id, after, limit: 100 });
      assert.equal(page.ok, true, JSON.stringify(page));
      assert.ok(page.members.length <= 100);
      seen.push(...page.members);
      if (!page.more) break;
      after = page.members.at(-1);
    }
    assert.deepEqual(seen, [...members, "p-o"].sort());
  });
});

describe("im group receipts", () => {
  test("a small group tells each author whose messages a watermark covers, coalesced", async () => {
    const [o, a, b] = await Promise.all(["r-o", "r-a", "r-b"].map((u) => im(u)));
    const { conversation } = await ask(o, "conversation.create", { type: "group", members: ["r-a", "r-b"] });
    const id = conversation.id;
    await sleep(50);
    await ask(a, "send", { conversation: id, cid: "r-1", body: 1 });
    await ask(a, "send", { conversation: id, cid: "r-2", body: 2 });
    await ask(b, "send", { conversation: id, cid: "r-3", body: 3 });
    await sleep(400); // the senders' own watermark moves are reported and done with
    const atA = quiet(a, "receipt", 700);
    const atB = quiet(b, "receipt", 700);
    const atO = quiet(o, "receipt", 700);
    for (const seq of [1, 2, 3]) await ask(o, "read", { conversation: id, seq });
    const [ra, rb, ro] = await Promise.all([atA, atB, atO]);
    const mine = (list) => list.filter((r) => r.user === "r-o");
    assert.equal(mine(ra).length, 1, `one receipt for the three reads: ${JSON.stringify(ra)}`);
    assert.deepEqual(mine(ra)[0], { conversation: id, user: "r-o", delivered_seq: 3, read_seq: 3 });
    assert.equal(mine(rb).length, 1, JSON.stringify(rb));
    assert.deepEqual(ro.filter((r) => r.user === "r-o"), [], "nobody is told about themself");
    const counts = await ask(b, "receipts", { conversation: id, seq: 1 });
    // r-o read it; r-b sent seq 3, which reads everything before it; the author is not counted.
    assert.deepEqual(counts, { ok: true, delivered: 2, read: 2 });
  });

  test("a large group sends each author counts, at most once per window; receipts counts on demand", async () => {
    const s = await startHerald({ HERALD_AUTH__JWT_SECRET: SECRET, HERALD_IM__RECEIPT_DETAIL_LIMIT: "2" });
    try {
      const connect = async (user) => {
        const socket = io(`${s.url}/im`, { auth: { token: tok(user) }, forceNew: true, transports: ["websocket"], reconnection: false });
        sockets.push(socket);
        await once(socket, "connect");
        return socket;
      };
      const [a, b, c, d] = await Promise.all(["big-a", "big-b", "big-c", "big-d"].map(connect));
      await sleep(50);
      const { conversation } = await ask(a, "conversation.create", { type: "group", members: ["big-b", "big-c", "big-d"] });
      const id = conversation.id;
      await sleep(50);
      const sent = await ask(a, "send", { conversation: id, cid: "big-1", body: "hello all" });
      assert.equal(sent.seq, 1);
      await sleep(400);
      const counts = quiet(a, "receipt.counts", 900);
      const details = quiet(a, "receipt", 900);
      await Promise.all([b, c].map((x) => ask(x, "read", { conversation: id, seq: 1 })));
      const got = await counts;
      assert.ok(got.length >= 1 && got.length <= 2, JSON.stringify(got));
      assert.deepEqual(got.at(-1), { conversation: id, seq: 1, delivered: 2, read: 2 });
      assert.deepEqual(await details, [], "no per-reader receipts in a large group");
      const asked = await ask(d, "receipts", { conversation: id, seq: 1 });
      assert.deepEqual(asked, { ok: true, delivered: 2, read: 2 });
      for (const [args, code] of [
        [{ conversation: id, seq: 0 }, "bad_request"],
        [{ conversation: id, seq: 2 }, "bad_request"],
        [{ conversation: id }, "bad_request"],
        [{ conversation: 999_999, seq: 1 }, "not_found"],
      ]) {
        const r = await ask(d, "receipts", args);
        assert.equal(r.error?.code, code, `${JSON.stringify(args)}: ${JSON.stringify(r)}`);
      }
    } finally {
      await s.stop();
    }
  });
});

describe("im HTTP API", () => {
  test("conversations, messages and members for backends, with the same rules as the events", async () => {
    const [a, b] = await Promise.all(["h-a", "h-b"].map((u) => im(u)));
    const aTold = next(a, "conversation", (p) => p.change === "added");
    const made = await api("POST", "/api/im/conversations", { type: "group", members: ["h-a", "h-b"], title: "ops", owner: "h-a" });
    assert.equal(made.status, 200, JSON.stringify(made.body));
    assert.equal(made.body.owner, "h-a");
    const id = made.body.id;
    assert.equal((await aTold).conversation.id, id);

    const atB = next(b, "message", (m) => m.conversation === id);
    const post = await api("POST", "/api/im/messages", { conversation: id, from: "h-a", cid: "api-1", body: { text: "from the backend" } });
    assert.equal(post.status, 200, JSON.stringify(post.body));
    assert.equal(post.body.seq, 1);
    const m = await atB;
    assert.deepEqual([m.from, m.seq, m.body], ["h-a", 1, { text: "from the backend" }]);
    // The same key as `send` by that user: a retry from a socket answers the first place.
    const retry = await ask(a, "send", { conversation: id, cid: "api-1", body: "again" });
    assert.deepEqual([retry.id, retry.seq], [post.body.id, 1]);
    const system = await api("POST", "/api/im/messages", { conversation: id, from: null, cid: "sys-1", body: "maintenance" });
    assert.equal(system.body.seq, 2);

    const page = await api("GET", `/api/im/conversations/${id}/messages?after=0&limit=1`);
    assert.equal(page.status, 200);
    assert.deepEqual([page.body.messages.map((x) => x.seq), page.body.more], [[1], true]);
    const rest = await api("GET", `/api/im/conversations/${id}/messages?after=1`);
    assert.deepEqual([rest.body.messages.map((x) => x.from), rest.body.more], [[null], false]);

    const changed = await api("POST", `/api/im/conversations/${id}/members`, { add: ["h-c"], promote: ["h-b"] });
    assert.equal(changed.status, 200, JSON.stringify(changed.body));
    assert.deepEqual(changed.body.members, ["h-a", "h-b", "h-c"]);
    assert.deepEqual(await roster(b, id), { "h-a": "owner", "h-b": "admin", "h-c": "member" });

    const direct = await api("POST", "/api/im/conversations", { type: "direct", members: ["h-a", "h-b"] });
    const again = await api("POST", "/api/im/conversations", { type: "direct", members: ["h-b", "h-a"] });
    assert.equal(again.body.id, direct.body.id, "a direct conversation is unique per pair");

    for (const [method, path, body, status, code] of [
      ["POST", "/api/im/messages", { conversation: id, from: "h-zed", cid: "z", body: 1 }, 403, "forbidden"],
      ["POST", "/api/im/messages", { conversation: 999_999, from: null, cid: "z", body: 1 }, 404, "not_found"],
      ["POST", "/api/im/messages", { conversation: id, from: "h-a", cid: "", body: 1 }, 400, "bad_request"],
      ["POST", "/api/im/messages", { conversation: id, from: "h-a", cid: "z" }, 400, "bad_request"],
      ["POST", "/api/im/messages", { conversation: direct.body.id, from: "h-a", cid: "api-1", body: 1 }, 409, "conflict"],
      ["POST", "/api/im/messages", "{not json", 400, "bad_request"],
      ["POST", "/api/im/messages", { conversation: id, from: "h-a", cid: "big", body: "x".repeat(70_000) }, 413, "too_large"],
      ["POST", "/api/im/conversations", { type: "direct", members: ["h-a"] }, 400, "bad_request"],
      ["POST", "/api/im/conversations", { type: "circle", members: [] }, 400, "bad_request"],
      ["POST", `/api/im/conversations/${direct.body.id}/members`, { add: ["h-c"] }, 409, "conflict"],
      ["POST", `/api/im/conversations/${id}/members`, { remove: ["h-a"] }, 409, "conflict"],
      ["POST", "/api/im/conversations/abc/members", {}, 400, "bad_request"],
      ["GET", `/api/im/conversations/${id}/messages?limit=500`, undefined, 400, "bad_request"],
      ["GET", "/api/im/conversations/999999/messages", undefined, 404, "not_found"],
    ]) {
      const r = await api(method, path, body);
      assert.deepEqual([r.status, r.body.error?.code], [status, code], `${method} ${path} ${JSON.stringify(body)?.slice(0, 60)}`);
    }
    const noKey = await api("POST", "/api/im/messages", { conversation: id, from: null, cid: "k", body: 1 }, null);
    assert.equal(noKey.status, 401);
    const h = await api("GET", `/api/im/conversations/${id}/messages`);
    assert.deepEqual(h.body.messages.map((x) => x.cid), ["api-1", "sys-1"], "refused requests stored nothing");
  });
});
