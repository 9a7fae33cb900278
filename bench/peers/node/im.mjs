// The IM peer of the side-by-side benchmarks: the part of IM.md that `herald bench
// im-direct` drives, built the way the seeds' Node guide describes a tuned service: the
// npm `socket.io` 4 server, `better-sqlite3` 12 in WAL mode with writes batched into one
// transaction every 2 ms (group commit), acks after the commit, a membership cache in
// memory, pushes with an ack for delivery.
//
//   namespace /im, JWT (HS256, --secret or HERALD_BENCH_SECRET) in auth.token, `sub` the user
//   conversation.create { type: "direct", with }   -> { ok, conversation }
//   conversation.create { type: "group", members }  -> { ok, conversation }
//   send { conversation, cid, body }                 -> { ok, id, seq, ts } after commit
//   message pushed to the conversation's other sockets, with an ack (delivered)
//   sync { since? }                                  -> { ok, conversations, messages, more }
//     (summaries of every conversation, then up to 500 messages after each `since`)
//   typing { conversation, typing }: as the seeds' StateAggregator does it, the updates of
//     a 100 ms window per conversation merged by user, then the conversation's typers
//     pushed to its room (`typing` { conversation, users }) at the end of every window
//     that had an update; --typing relay pushes each event to the others as it comes.
//   presence.subscribe { users } -> { ok, presence }; presence pushed to room
//     `presence:<user>` when a user's online state or device count changes; a lost
//     connection waits a 2 s grace (a timer per disconnect, as a Node service does it),
//     a Socket.IO disconnect none; no damping of flapping users.
//   --device-policy single: a new device's CONNECT finds the user's other sockets, tells
//     them `kicked` and disconnects them.
//   --send-rate R --send-burst B (per user, token bucket, as the seeds' limiter) and
//     --fanout-rate F (member deliveries a second per conversation): `rate_limited`.
//
// Durability as --synchronous says (FULL, the default, as Herald's `full`; or NORMAL).
// Binds 127.0.0.1 on --port (0 picks one); prints `PID <pid>` then `LISTENING <port>`.
import { createServer } from "node:http";
import { createHmac, timingSafeEqual } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { Server } from "socket.io";

const arg = (name, fallback) => {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : fallback;
};
const port = Number(arg("port", 3000));
const secret = arg("secret", process.env.HERALD_BENCH_SECRET ?? "");
const synchronous = arg("synchronous", "FULL").toUpperCase();
const file = arg("db", path.join(mkdtempSync(path.join(tmpdir(), "im-peer-")), "im.db"));
const WINDOW_MS = 2;
const SYNC_PAGE = 500;
const TYPING_WINDOW_MS = 100;
const TYPING_TTL_MS = 5000;
const typingMode = arg("typing", "aggregate");
const devicePolicy = arg("device-policy", "multiple");
const sendRate = Number(arg("send-rate", 0));
const sendBurst = Number(arg("send-burst", 40));
const fanoutRate = Number(arg("fanout-rate", 0));
const PRESENCE_GRACE_MS = 2000;

// A token bucket: `rate` a second up to `burst`.
function bucket(rate, burst) {
  return { rate, burst, tokens: burst, at: Date.now() };
}
function take(b, cost) {
  const now = Date.now();
  b.tokens = Math.min(b.burst, b.tokens + ((now - b.at) / 1000) * b.rate);
  b.at = now;
  cost = Math.min(cost, b.burst);
  if (b.tokens >= cost) {
    b.tokens -= cost;
    return 0;
  }
  return Math.max(1, Math.ceil(((cost - b.tokens) / b.rate) * 1000));
}
const userBuckets = new Map();
const convBuckets = new Map();

// Presence: each user's sockets (socket id -> device), last seen, what was pushed.
const presence = new Map();
function presenceOf(user) {
  const p = presence.get(user);
  if (!p) return { online: false, last_seen: null, devices: 0 };
  const devices = new Set(p.sockets.values()).size;
  return { online: devices > 0, last_seen: p.last_seen, devices };
}
function announce(user) {
  const p = presence.get(user);
  if (!p) return;
  const now = presenceOf(user);
  if (p.pushed && p.pushed.online === now.online && p.pushed.devices === now.devices) return;
  p.pushed = now;
  im.to(`presence:${user}`).emit("presence", { user, ...now });
}

