// The demo page at `/` in headless Chromium: two pages exchange a message through
// Herald, with the official socket.io client served from the local npm package (this
// machine has no internet), and a backend message published with the HTTP API; the
// Messages tab; the Document tab, a shared text editor with live carets, on a bundle of
// yjs and y-socket.io built here with esbuild (demo-docs-entry.mjs).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import { startHerald, jwt, now, until } from "./harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const clientJs = path.join(here, "node_modules", "socket.io-client", "dist", "socket.io.min.js");
const msgpackClientJs = path.join(here, "node_modules", "socket.io-client", "dist", "socket.io.msgpack.min.js");
// The Document tab's bundle, as `npm run demo-docs` builds it (git-ignored).
const docsJs = path.join(here, "build", "demo-docs.js");
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

let srv;
let browser;

before(async () => {
  assert.ok(existsSync(browserPath), `Chromium is required at ${browserPath} (scripts/test-interop.sh installs it)`);
  await build({
    entryPoints: [path.join(here, "demo-docs-entry.mjs")],
    bundle: true,
    format: "esm",
    minify: true,
    outfile: docsJs,
    logLevel: "warning",
  });
  srv = await startHerald({ HERALD_DEMO__CLIENT_JS: clientJs, HERALD_DEMO__DOCS_JS: docsJs, HERALD_API__KEY: "demo-key" });
  browser = await chromium.launch({
    executablePath: browserPath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  await srv?.stop();
});

async function open(name) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${srv.url}/?room=demo-test&name=${name}`);
  // Joined once the text box is enabled (the subscribe was acknowledged).
  await page.waitForSelector("#text:not([disabled])", { timeout: 10_000 });
  assert.match(await page.textContent("#status"), /connected over/);
  return { page, errors };
}

// Two pages in the same room: what one sends, both see; so does a backend publish.
test("two browsers exchange a message through Herald", async () => {
  const a = await open("alice");
  const b = await open("bob");
  await a.page.fill("#text", "hello from alice");
  await a.page.click("#send");
  const seen = async (page, text) =>
    page.waitForFunction(
      (t) => [...document.querySelectorAll("#messages li")].some((li) => li.textContent.includes(t)),
      text,
      { timeout: 10_000 },
    );
  await seen(b.page, "alicehello from alice");
  await seen(a.page, "alicehello from alice");

  const res = await fetch(`${srv.url}/api/emit`, {
    method: "POST",
    headers: { authorization: "Bearer demo-key", "content-type": "application/json" },
    body: JSON.stringify({ rooms: ["demo-test"], event: "message", data: { name: "backend", text: "from curl" } }),
  });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).delivered, 2);
  await seen(a.page, "backendfrom curl");
  await seen(b.page, "backendfrom curl");
  assert.deepEqual([...a.errors, ...b.errors], []);
  await a.page.close();
  await b.page.close();
});

// The page and the client copy are served with the right types.
test("page and client are served", async () => {
  const page = await fetch(`${srv.url}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type"), /text\/html/);
  const html = await page.text();
  assert.match(html, /const PATH = "\/socket.io\/"/);
  assert.doesNotMatch(html, /__HERALD_/);
  const js = await fetch(`${srv.url}/demo/socket.io.min.js`);
  assert.equal(js.status, 200);
  assert.match(js.headers.get("content-type"), /javascript/);
  const docs = await fetch(`${srv.url}/demo/docs.js`);
  assert.equal(docs.status, 200);
  assert.match(docs.headers.get("content-type"), /^text\/javascript/);
  assert.match(await docs.text(), /SocketIOProvider/);
});

/** A browser context of its own on the Messages tab of `server` as `user`, connected. */
async function openImPage(server, secret, user, contexts) {
  const context = await browser.newContext();
  contexts.push(context);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const token = jwt({ sub: user, exp: now(600) }, { secret });
  await page.goto(`${server.url}/?tab=im&token=${token}`);
  await page.waitForFunction(() => document.querySelector("#im-status").textContent.startsWith("connected as"), null, {
    timeout: 10_000,
  });
  return { page, errors, context };
}

