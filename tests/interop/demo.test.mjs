// The demo page at `/` in headless Chromium: two pages exchange a message through
// Herald, with the official socket.io client served from the local npm package (this
// machine has no internet), and a backend message published with the HTTP API.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startHerald, jwt, now } from "./harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const clientJs = path.join(here, "node_modules", "socket.io-client", "dist", "socket.io.min.js");
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

let srv;
let browser;

before(async () => {
  assert.ok(existsSync(browserPath), `Chromium is required at ${browserPath} (scripts/test-interop.sh installs it)`);
  srv = await startHerald({ HERALD_DEMO__CLIENT_JS: clientJs, HERALD_API__KEY: "demo-key" });
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