const db = new Database(file);
db.pragma("journal_mode = WAL");
db.pragma(`synchronous = ${synchronous === "NORMAL" ? "NORMAL" : "FULL"}`);
db.exec(`
  CREATE TABLE IF NOT EXISTS conversations (id INTEGER PRIMARY KEY, direct_key TEXT UNIQUE, last_seq INTEGER NOT NULL DEFAULT 0);
  CREATE TABLE IF NOT EXISTS members (conversation_id INTEGER NOT NULL, user TEXT NOT NULL,
    read_seq INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (conversation_id, user));
  CREATE INDEX IF NOT EXISTS members_by_user ON members (user);
  CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, conversation_id INTEGER NOT NULL, seq INTEGER NOT NULL,
    sender TEXT NOT NULL, cid TEXT NOT NULL, body TEXT NOT NULL, ts INTEGER NOT NULL, UNIQUE (conversation_id, seq));
  CREATE UNIQUE INDEX IF NOT EXISTS messages_by_cid ON messages (sender, cid);
`);
const q = {
  findDirect: db.prepare("SELECT id FROM conversations WHERE direct_key = ?"),
  newDirect: db.prepare("INSERT INTO conversations (direct_key) VALUES (?)"),
  newGroup: db.prepare("INSERT INTO conversations (direct_key) VALUES (NULL)"),
  addMember: db.prepare("INSERT OR IGNORE INTO members (conversation_id, user) VALUES (?, ?)"),
  membersOf: db.prepare("SELECT user FROM members WHERE conversation_id = ?"),
  convsOf: db.prepare("SELECT conversation_id AS id FROM members WHERE user = ?"),
  existing: db.prepare("SELECT conversation_id, id, seq, ts FROM messages WHERE sender = ? AND cid = ?"),
  bump: db.prepare("UPDATE conversations SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq"),
  summaries: db.prepare(`SELECT c.id, c.direct_key, c.last_seq, m.read_seq FROM members m
    JOIN conversations c ON c.id = m.conversation_id WHERE m.user = ?`),
  after: db.prepare("SELECT id, seq, sender, cid, body, ts FROM messages WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?"),
  insert: db.prepare("INSERT INTO messages (conversation_id, seq, sender, cid, body, ts) VALUES (?, ?, ?, ?, ?, ?)"),
};

// The membership cache: conversation id -> Set of users.
const members = new Map();
function membersOf(id) {
  let set = members.get(id);
  if (!set) {
    set = new Set(q.membersOf.all(id).map((r) => r.user));
    members.set(id, set);
  }
  return set;
}

// Group commit: sends queue here; one transaction every WINDOW_MS stores them all.
let queue = [];
let timer = null;
const commit = db.transaction((batch) =>
  batch.map(({ user, m }) => {
    const found = q.existing.get(user, m.cid);
    if (found) {
      return found.conversation_id === m.conversation ? { ...found, duplicate: true } : { error: "conflict" };
    }
    const row = q.bump.get(m.conversation);
    if (!row) return { error: "not_found" };
    const ts = Date.now();
    const { lastInsertRowid } = q.insert.run(m.conversation, row.last_seq, user, m.cid, JSON.stringify(m.body), ts);
    return { id: Number(lastInsertRowid), seq: row.last_seq, ts };
  }),
);
function flush() {
  timer = null;
  const batch = queue;
  queue = [];
  let results;
  try {
    results = commit(batch);
  } catch (e) {
    for (const { ack } of batch) ack({ ok: false, error: { code: "unavailable", message: String(e) } });
    return;
  }
  batch.forEach(({ socket, user, m, ack }, i) => {
    const r = results[i];
    if (r.error) return ack({ ok: false, error: { code: r.error, message: r.error } });
    ack({ ok: true, id: r.id, seq: r.seq, ts: r.ts });
    if (r.duplicate) return;
    const message = { conversation: m.conversation, id: r.id, seq: r.seq, from: user, cid: m.cid, body: m.body, ts: r.ts };
    // Every other socket of the conversation, with an ack each (delivery).
    socket.to(`conv:${m.conversation}`).timeout(30_000).emit("message", message, () => {});
  });
}

