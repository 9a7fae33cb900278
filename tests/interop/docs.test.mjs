// Document collaboration with the stock y-socket.io provider (1.1.3) and yjs in Node:
// editors converging on text and maps, concurrent conflicting edits, late joiners,
// offline edits merged on reconnect, awareness added, changed and removed at once when a
// tab goes, read-only clients refused, a 20 MB document, persistence across SIGKILL, the
// HTTP API, and malformed input.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import * as Y from "yjs";
import { SocketIOProvider } from "y-socket.io";
import { closeProviders } from "./providers.mjs";
import { io } from "socket.io-client";
import { startHerald, tempStore, tempDatabase, dropDatabase, sleep, until, jwt, now, once } from "./harness.mjs";

// Every provider adds a process "exit" listener.
process.setMaxListeners(200);

const SECRET = "docs-test-secret-docs-test-secret!!";
const KEY = "docs-api-key";

let server;
const providers = [];
const sockets = [];
let docs = 0;
/** A document name of the test's own. */
const fresh = (what) => `${what}-${process.pid}-${++docs}`;

const token = (sub, claims) => jwt({ sub, exp: now(600), ...claims }, { secret: SECRET });

/** A provider on `name` with its own Y.Doc (BroadcastChannel off: only the server syncs). */
function editor(name, { user = "alice", claims = { docs: ["*"] }, url = server.url, doc = new Y.Doc() } = {}) {
  const provider = new SocketIOProvider(url, name, doc, {
    autoConnect: true,
    disableBc: true,
    auth: { token: token(user, claims) },
  });
  providers.push(provider);
  return provider;
}

const synced = (p) => until(() => p.synced, "the provider synced", 10_000);
const text = (p, field = "content") => p.doc.getText(field).toString();

async function api(method, path, body, headers = {}) {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, ...headers },
    body,
  });
  return res;
}

async function start(env = {}) {
  return startHerald({
    HERALD_AUTH__JWT_SECRET: SECRET,
    HERALD_API__KEY: KEY,
    HERALD_DOCS__FLUSH_MS: "200",
    ...(process.env.HERALD_TEST_LOG_LEVEL ? { HERALD_LOG__LEVEL: process.env.HERALD_TEST_LOG_LEVEL } : {}),
    ...env,
  });
}

before(async () => {
  server = await start();
});

after(async () => {
  closeProviders(providers);
  for (const s of sockets) s.close();
  await server?.stop();
});

describe("sync", () => {
  test("two editors converge on text and maps, the sender never gets its own update back", async () => {
    const name = fresh("two");
    const a = editor(name);
    const b = editor(name, { user: "bob" });
    await Promise.all([synced(a), synced(b)]);
    let echoed = 0;
    a.socket.on("sync-update", () => echoed++);
    a.doc.getText("content").insert(0, "hello");
    a.doc.getMap("meta").set("title", "Notes");
    await until(() => text(b) === "hello" && b.doc.getMap("meta").get("title") === "Notes", "b has a's edits");
    b.doc.getText("content").insert(5, " world");
    await until(() => text(a) === "hello world", "a has b's edit");
    await sleep(200);
    // a got b's one edit (merged into one frame), never its own two.
    assert.equal(echoed, 1);
  });

  test("three editors' concurrent conflicting edits converge to one state", async () => {
    const name = fresh("three");
    const eds = [editor(name), editor(name, { user: "bob" }), editor(name, { user: "carol" })];
    await Promise.all(eds.map(synced));
    eds[0].doc.getText("content").insert(0, "base");
    await until(() => eds.every((e) => text(e) === "base"), "everyone has the base");
    // The same place, the same key, at once.
    eds.forEach((e, i) => {
      e.doc.getText("content").insert(2, `<${i}>`);
      e.doc.getMap("m").set("k", `v${i}`);
      e.doc.getArray("list").push([i]);
    });
    await until(
      () => {
        const t = eds.map((e) => text(e));
        const k = eds.map((e) => e.doc.getMap("m").get("k"));
        return t.every((x) => x === t[0]) && k.every((x) => x === k[0]) && eds.every((e) => e.doc.getArray("list").length === 3);
      },
      "all three converged",
    );
    const t = text(eds[0]);
    for (let i = 0; i < 3; i++) assert.ok(t.includes(`<${i}>`), t);
    const sv = (e) => JSON.stringify([...Y.decodeStateVector(Y.encodeStateVector(e.doc))].sort((x, y) => x[0] - y[0]));
    await until(() => eds.every((e) => sv(e) === sv(eds[0])), "state vectors equal");
    const svs = eds.map(sv);
    assert.ok(svs.every((s) => s === svs[0]), "state vectors equal");
  });

  test("a late joiner gets the whole document", async () => {
    const name = fresh("late");
    const a = editor(name);
    await synced(a);
    const t = a.doc.getText("content");
    for (let i = 0; i < 200; i++) t.insert(t.length, `line ${i}\n`);
    a.doc.getMap("meta").set("n", 200);
    await sleep(100);
    const late = editor(name, { user: "dave" });
    await synced(late);
    await until(() => text(late) === t.toString() && late.doc.getMap("meta").get("n") === 200, "late joiner has all");
  });

  test("edits made offline are merged both ways on reconnect", async () => {
    const name = fresh("offline");
    const a = editor(name);
    const b = editor(name, { user: "bob" });
    await Promise.all([synced(a), synced(b)]);
    a.doc.getText("content").insert(0, "shared ");
    await until(() => text(b) === "shared ", "b has the start");
    a.disconnect();
    await until(() => !a.socket.connected, "a is offline");
    a.doc.getText("content").insert(text(a).length, "from-a ");
    b.doc.getText("content").insert(0, "from-b ");
    await sleep(100);
    assert.ok(!text(b).includes("from-a"));
    a.connect();
    await until(() => text(a) === text(b) && text(a).includes("from-a") && text(a).includes("from-b"), "merged");
  });
});