// The Messages tab: two browser contexts, alice and bob, with tokens. Alice starts a
// chat with bob and writes; bob's list shows it unread; bob opens it (read) and answers;
// alice sees her message read and bob's answer; a reload brings the history back.
test("the Messages tab is a working IM client: conversations, unread counts, history, send, receipts", async () => {
  const secret = "demo-im-secret-demo-im-secret-1234";
  const s = await startHerald({ HERALD_DEMO__CLIENT_JS: clientJs, HERALD_AUTH__JWT_SECRET: secret });
  const contexts = [];
  try {
    const openIm = (user) => openImPage(s, secret, user, contexts);
    const text = (page, selector) => page.$$eval(selector, (els) => els.map((e) => e.textContent));
    const until = (page, fn, arg) => page.waitForFunction(fn, arg, { timeout: 10_000 });
    const alice = await openIm("alice");
    const bob = await openIm("bob");

    await alice.page.fill("#im-with", "bob");
    await alice.page.click("#im-start");
    await until(alice.page, () => !document.querySelector("#im-text").disabled);
    await alice.page.fill("#im-text", "hi bob");
    await alice.page.click("#im-send");
    await until(alice.page, () => document.querySelector("#im-messages li.mine .mark")?.textContent === "✓" || document.querySelector("#im-messages li.mine .mark")?.textContent === "✓✓");

    // Bob's list: the conversation with alice, one unread.
    await until(bob.page, () => document.querySelector("#im-convs li .unread")?.textContent === "1");
    assert.deepEqual(await text(bob.page, "#im-convs li .title"), ["alice"]);
    await bob.page.click("#im-convs li");
    await until(bob.page, () => [...document.querySelectorAll("#im-messages li .text")].some((e) => e.textContent === "hi bob"));
    await until(bob.page, () => document.querySelector("#im-convs li .unread")?.textContent === "");
    // Alice's message is read (bob's receipt).
    await until(alice.page, () => document.querySelector("#im-messages li.mine .mark")?.textContent === "read");

    await bob.page.fill("#im-text", "hello alice");
    await bob.page.click("#im-send");
    await until(alice.page, () => [...document.querySelectorAll("#im-messages li .text")].some((e) => e.textContent === "hello alice"));

    // A reload: the conversation and its history come back from the store.
    await bob.page.reload();
    await until(bob.page, () => document.querySelector("#im-status").textContent.startsWith("connected as"));
    await until(bob.page, () => document.querySelectorAll("#im-convs li").length === 1);
    await bob.page.click("#im-convs li");
    await until(bob.page, () => document.querySelectorAll("#im-messages li").length === 2);
    assert.deepEqual(await text(bob.page, "#im-messages li .text"), ["hi bob", "hello alice"]);
    assert.deepEqual([...alice.errors, ...bob.errors], []);
  } finally {
    for (const c of contexts) await c.close();
    await s.stop();
  }
});

