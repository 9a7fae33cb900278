// The device policy of the IM service with the stock socket.io client: under `single` a
// new device puts out every other (`kicked`, then a server disconnect, within 100 ms),
// the same device id connecting again is not "elsewhere", a hundred concurrent logins
// leave exactly one; under `one_per_platform` only the device of the same platform goes;
// under `multiple` (the default) nobody does.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startHerald, once, sleep, jwt, now, imClient } from "./harness.mjs";

const SECRET = "im-devices-secret-im-devices-secret";
const tok = (sub) => jwt({ sub, exp: now(600) }, { secret: SECRET });

const servers = {};
const sockets = [];

function connect(server, user, device, platform) {
  const auth = { token: tok(user), ...(device ? { device } : {}), ...(platform ? { platform } : {}) };
  return imClient(server.url, auth, sockets);
}

async function im(server, user, device, platform) {
  const socket = connect(server, user, device, platform);
  await once(socket, "connect");
  return socket;
}

/** Records `kicked` and `disconnect` of `socket`, with their times. */
function watch(socket) {
  const seen = { kicked: null, disconnect: null };
  socket.on("kicked", (k) => (seen.kicked = { ...k, at: Date.now() }));
  socket.on("disconnect", (reason) => (seen.disconnect = { reason, at: Date.now() }));
  return seen;
}

async function until(check, ms = 2000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) return false;
    await sleep(5);
  }
  return true;
}

before(async () => {
  for (const policy of ["single", "one_per_platform", "multiple"]) {
    servers[policy] = await startHerald({ HERALD_AUTH__JWT_SECRET: SECRET, HERALD_IM__DEVICE_POLICY: policy });
  }
});

after(async () => {
  for (const s of sockets) s.close();
  for (const s of Object.values(servers)) await s.stop();
});

describe("im devices", () => {
  test("single: a new device puts out the older one, kicked then disconnected within 100 ms", async () => {
    const server = servers.single;
    const phone = await im(server, "d1-a", "phone", "ios");
    const seen = watch(phone);
    const laptop = connect(server, "d1-a", "laptop", "web");
    await once(laptop, "connect");
    const connected = Date.now();
    assert.ok(await until(() => seen.disconnect), "the phone was disconnected");
    assert.deepEqual(
      { reason: seen.kicked?.reason, device: seen.kicked?.device, platform: seen.kicked?.platform },
      { reason: "login_elsewhere", device: "laptop", platform: "web" },
    );
    assert.equal(seen.disconnect.reason, "io server disconnect");
    assert.ok(seen.kicked.at <= seen.disconnect.at, "kicked comes before the disconnect");
    assert.ok(seen.disconnect.at - connected <= 100, `disconnected ${seen.disconnect.at - connected} ms after the new CONNECT`);
    assert.equal(laptop.connected, true);
    // The new device is served.
    const made = await laptop.timeout(5000).emitWithAck("conversation.list", {});
    assert.equal(made.ok, true);
  });

  test("single: the same device id again (a reconnect, a second tab) is not elsewhere", async () => {
    const server = servers.single;
    const tab1 = await im(server, "d2-a", "browser-1", "web");
    const seen = watch(tab1);
    const tab2 = await im(server, "d2-a", "browser-1", "web");
    await sleep(300);
    assert.equal(seen.kicked, null);
    assert.equal(tab1.connected, true);
    assert.equal(tab2.connected, true);
  });

  test("single: a hundred concurrent logins of one user leave exactly one", async () => {
    const server = servers.single;
    const logins = Array.from({ length: 100 }, (_, i) => connect(server, "d3-a", `dev-${i}`, "web"));
    const kicked = new Set();
    logins.forEach((s, i) => s.on("kicked", () => kicked.add(i)));
    await Promise.all(logins.map((s) => once(s, "connect", 10_000).catch(() => null)));
    assert.ok(await until(() => logins.filter((s) => s.connected).length === 1, 5000),
      `${logins.filter((s) => s.connected).length} still connected`);
    await sleep(300);
    const left = logins.filter((s) => s.connected);
    assert.equal(left.length, 1);
    assert.equal(kicked.size, 99, "every other one was told");
    assert.ok(!kicked.has(logins.indexOf(left[0])));
  });

  test("one_per_platform: only the device of the same platform goes", async () => {
    const server = servers.one_per_platform;
    const phone = await im(server, "d4-a", "phone-1", "ios");
    const web = await im(server, "d4-a", "browser", "web");
    const seenPhone = watch(phone);
    const seenWeb = watch(web);
    const phone2 = await im(server, "d4-a", "phone-2", "ios");
    assert.ok(await until(() => seenPhone.disconnect));
    assert.equal(seenPhone.kicked.device, "phone-2");
    assert.equal(seenPhone.kicked.platform, "ios");
    await sleep(200);
    assert.equal(seenWeb.kicked, null);
    assert.equal(web.connected, true);
    assert.equal(phone2.connected, true);
    // A client that gives no platform is `other`, no device id: its socket id serves.
    const a = await im(server, "d4-b");
    const seenA = watch(a);
    const b = await im(server, "d4-b");
    assert.ok(await until(() => seenA.disconnect), "two `other` devices: the older one goes");
    assert.equal(seenA.kicked.platform, "other");
    assert.equal(b.connected, true);
  });

  test("multiple: every device stays", async () => {
    const server = servers.multiple;
    const devices = [];
    for (const [d, p] of [["a", "ios"], ["b", "ios"], ["c", "web"]]) devices.push(await im(server, "d5-a", d, p));
    const seen = devices.map(watch);
    await sleep(300);
    assert.ok(devices.every((s) => s.connected));
    assert.ok(seen.every((s) => s.kicked === null));
  });

  test("the kicks are counted in /metrics", async () => {
    const text = await (await fetch(`${servers.single.url}/metrics`)).text();
    const kicked = Number(/^herald_im_kicked_total (\d+)/m.exec(text)?.[1]);
    assert.ok(kicked >= 100, `herald_im_kicked_total ${kicked}`);
  });
});