describe("awareness", () => {
  test("states are added, changed, and removed at once when a tab goes", async () => {
    const name = fresh("aware");
    const a = editor(name);
    const b = editor(name, { user: "bob" });
    await Promise.all([synced(a), synced(b)]);
    a.awareness.setLocalStateField("user", { name: "Alice", cursor: 1 });
    await until(() => b.awareness.getStates().get(a.doc.clientID)?.user?.name === "Alice", "b sees alice");
    a.awareness.setLocalStateField("user", { name: "Alice", cursor: 7 });
    await until(() => b.awareness.getStates().get(a.doc.clientID)?.user?.cursor === 7, "b sees the cursor move");
    // A third tab joining later is told the states there are.
    const c = editor(name, { user: "carol" });
    await synced(c);
    await until(() => c.awareness.getStates().get(a.doc.clientID)?.user?.cursor === 7, "c sees alice");
    // Alice's tab goes without a word (its socket closes): the others drop her at once,
    // not after y-protocols' 30 s timeout.
    const gone = Date.now();
    a.socket.io.engine.close();
    a.destroy();
    await until(() => !b.awareness.getStates().has(a.doc.clientID) && !c.awareness.getStates().has(a.doc.clientID), "alice removed", 2000);
    assert.ok(Date.now() - gone < 1500, `removed after ${Date.now() - gone} ms`);
    // Bob, reconnecting, clears the others locally and sends their removal: the server
    // keeps carol (only a state's own socket removes it at its clock).
    c.awareness.setLocalStateField("user", { name: "Carol" });
    await until(() => b.awareness.getStates().get(c.doc.clientID)?.user?.name === "Carol", "b sees carol");
    b.disconnect();
    await until(() => !b.socket.connected, "b offline");
    b.connect();
    await synced(b);
    await sleep(300);
    const d = editor(name, { user: "dave" });
    await synced(d);
    await until(() => d.awareness.getStates().get(c.doc.clientID)?.user?.name === "Carol", "carol still known to the server");
  });

  test("cursor moves are merged per window, not relayed one by one", async () => {
    const name = fresh("cursors");
    const a = editor(name);
    const b = editor(name, { user: "bob" });
    await Promise.all([synced(a), synced(b)]);
    let frames = 0;
    b.socket.on("awareness-update", () => frames++);
    for (let i = 0; i < 50; i++) {
      a.awareness.setLocalStateField("cursor", i);
      await sleep(2);
    }
    await until(() => b.awareness.getStates().get(a.doc.clientID)?.cursor === 49, "b sees the last cursor");
    // 50 changes over ~100+ ms, in 50 ms windows.
    assert.ok(frames <= 10, `${frames} frames for 50 changes`);
  });
});

describe("access", () => {
  test("a token without the document is refused with a code", async () => {
    const socket = io(`${server.url}/yjs|secret-doc`, {
      transports: ["websocket"],
      auth: { token: token("eve", { docs: ["public-*"] }) },
    });
    sockets.push(socket);
    const err = await once(socket, "connect_error");
    assert.equal(err.data?.code, "doc_forbidden");
    const noToken = io(`${server.url}/yjs|secret-doc`, { transports: ["websocket"], forceNew: true });
    sockets.push(noToken);
    const err2 = await once(noToken, "connect_error");
    assert.equal(err2.data?.code, "token_missing");
  });

  test("a read-only client gets the document, its edits are neither applied, stored nor relayed", async () => {
    const name = fresh("ro");
    const writer = editor(name);
    await synced(writer);
    writer.doc.getText("content").insert(0, "official");
    await sleep(100);
    const reader = editor(name, { user: "rita", claims: { docs_read: [name] } });
    await synced(reader);
    await until(() => text(reader) === "official", "the reader reads");
    reader.doc.getText("content").insert(0, "VANDAL ");
    await sleep(500);
    assert.equal(text(writer), "official");
    const stored = await api("GET", `/api/docs/${encodeURIComponent(name)}/text`);
    assert.equal(await stored.text(), "official");
    // A third client joining later does not get it either.
    const late = editor(name, { user: "lee" });
    await synced(late);
    await sleep(100);
    assert.equal(text(late), "official");
  });
});