// The Messages tab's live state, in two (then three) browser contexts: a green dot for a
// peer who is online and a grey one once they left, "bob is typing…" while bob types
// (gone when he sends), and under the `single` device policy the "signed out here"
// notice when the same user signs in from another browser.
test("the Messages tab shows presence dots, typing, and the kicked notice", async () => {
  const secret = "demo-live-secret-demo-live-secret-1234";
  const s = await startHerald({
    HERALD_DEMO__CLIENT_JS: clientJs,
    HERALD_AUTH__JWT_SECRET: secret,
    HERALD_IM__DEVICE_POLICY: "single",
    HERALD_IM__PRESENCE_GRACE_MS: "300",
  });
  const contexts = [];
  try {
    const openIm = (user) => openImPage(s, secret, user, contexts);
    const until = (page, fn, arg) => page.waitForFunction(fn, arg, { timeout: 10_000 });
    const alice = await openIm("alice");
    const bob = await openIm("bob");

    await alice.page.fill("#im-with", "bob");
    await alice.page.click("#im-start");
    // Bob is connected: his dot is green in alice's list.
    await until(alice.page, () => document.querySelector("#im-convs li .dot")?.className === "dot online");

    // Bob opens the chat and types: alice sees it, then it ends with his message.
    await until(bob.page, () => document.querySelectorAll("#im-convs li").length === 1);
    await bob.page.click("#im-convs li");
    await until(bob.page, () => !document.querySelector("#im-text").disabled);
    await bob.page.type("#im-text", "hel", { delay: 30 });
    await until(alice.page, () => document.querySelector("#im-typing").textContent === "bob is typing…");
    await bob.page.type("#im-text", "lo");
    await bob.page.click("#im-send");
    await until(alice.page, () => [...document.querySelectorAll("#im-messages li .text")].some((e) => e.textContent === "hello"));
    await until(alice.page, () => document.querySelector("#im-typing").textContent === "");

    // Bob closes his browser: his dot goes grey.
    const bobErrors = bob.errors;
    await bob.context.close();
    contexts.splice(contexts.indexOf(bob.context), 1);
    await until(alice.page, () => document.querySelector("#im-convs li .dot")?.className === "dot");

    // Alice signs in from another browser: the first one is told, and disconnected.
    const alice2 = await openIm("alice");
    await until(alice.page, () => !document.querySelector("#im-kicked").hidden);
    const notice = await alice.page.textContent("#im-kicked");
    assert.match(notice, /another device \(web, demo-/);
    await until(alice.page, () => document.querySelector("#im-status").textContent === "disconnected (io server disconnect)");
    // The new one is served.
    assert.equal(await alice2.page.textContent("#im-status"), "connected as alice");
    assert.deepEqual([...alice.errors, ...bobErrors, ...alice2.errors], []);
  } finally {
    for (const c of contexts) await c.close();
    await s.stop();
  }
});

// === The Document tab ===

const DOCS_SECRET = "demo-docs-secret-demo-docs-secret-1234";

/**
 * A browser context of its own on the Document tab of `server`, on document `doc`, as
 * `user` with `color` (and `token` when given); waits until it synced unless `ready` is
 * false.
 */
async function openDocPage(server, { doc, user, color, token, contexts, ready = true }) {
  const context = await browser.newContext();
  contexts.push(context);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const q = new URLSearchParams({ tab: "docs", doc, name: user, color, ...(token ? { token } : {}) });
  await page.goto(`${server.url}/?${q}`);
  if (ready) {
    await page.waitForSelector("#doc-text:not([disabled])", { timeout: 10_000 });
    assert.equal(await page.textContent("#doc-status"), `editing ${doc}`);
  }
  return { page, errors, context };
}

/** The carets of the others drawn in `page`: name, label, index, position, visible. */
const carets = (page) =>
  page.$$eval(".doc-caret", (els) =>
    els.map((e) => {
      const r = e.getBoundingClientRect();
      return { name: e.dataset.name, label: e.textContent, index: Number(e.dataset.index), left: r.left, top: r.top, visible: r.width > 0 && r.height > 0 };
    }),
  );
const caretOf = async (page, name) => (await carets(page)).find((c) => c.name === name);
const users = (page) => page.$$eval("#doc-users li", (els) => els.map((e) => e.textContent));
const value = (page) => page.inputValue("#doc-text");
const waitFor = (page, fn, arg) => page.waitForFunction(fn, arg, { timeout: 10_000 });
const valueIs = (page, text) => waitFor(page, (t) => document.querySelector("#doc-text").value === t, text);
const caretAt = (page, name, index) =>
  waitFor(page, ([n, i]) => [...document.querySelectorAll(".doc-caret")].some((e) => e.dataset.name === n && e.dataset.index === String(i)), [name, index]);

// Two browsers on one document: what one types the other sees (and the HTTP API reads),
// each sees the other's caret under its name where it is, a local caret stays on its
// characters when the other edits before it, concurrent typing converges, and the caret
// of a browser that closes goes from the other at once.
test("the Document tab: a shared text with live carets", async () => {
  const s = await startHerald({
    HERALD_DEMO__CLIENT_JS: clientJs,
    HERALD_DEMO__DOCS_JS: docsJs,
    HERALD_AUTH__JWT_SECRET: DOCS_SECRET,
    HERALD_API__KEY: "docs-key",
  });
  const contexts = [];
  const doc = `demo-${process.pid}`;
  const apiText = async () => {
    const res = await fetch(`${s.url}/api/docs/${encodeURIComponent(doc)}/text`, { headers: { authorization: "Bearer docs-key" } });
    assert.equal(res.status, 200);
    return res.text();
  };
  try {
    const token = (sub, docs) => jwt({ sub, docs, exp: now(600) }, { secret: DOCS_SECRET });
    const open = (user, color, docs = ["demo-*"]) => openDocPage(s, { doc, user, color, token: token(user, docs), contexts });
    const alice = await open("alice", "#d62828");
    const bob = await open("bob", "#2f5bd3");
    // Each lists both: itself first.
    await waitFor(alice.page, () => document.querySelectorAll("#doc-users li").length === 2);
    await waitFor(bob.page, () => document.querySelectorAll("#doc-users li").length === 2);
    assert.deepEqual(await users(alice.page), ["alice (you)", "bob"]);
    assert.deepEqual(await users(bob.page), ["bob (you)", "alice"]);

    // Alice types (key by key): bob's text follows, and so does the document on the server.
    await alice.page.click("#doc-text");
    await alice.page.keyboard.type("hello from alice", { delay: 10 });
    await valueIs(bob.page, "hello from alice");
    await until(async () => (await apiText()) === "hello from alice", "the API reads alice's text", 5000);

    // Her caret in bob's page: named, visible, where she is; it moves as she moves.
    await caretAt(bob.page, "alice", 16);
    const atEnd = await caretOf(bob.page, "alice");
    assert.equal(atEnd.label, "alice");
    assert.ok(atEnd.visible, JSON.stringify(atEnd));
    await alice.page.keyboard.press("Control+Home");
    await caretAt(bob.page, "alice", 0);
    const atStart = await caretOf(bob.page, "alice");
    assert.equal(atStart.top, atEnd.top, "one line");
    assert.ok(atEnd.left - atStart.left > 16 * 5, `16 characters apart: ${atStart.left} → ${atEnd.left}`);

    // Bob puts his caret after "hello"; alice inserts before it: bob's caret stays after
    // "hello" (in his textarea, and in alice's page without a word from bob).
    await bob.page.click("#doc-text");
    await bob.page.evaluate(() => document.querySelector("#doc-text").setSelectionRange(5, 5));
    await caretAt(alice.page, "bob", 5);
    await alice.page.keyboard.type(">> ");
    await valueIs(bob.page, ">> hello from alice");
    assert.deepEqual(await bob.page.$eval("#doc-text", (t) => [t.selectionStart, t.selectionEnd]), [8, 8]);
    await caretAt(alice.page, "bob", 8);
    // A selection is drawn as one.
    await bob.page.evaluate(() => document.querySelector("#doc-text").setSelectionRange(9, 13, "backward"));
    await caretAt(alice.page, "bob", 9);
    await waitFor(alice.page, () => document.querySelectorAll(".doc-sel").length === 1);

    // Both type at once, bob at the start and alice at the end: each keeps typing where
    // their caret is while the other's keys arrive.
    await bob.page.keyboard.press("Control+Home");
    await alice.page.keyboard.press("Control+End");
    await Promise.all([alice.page.keyboard.type("AAAAAA", { delay: 25 }), bob.page.keyboard.type("BBBBBB", { delay: 25 })]);
    const both = "BBBBBB>> hello from aliceAAAAAA";
    await valueIs(alice.page, both);
    await valueIs(bob.page, both);
    // Both at the same place at once: any order, but one text, with every key.
    await bob.page.keyboard.press("Control+End");
    await Promise.all([alice.page.keyboard.type("xyz", { delay: 20 }), bob.page.keyboard.type("123", { delay: 20 })]);
    await waitFor(alice.page, (n) => document.querySelector("#doc-text").value.length === n, both.length + 6);
    await waitFor(bob.page, (n) => document.querySelector("#doc-text").value.length === n, both.length + 6);
    await until(async () => (await value(alice.page)) === (await value(bob.page)), "both show one text", 5000);
    const final = await value(alice.page);
    assert.ok(final.startsWith(both), final);
    assert.deepEqual([...final.slice(both.length)].sort(), [..."123xyz"].sort());
    assert.match(final, /x.*y.*z/);
    assert.match(final, /1.*2.*3/);
    await until(async () => (await apiText()) === final, "the API reads the merged text", 5000);

    // Each sees the other's caret, named.
    for (const [page, other] of [[alice.page, "bob"], [bob.page, "alice"]]) {
      const c = await caretOf(page, other);
      assert.ok(c && c.visible && c.label === other, JSON.stringify(await carets(page)));
      assert.equal(await page.locator(`.doc-caret[data-name="${other}"]`).isVisible(), true);
    }

    // Bob closes his browser: his caret and his name leave alice's page within a couple
    // of seconds (Herald removes a socket's awareness when it goes).
    const bobErrors = bob.errors;
    const closed = Date.now();
    await bob.context.close();
    contexts.splice(contexts.indexOf(bob.context), 1);
    await alice.page.waitForFunction(
      () => !document.querySelector('.doc-caret[data-name="bob"]') && document.querySelectorAll("#doc-users li").length === 1,
      null,
      { timeout: 3000 },
    );
    assert.ok(Date.now() - closed < 2500, `gone after ${Date.now() - closed} ms`);
    assert.deepEqual(await carets(alice.page), []);
    assert.deepEqual(await users(alice.page), ["alice (you)"]);

    // A token without this document is refused, and the page says so.
    const carol = await openDocPage(s, { doc, user: "carol", color: "#2a9d4b", token: token("carol", ["other-*"]), contexts, ready: false });
    await waitFor(carol.page, () => document.querySelector("#doc-status").textContent === "refused: doc_forbidden");
    assert.equal(await carol.page.$eval("#doc-text", (t) => t.disabled), true);
    assert.deepEqual(await users(alice.page), ["alice (you)"]);
    assert.deepEqual([...alice.errors, ...bobErrors, ...carol.errors], []);
  } finally {
    for (const c of contexts) await c.close();
    await s.stop();
  }
});

// The Document tab on a Herald that speaks msgpack, without auth (anonymous editors): the
// provider gets the msgpack parser from the bundle; a reload brings the text back.
test("the Document tab with the msgpack parser", async () => {
  const s = await startHerald({
    HERALD_DEMO__CLIENT_JS: msgpackClientJs,
    HERALD_DEMO__DOCS_JS: docsJs,
    HERALD_SOCKETIO__PARSER: "msgpack",
    HERALD_API__KEY: "docs-key",
  });
  const contexts = [];
  try {
    const doc = "notes/msgpack";
    const a = await openDocPage(s, { doc, user: "ann", color: "#b5179e", contexts });
    const b = await openDocPage(s, { doc, user: "ben", color: "#00838f", contexts });
    await a.page.click("#doc-text");
    await a.page.keyboard.type("packed");
    await valueIs(b.page, "packed");
    await caretAt(b.page, "ann", 6);
    const res = await fetch(`${s.url}/api/docs/${encodeURIComponent(doc)}/text`, { headers: { authorization: "Bearer docs-key" } });
    assert.equal(await res.text(), "packed");
    await b.page.reload();
    await b.page.waitForSelector("#doc-text:not([disabled])", { timeout: 10_000 });
    await valueIs(b.page, "packed");
    assert.deepEqual([...a.errors, ...b.errors], []);
  } finally {
    for (const c of contexts) await c.close();
    await s.stop();
  }
});

// Without demo.docs_js, /demo/docs.js is a 404 that says why, and the page falls back to
// the pinned packages on esm.sh (blocked here: the page says it cannot load them).
test("the Document tab without a local bundle falls back to esm.sh", async () => {
  const s = await startHerald({ HERALD_DEMO__CLIENT_JS: clientJs });
  const contexts = [];
  try {
    const res = await fetch(`${s.url}/demo/docs.js`);
    assert.equal(res.status, 404);
    assert.match(await res.text(), /demo\.docs_js/);
    const context = await browser.newContext();
    contexts.push(context);
    const asked = [];
    await context.route("https://esm.sh/**", (route) => {
      asked.push(route.request().url());
      return route.abort();
    });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`${s.url}/?tab=docs`);
    await waitFor(page, () => /^cannot load yjs and y-socket\.io \(offline\? set demo\.docs_js\)/.test(document.querySelector("#doc-status").textContent));
    assert.deepEqual(asked.sort(), [
      "https://esm.sh/y-socket.io@1.1.3?deps=yjs@13.6.33,socket.io-client@4.8.4",
      "https://esm.sh/yjs@13.6.33",
    ]);
    assert.deepEqual(errors, []);
  } finally {
    for (const c of contexts) await c.close();
    await s.stop();
  }
});
