// Storm control on the IM service with the stock socket.io client: a user over
// `im.send_rate` / `im.send_burst` is refused `rate_limited` with `retryAfterMs` and
// nothing of it is stored; a conversation over its fan-out budget is held to it (its
// members refused, the API answered 429) while another conversation's sends go
// through; both counted in /metrics.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startHerald, once, sleep, jwt, now, imClient } from "./harness.mjs";

const SECRET = "im-storm-secret-im-storm-secret-0123";
const KEY = "im-storm-api-key";
const RATE = 5;
const BURST = 10;
// A group of 3 costs 3 per message: 20 messages at once, then 20 a second.
const FANOUT = 60;
const tok = (sub) => jwt({ sub, exp: now(600) }, { secret: SECRET });

let server;
const sockets = [];

async function im(user) {
  const socket = imClient(server.url, { token: tok(user), device: `${user}-dev` }, sockets);
  await once(socket, "connect");
  await sleep(50);
  return socket;
}

const ask = (socket, event, ...args) => socket.timeout(5000).emitWithAck(event, ...args);

async function metric(name, labels = "") {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}${labels} `));
  return Number(line?.split(" ")[1]);
}

before(async () => {
  server = await startHerald({
    HERALD_AUTH__JWT_SECRET: SECRET,
    HERALD_API__KEY: KEY,
    HERALD_IM__SEND_RATE: String(RATE),
    HERALD_IM__SEND_BURST: String(BURST),
    HERALD_IM__CONVERSATION_FANOUT_RATE: String(FANOUT),
  });
});

after(async () => {
  for (const s of sockets) s.close();
  await server.stop();
});

describe("im storm control", () => {
  test("a user over the send rate is refused rate_limited with retryAfterMs, and nothing is stored", async () => {
    const a = await im("s1-a");
    await im("s1-b");
    const id = (await ask(a, "conversation.create", { type: "direct", with: "s1-b" })).conversation.id;
    const answers = await Promise.all(
      Array.from({ length: 3 * BURST }, (_, i) => ask(a, "send", { conversation: id, cid: `s1-${i}`, body: { n: i } })),
    );
    const ok = answers.filter((r) => r.ok);
    const refused = answers.filter((r) => !r.ok);
    assert.ok(ok.length >= BURST && ok.length <= BURST + 1, `${ok.length} accepted`);
    for (const r of refused) {
      assert.equal(r.error.code, "rate_limited", JSON.stringify(r));
      assert.ok(r.error.retryAfterMs > 0 && r.error.retryAfterMs <= 1000 / RATE + 1, JSON.stringify(r));
    }
    const history = await ask(a, "history", { conversation: id, limit: 200 });
    assert.equal(history.messages.length, ok.length, "only the accepted ones are stored");
    // After the wait it says, a send goes through.
    await sleep(Math.max(...refused.map((r) => r.error.retryAfterMs)));
    const later = await ask(a, "send", { conversation: id, cid: "s1-later", body: "x" });
    assert.equal(later.ok, true, JSON.stringify(later));
    assert.ok((await metric("herald_im_rate_limited_total", '{scope="user"}')) >= refused.length);
    // A refusal is an answer, not a disconnect.
    assert.equal(a.connected, true);
  });

  test("a flooding group is held to its budget; another conversation's sends go through", async () => {
    const members = ["s2-a", "s2-b", "s2-c"];
    const socks = [];
    for (const u of members) socks.push(await im(u));
    const id = (await ask(socks[0], "conversation.create", { type: "group", members: members.slice(1) })).conversation.id;
    const calm = await im("s2-d");
    await im("s2-e");
    const other = (await ask(calm, "conversation.create", { type: "direct", with: "s2-e" })).conversation.id;
    await sleep(50);
    const flood = socks.flatMap((s, k) =>
      Array.from({ length: BURST }, (_, i) => ask(s, "send", { conversation: id, cid: `s2-${k}-${i}`, body: { i } })),
    );
    const calmSends = Array.from({ length: 5 }, (_, i) => ask(calm, "send", { conversation: other, cid: `s2-calm-${i}`, body: i }));
    const answers = await Promise.all(flood);
    const ok = answers.filter((r) => r.ok).length;
    const budget = FANOUT / members.length;
    assert.ok(ok >= budget && ok <= budget + 1, `${ok} of ${answers.length} accepted; the budget is ${budget}`);
    for (const r of answers.filter((r) => !r.ok)) {
      assert.equal(r.error.code, "rate_limited");
      assert.match(r.error.message, /conversation/);
      assert.ok(r.error.retryAfterMs > 0);
    }
    for (const r of await Promise.all(calmSends)) assert.equal(r.ok, true, JSON.stringify(r));
    const history = await ask(socks[0], "history", { conversation: id, limit: 200 });
    assert.equal(history.messages.length, ok);
    // The backend's posts count against the same budget.
    const res = await fetch(`${server.url}/api/im/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ conversation: id, from: null, cid: "s2-api", body: "system" }),
    });
    assert.equal(res.status, 429);
    assert.equal((await res.json()).error.code, "rate_limited");
    assert.ok((await metric("herald_im_rate_limited_total", '{scope="conversation"}')) >= answers.length - ok);
  });
});