describe("documents", () => {
  test("a 20 MB document syncs to a late joiner without a disconnect", async () => {
    const name = fresh("large");
    const a = editor(name);
    await synced(a);
    const chunk = "x".repeat(1 << 20);
    a.doc.transact(() => {
      for (let i = 0; i < 20; i++) a.doc.getArray("blobs").push([chunk + i]);
    });
    const late = editor(name, { user: "bob" });
    let dropped = false;
    late.socket.on("disconnect", () => (dropped = true));
    await until(() => late.doc.getArray("blobs").length === 20, "the late joiner has 20 MB", 30_000);
    assert.equal(late.doc.getArray("blobs").get(19), chunk + 19);
    assert.equal(dropped, false);
    assert.ok(a.socket.connected, "the writer kept its connection");
  });

  test("every update is stored: a SIGKILLed server gives it all back after a restart", async () => {
    // SQLite, or with IM_TEST_STORE=postgres a database of the test's own.
    const database = process.env.IM_TEST_STORE === "postgres" ? tempDatabase() : null;
    const store = database ? database.url : `sqlite://${tempStore()}`;
    const ready = async (n) => {
      if (database) await until(() => n.logs.some((l) => /connected to PostgreSQL/.test(l)), "PostgreSQL connected");
      return n;
    };
    let node = await ready(await start({ HERALD_IM__STORE: store }));
    const name = fresh("persist");
    const a = editor(name, { url: node.url });
    await synced(a);
    const t = a.doc.getText("content");
    for (let i = 0; i < 100; i++) t.insert(t.length, `${i},`);
    a.doc.getMap("meta").set("done", true);
    // Past docs.flush_ms (200 ms here).
    await sleep(600);
    await node.stop("SIGKILL");
    node = await ready(await start({ HERALD_IM__STORE: store }));
    try {
      // A new editor's sync-step-1 comes while the document loads: it is answered.
      const b = editor(name, { url: node.url, user: "bob" });
      await until(() => text(b) === t.toString() && b.doc.getMap("meta").get("done") === true, "all back", 10_000);
      // The reloaded document takes edits as before.
      a.destroy();
      a.socket.close();
      b.doc.getText("content").insert(0, "again ");
      const c = editor(name, { url: node.url, user: "carol" });
      await until(() => text(c).startsWith("again 0,1,"), "c has b's new edit on the old text");
    } finally {
      await node.stop();
      if (database) dropDatabase(database);
    }
  });

  test("documents are compacted in the background and unloaded when idle, then load again", async () => {
    const node = await start({
      HERALD_DOCS__FLUSH_MS: "100",
      HERALD_DOCS__COMPACT_UPDATES: "5",
      HERALD_DOCS__IDLE_UNLOAD_MS: "300",
    });
    const metric = async (name) => {
      const body = await (await fetch(`${node.url}/metrics`)).text();
      return Number(new RegExp(`^${name} (\\d+)$`, "m").exec(body)?.[1]);
    };
    const listed = async (name) => {
      const res = await fetch(`${node.url}/api/docs?prefix=${encodeURIComponent(name)}`, {
        headers: { authorization: `Bearer ${KEY}` },
      });
      return (await res.json()).documents[0];
    };
    try {
      const name = fresh("compact");
      const a = editor(name, { url: node.url });
      await synced(a);
      const t = a.doc.getText("content");
      // Thirty writes of their own (the writer runs every 25 ms here).
      for (let i = 0; i < 30; i++) {
        t.insert(t.length, `${i};`);
        await sleep(30);
      }
      await until(async () => (await metric("herald_docs_compactions_total")) >= 1, "a compaction");
      await until(async () => (await listed(name))?.pendingUpdates < 10, "few updates after the snapshot");
      assert.equal(await metric("herald_docs_loaded"), 1);
      const before = await metric("herald_docs_loads_total");
      a.destroy();
      await until(async () => (await metric("herald_docs_loaded")) === 0, "unloaded", 5000);
      assert.ok((await metric("herald_docs_unloads_total")) >= 1);
      // Compacted before it went: nothing left after the snapshot.
      assert.equal((await listed(name)).pendingUpdates, 0);
      const b = editor(name, { url: node.url, user: "bob" });
      await until(() => text(b) === t.toString(), "the reloaded document is whole");
      assert.equal(await metric("herald_docs_loads_total"), before + 1);
    } finally {
      await node.stop();
    }
  });

  test("the HTTP API reads, applies, lists and deletes documents", async () => {
    const name = fresh("api");
    const a = editor(name);
    await synced(a);
    a.doc.getText("content").insert(0, "from the editor");
    await sleep(300);
    // Read as a Yjs update and as text.
    const state = await api("GET", `/api/docs/${encodeURIComponent(name)}`);
    assert.equal(state.status, 200);
    const copy = new Y.Doc();
    Y.applyUpdate(copy, new Uint8Array(await state.arrayBuffer()));
    assert.equal(copy.getText("content").toString(), "from the editor");
    // Apply from a backend: the editor gets it.
    const backend = new Y.Doc();
    Y.applyUpdate(backend, Y.encodeStateAsUpdate(copy));
    backend.getText("content").insert(0, "[bot] ");
    const update = Y.encodeStateAsUpdate(backend, Y.encodeStateVector(copy));
    const applied = await api("POST", `/api/docs/${encodeURIComponent(name)}/update`, update, {
      "content-type": "application/octet-stream",
    });
    assert.equal(applied.status, 202);
    await until(() => text(a) === "[bot] from the editor", "the editor has the backend's edit");
    const bad = await api("POST", `/api/docs/${encodeURIComponent(name)}/update`, new Uint8Array([0xff, 0xff, 1]));
    assert.equal(bad.status, 400);
    await sleep(300);
    const listed = await (await api("GET", `/api/docs?prefix=${encodeURIComponent(name)}`)).json();
    assert.equal(listed.ok, true);
    assert.deepEqual(listed.documents.map((d) => d.name), [name]);
    assert.ok(listed.documents[0].bytes > 0);
    for (const limit of [0, 1001]) {
      const res = await api("GET", `/api/docs?limit=${limit}`);
      assert.equal(res.status, 400, `limit=${limit} is refused`);
      assert.equal((await res.json()).error.code, "bad_request");
    }
    const missing = await api("GET", `/api/docs/${encodeURIComponent(fresh("nothing"))}`);
    assert.equal(missing.status, 404);
    const unauthorized = await fetch(`${server.url}/api/docs/${encodeURIComponent(name)}`);
    assert.equal(unauthorized.status, 401);
    // Delete: the editor is disconnected, the document gone.
    let disconnected = false;
    a.socket.on("disconnect", () => (disconnected = true));
    const del = await api("DELETE", `/api/docs/${encodeURIComponent(name)}`);
    assert.equal(del.status, 200);
    await until(() => disconnected, "the editor was disconnected");
    assert.equal((await api("GET", `/api/docs/${encodeURIComponent(name)}`)).status, 404);
  });
});