function verify(token) {
  const [h, p, s] = String(token ?? "").split(".");
  if (!h || !p || !s) return null;
  const expected = createHmac("sha256", secret).update(`${h}.${p}`).digest();
  const given = Buffer.from(s, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const claims = JSON.parse(Buffer.from(p, "base64url").toString());
  if (claims.exp && claims.exp * 1000 < Date.now()) return null;
  return typeof claims.sub === "string" ? claims.sub : null;
}

const http = createServer();
const io = new Server(http, { serveClient: false });
const im = io.of("/im");
im.use((socket, next) => {
  const user = verify(socket.handshake.auth?.token);
  if (!user) return next(Object.assign(new Error("token_missing"), { data: { code: "token_missing" } }));
  socket.data.user = user;
  next();
});
im.on("connection", (socket) => {
  const user = socket.data.user;
  const device = String(socket.handshake.auth?.device ?? socket.id);
  if (devicePolicy === "single") {
    // The user's sockets on this node, found synchronously (the handlers below must be
    // in place before this socket's first event).
    for (const id of im.adapter.rooms.get(`user:${user}`) ?? []) {
      const old = im.sockets.get(id);
      if (old && old.data.device !== device) {
        old.emit("kicked", { reason: "login_elsewhere", device, platform: "other" });
        old.disconnect();
      }
    }
  }
  socket.data.device = device;
  socket.join(`user:${user}`);
  const p = presence.get(user) ?? { sockets: new Map(), last_seen: null, pushed: null };
  presence.set(user, p);
  p.sockets.set(socket.id, device);
  p.last_seen = Date.now();
  announce(user);
  socket.on("disconnect", (reason) => {
    p.sockets.delete(socket.id);
    p.last_seen = Date.now();
    const lost = reason !== "client namespace disconnect" && reason !== "server namespace disconnect";
    if (lost) setTimeout(() => announce(user), PRESENCE_GRACE_MS);
    else announce(user);
  });
  socket.on("presence.subscribe", (args, ack) => {
    if (typeof ack !== "function") return;
    const users = args?.users;
    if (!Array.isArray(users) || users.length > 1000 || !users.every((u) => typeof u === "string")) {
      return ack({ ok: false, error: { code: "bad_request", message: "presence.subscribe takes { users }" } });
    }
    socket.join(users.map((u) => `presence:${u}`));
    ack({ ok: true, presence: Object.fromEntries(users.map((u) => [u, presenceOf(u)])) });
  });
  for (const { id } of q.convsOf.all(user)) socket.join(`conv:${id}`);
  socket.on("conversation.create", (args, ack) => {
    if (typeof ack !== "function") return;
    if (args?.type === "group") {
      const others = args.members;
      if (!Array.isArray(others) || others.length > 100000 || !others.every((u) => typeof u === "string")) {
        return ack({ ok: false, error: { code: "bad_request", message: "members is a list of users" } });
      }
      const all = [...new Set([user, ...others])];
      const id = db.transaction(() => {
        const made = Number(q.newGroup.run().lastInsertRowid);
        for (const u of all) q.addMember.run(made, u);
        return made;
      })();
      im.in(all.map((u) => `user:${u}`)).socketsJoin(`conv:${id}`);
      return ack({ ok: true, conversation: { id, type: "group", members: all.sort() } });
    }
    const other = args?.with;
    if (args?.type !== "direct" || typeof other !== "string" || other === user) {
      return ack({ ok: false, error: { code: "bad_request", message: "direct or group conversations" } });
    }
    const key = [user, other].sort().join("\n");
    let id = q.findDirect.get(key)?.id;
    if (!id) {
      id = db.transaction(() => {
        const made = Number(q.newDirect.run(key).lastInsertRowid);
        q.addMember.run(made, user);
        q.addMember.run(made, other);
        return made;
      })();
      members.delete(id);
      im.in([`user:${user}`, `user:${other}`]).socketsJoin(`conv:${id}`);
    }
    ack({ ok: true, conversation: { id, type: "direct", members: [user, other].sort() } });
  });
  socket.on("typing", (args, ack) => {
    const answer = typing(socket, user, args);
    if (typeof ack === "function") ack(answer);
  });
  socket.on("sync", (args, ack) => {
    if (typeof ack === "function") ack(sync(user, args));
  });
  socket.on("send", (m, ack) => {
    if (typeof ack !== "function") return;
    if (!m || typeof m.conversation !== "number" || typeof m.cid !== "string" || m.body === undefined) {
      return ack({ ok: false, error: { code: "bad_request", message: "send takes { conversation, cid, body }" } });
    }
    if (sendRate > 0) {
      let b = userBuckets.get(user);
      if (!b) userBuckets.set(user, (b = bucket(sendRate, sendBurst)));
      const wait = take(b, 1);
      if (wait) return ack({ ok: false, error: { code: "rate_limited", message: "over the send rate", retryAfterMs: wait } });
    }
    const convMembers = membersOf(m.conversation);
    if (!convMembers.has(user)) {
      return ack({ ok: false, error: { code: "not_found", message: "no such conversation" } });
    }
    if (fanoutRate > 0) {
      let b = convBuckets.get(m.conversation);
      if (!b) convBuckets.set(m.conversation, (b = bucket(fanoutRate, fanoutRate)));
      const wait = take(b, convMembers.size);
      if (wait) return ack({ ok: false, error: { code: "rate_limited", message: "over the conversation's budget", retryAfterMs: wait } });
    }
    queue.push({ socket, user, m, ack });
    if (!timer) timer = setTimeout(flush, WINDOW_MS);
  });
});
// The typers of each conversation (user -> until), and the windows under way.
const typers = new Map();
const typingWindows = new Set();
function typing(socket, user, args) {
  const id = args?.conversation;
  if (typeof id !== "number" || typeof args?.typing !== "boolean") {
    return { ok: false, error: { code: "bad_request", message: "typing takes { conversation, typing }" } };
  }
  if (!membersOf(id).has(user)) return { ok: false, error: { code: "not_found", message: "no such conversation" } };
  if (typingMode === "relay") {
    socket.to(`conv:${id}`).emit("typing", { conversation: id, user, typing: args.typing });
    return { ok: true };
  }
  let set = typers.get(id);
  if (!set) typers.set(id, (set = new Map()));
  if (args.typing) set.set(user, Date.now() + TYPING_TTL_MS);
  else set.delete(user);
  if (!typingWindows.has(id)) {
    typingWindows.add(id);
    setTimeout(() => {
      typingWindows.delete(id);
      const now = Date.now();
      for (const [u, until] of set) if (until <= now) set.delete(u);
      im.to(`conv:${id}`).emit("typing", { conversation: id, users: [...set.keys()].sort() });
      if (set.size === 0) typers.delete(id);
    }, TYPING_WINDOW_MS);
  }
  return { ok: true };
}

function sync(user, args) {
  const since = args?.since ?? {};
  if (typeof since !== "object" || Array.isArray(since)) {
    return { ok: false, error: { code: "bad_request", message: "since is { [conversation]: seq }" } };
  }
  const conversations = q.summaries.all(user).map((r) => ({
    id: r.id,
    type: r.direct_key ? "direct" : "group",
    last_seq: r.last_seq,
    read_seq: r.read_seq,
    unread: Math.max(0, r.last_seq - r.read_seq),
  }));
  const mine = new Set(conversations.map((c) => c.id));
  const messages = [];
  let more = false;
  for (const [key, seq] of Object.entries(since)) {
    const id = Number(key);
    if (!mine.has(id)) continue;
    const room = SYNC_PAGE - messages.length;
    if (room === 0) {
      more = true;
      break;
    }
    const rows = q.after.all(id, Number(seq) || 0, room + 1);
    if (rows.length > room) {
      rows.length = room;
      more = true;
    }
    for (const r of rows) {
      messages.push({ conversation: id, id: r.id, seq: r.seq, from: r.sender, cid: r.cid, body: JSON.parse(r.body), ts: r.ts });
    }
  }
  return { ok: true, conversations, messages, more };
}

http.listen(port, "127.0.0.1", () => {
  console.log(`PID ${process.pid}`);
  console.log(`LISTENING ${http.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
