// Documents on many nodes: three herald processes on one PostgreSQL database and a
// private Redis, stock y-socket.io providers on any of them. Editors on different nodes
// converge (concurrent edits included), cursors are seen across nodes and removed at
// once when their tab goes, a late joiner on another node gets edits not yet stored, and
// every update is stored once (by the node that received it).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as Y from "yjs";
import { SocketIOProvider } from "y-socket.io";
import { closeProviders } from "./providers.mjs";
import { dropDatabase, jwt, logged, now, privateRedis, sleep, startHerald, tempDatabase, until } from "./harness.mjs";

process.setMaxListeners(100);

const SECRET = "cluster-docs-secret-of-at-least-32-bytes";
const KEY = "cluster-docs-key";
let redis, db, nodes;
const providers = [];
let n = 0;
const fresh = (what) => `${what}-${process.pid}-${++n}`;

function editor(node, name, user = "ann") {
  const p = new SocketIOProvider(node.url, name, new Y.Doc(), {
    disableBc: true,
    auth: { token: jwt({ sub: user, exp: now(600), docs: ["*"] }, { secret: SECRET }) },
  });
  providers.push(p);
  return p;
}
const synced = (p) => until(() => p.synced, "synced", 10_000);
const text = (p) => p.doc.getText("content").toString();

before(async () => {
  redis = await privateRedis();
  db = tempDatabase();
  const env = {
    HERALD_CLUSTER__REDIS_URL: redis.url,
    HERALD_CLUSTER__REQUEST_TIMEOUT_MS: "1000",
    HERALD_IM__STORE: db.url,
    HERALD_AUTH__JWT_SECRET: SECRET,
    HERALD_API__KEY: KEY,
    // Nothing stored during the tests: a late joiner on another node can only get what
    // the others hold. The drain (SIGTERM) writes it.
    HERALD_DOCS__FLUSH_MS: "600000",
    HERALD_DRAIN__WINDOW_MS: "100",
  };
  nodes = [await startHerald(env), await startHerald(env), await startHerald(env)];
  await Promise.all(nodes.map((h) => logged(h, /connected to PostgreSQL/)));
  await Promise.all(nodes.map((h) => logged(h, /caught up with the other nodes/)));
});

after(async () => {
  closeProviders(providers);
  for (const h of nodes ?? []) await h.stop();
  await redis?.stop();
  if (db) dropDatabase(db);
});

test("editors on three nodes converge, concurrent edits included", async () => {
  const name = fresh("conv");
  const eds = nodes.map((h, i) => editor(h, name, `u${i}`));
  await Promise.all(eds.map(synced));
  await sleep(300);
  eds[0].doc.getText("content").insert(0, "base");
  await until(() => eds.every((e) => text(e) === "base"), "everyone has the base");
  eds.forEach((e, i) => {
    e.doc.getText("content").insert(2, `<${i}>`);
    e.doc.getMap("m").set("k", i);
  });
  await until(() => {
    const t = eds.map(text);
    const k = eds.map((e) => e.doc.getMap("m").get("k"));
    return t.every((x) => x === t[0]) && k.every((x) => x === k[0]) && [0, 1, 2].every((i) => t[0].includes(`<${i}>`));
  }, "converged");
  const sv = (e) => JSON.stringify([...Y.decodeStateVector(Y.encodeStateVector(e.doc))].sort((x, y) => x[0] - y[0]));
    await until(() => eds.every((e) => sv(e) === sv(eds[0])), "state vectors equal");
    const svs = eds.map(sv);
  assert.ok(svs.every((s) => s === svs[0]));
});

test("cursors are seen across nodes and removed at once when their tab goes", async () => {
  const name = fresh("aware");
  const a = editor(nodes[0], name);
  const b = editor(nodes[2], name, "bob");
  await Promise.all([synced(a), synced(b)]);
  await sleep(300);
  a.awareness.setLocalStateField("user", { name: "Ann", cursor: 3 });
  await until(() => b.awareness.getStates().get(a.doc.clientID)?.user?.cursor === 3, "b sees a's cursor");
  // A third on node 2 joining later is told a's state by the nodes' sync.
  const c = editor(nodes[1], name, "carol");
  await synced(c);
  await until(() => c.awareness.getStates().get(a.doc.clientID)?.user?.name === "Ann", "c sees a");
  const gone = Date.now();
  a.destroy();
  await until(
    () => !b.awareness.getStates().has(a.doc.clientID) && !c.awareness.getStates().has(a.doc.clientID),
    "a removed on the other nodes",
    3000,
  );
  assert.ok(Date.now() - gone < 2000, `removed after ${Date.now() - gone} ms`);
});

test("an update applied through the API of a node where nobody opened the document reaches the editors on the others", async () => {
  const name = fresh("api");
  const b = editor(nodes[1], name);
  const c = editor(nodes[2], name, "cy");
  await Promise.all([synced(b), synced(c)]);
  b.doc.getText("content").insert(0, "typed");
  await until(() => text(c) === "typed", "node 3 has node 2's edit");
  // A backend's edit, made on a copy of the document, sent to node 1.
  const backend = new Y.Doc();
  Y.applyUpdate(backend, Y.encodeStateAsUpdate(b.doc));
  const before = Y.encodeStateVector(backend);
  backend.getText("content").insert(0, "[api] ");
  const res = await fetch(`${nodes[0].url}/api/docs/${encodeURIComponent(name)}/update`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/octet-stream" },
    body: Y.encodeStateAsUpdate(backend, before),
  });
  assert.equal(res.status, 202);
  await until(() => text(b) === "[api] typed" && text(c) === "[api] typed", "both editors have the API's edit", 5000);
});

test("a late joiner on another node gets edits the store does not have; each update is stored once, by its node", async () => {
  const name = fresh("late");
  const a = editor(nodes[0], name);
  await synced(a);
  const t = a.doc.getText("content");
  for (let i = 0; i < 20; i++) t.insert(t.length, `${i} `);
  await sleep(200);
  // docs.flush_ms is ten minutes here: the store has nothing of it.
  const inStore = await fetch(`${nodes[2].url}/api/docs/${encodeURIComponent(name)}`, {
    headers: { authorization: `Bearer ${KEY}` },
  });
  assert.equal(inStore.status, 404);
  const late = editor(nodes[1], name, "bob");
  await until(() => text(late) === t.toString(), "the late joiner on node 2 has it all", 5000);
  late.doc.getText("content").insert(0, "> ");
  await until(() => text(a).startsWith("> "), "node 1 has node 2's edit");
  // The drain writes what each node holds: node 1 its twenty edits (one row), node 2
  // its one edit (one row, small: not node 1's too), node 3 nothing.
  await nodes[0].stop("SIGTERM");
  await nodes[1].stop("SIGTERM");
  const lengths = execFileSync("psql", [db.url, "-tA", "-c", `SELECT length(data) FROM document_updates WHERE name = '${name}' ORDER BY 1`])
    .toString()
    .trim()
    .split("\n")
    .map(Number);
  assert.equal(lengths.length, 2, `rows ${lengths}`);
  assert.ok(lengths[0] < 40 && lengths[1] > 100, `row sizes ${lengths}`);
  // And the store has the whole document.
  const res = await fetch(`${nodes[2].url}/api/docs/${encodeURIComponent(name)}/text`, {
    headers: { authorization: `Bearer ${KEY}` },
  });
  assert.equal(await res.text(), text(late));
});