describe("bad input", () => {
  test("malformed updates and wrong arguments are refused, the document unharmed, abusers disconnected", async () => {
    const name = fresh("bad");
    const a = editor(name);
    await synced(a);
    a.doc.getText("content").insert(0, "intact");
    await sleep(100);
    const raw = io(`${server.url}/yjs|${name}`, {
      transports: ["websocket"],
      forceNew: true,
      auth: { token: token("mallory", { docs: ["*"] }) },
    });
    sockets.push(raw);
    // Answer the server's sync step with garbage.
    raw.on("sync-step-1", (_sv, ack) => ack(Buffer.from([0xff, 0xfe, 0xfd])));
    await once(raw, "connect");
    let disconnected = false;
    raw.on("disconnect", () => (disconnected = true));
    raw.emit("sync-update", Buffer.from([1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0]));
    raw.emit("sync-update", "not binary");
    raw.emit("awareness-update", Buffer.from([5, 1]));
    raw.emit("no-such-event", 1);
    // A string in the update that is not UTF-8 (yrs would read it unchecked).
    raw.emit("sync-update", Buffer.from([1, 1, 1, 0, 4, 1, 1, 116, 2, 0xc3, 0x28, 0]));
    const answer = await raw.timeout(2000).emitWithAck("sync-step-1", Buffer.from([0])).catch(() => null);
    assert.ok(answer, "a good sync-step-1 is still answered");
    const served = new Y.Doc();
    Y.applyUpdate(served, new Uint8Array(answer));
    assert.equal(served.getText("content").toString(), "intact");
    assert.equal(disconnected, false, "a few bad events are tolerated");
    for (let i = 0; i < 12; i++) raw.emit("sync-update", Buffer.from([0xff]));
    await until(() => disconnected, "the abuser was disconnected");
    // The document and its honest editor are unharmed.
    a.doc.getText("content").insert(6, "!");
    const b = editor(name, { user: "bob" });
    await until(() => text(b) === "intact!", "another editor still syncs");
    assert.ok(server.alive());
  });
});
