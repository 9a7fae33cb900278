// Graceful drain of the `herald` binary with a few hundred real clients over both
// transports: readiness goes at once, nobody connects during the drain, every client
// gets `server_shutdown` before its disconnect, disconnects are spread over the window,
// and the process exits 0 by itself. Also started by `POST /api/shutdown`.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { io } from "socket.io-client";
import { startHerald, once, sleep } from "./harness.mjs";

const clients = [];
after(() => {
  for (const c of clients) c.close();
});

const exited = (srv) =>
  new Promise((resolve) => {
    if (srv.child.exitCode !== null) return resolve(srv.child.exitCode);
    srv.child.once("exit", (code) => resolve(code));
  });

function rawHandshake(port) {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/socket.io/?EIO=4&transport=polling", agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode, retryAfter: res.headers["retry-after"] }));
    });
    req.on("error", () => resolve({ status: 0 }));
  });
}

/** Connects `n` clients (half WebSocket, half polling); each records what happens. */
async function crowd(srv, n) {
  const records = [];
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const transports = i % 2 ? ["polling"] : ["websocket"];
      const socket = io(srv.url, {
        forceNew: true,
        transports,
        reconnectionDelay: 100,
        reconnectionDelayMax: 300,
        randomizationFactor: 0,
      });
      clients.push(socket);
      const rec = { transports, events: [], connects: 0 };
      records.push(rec);
      socket.on("connect", () => {
        rec.connects++;
        rec.events.push(["connect", Date.now()]);
      });
      socket.on("server_shutdown", (notice) => rec.events.push(["server_shutdown", Date.now(), notice]));
      socket.on("disconnect", (reason) => rec.events.push(["disconnect", Date.now(), reason]));
      await once(socket, "connect", 10_000);
    }),
  );
  return records;
}

// SIGTERM: the whole sequence, checked client by client. 400 clients from localhost
// connect at once with the default limits (loopback is exempt from the per-address
// ones), and the drain's phases are logged in order.
test("drain on SIGTERM with 400 clients over both transports, default limits", async () => {
  const srv = await startHerald({
    HERALD_DRAIN__WINDOW_MS: "2000",
    HERALD_DRAIN__RETRY_AFTER_MS: "1500",
    HERALD_DRAIN__GRACE_MS: "3000",
  });
  const connecting = Date.now();
  const records = await crowd(srv, 400);
  assert.ok(Date.now() - connecting < 10_000);
  assert.equal((await fetch(`${srv.url}/readyz`)).status, 200);
  const exit = exited(srv);
  const started = Date.now();
  srv.child.kill("SIGTERM");
  await sleep(50);
  assert.equal((await fetch(`${srv.url}/readyz`)).status, 503, "readiness goes at once");
  const refused = await rawHandshake(srv.port);
  assert.equal(refused.status, 503, "new connections are refused");
  assert.ok(Number(refused.retryAfter) >= 1);
  assert.equal(await exit, 0, "exits 0 by itself");
  const took = Date.now() - started;
  assert.ok(took < 2000 + 3000 + 2000, `took ${took} ms`);
  await sleep(300);

  const disconnects = [];
  for (const rec of records) {
    const names = rec.events.map((e) => e[0]);
    const notice = names.indexOf("server_shutdown");
    const gone = names.indexOf("disconnect");
    assert.ok(notice > 0, `${rec.transports}: no server_shutdown: ${names}`);
    assert.ok(gone > notice, `${rec.transports}: disconnect before server_shutdown: ${names}`);
    assert.deepEqual(rec.events[notice][2], { reconnect: true, retryAfterMs: 1500 });
    assert.equal(rec.events[gone][2], "transport close");
    assert.equal(rec.connects, 1, "nobody connects during the drain");
    disconnects.push(rec.events[gone][1]);
  }
  const spread = Math.max(...disconnects) - Math.min(...disconnects);
  assert.ok(spread >= 1000, `disconnects spread over ${spread} ms only`);
  const phases = ["1/6 refuse", "2/6 notify", "3/6 disconnect", "4/6 connections", "5/6 flush", "6/6 leave"]
    .map((p) => srv.logs.findIndex((l) => l.includes(`drain ${p}`)));
  assert.ok(phases.every((at, i) => at >= 0 && (i === 0 || at > phases[i - 1])), `phases logged out of order: ${phases}\n${srv.logs.join("\n")}`);
  assert.ok(srv.logs.some((l) => l.includes("told=400") || l.includes('"told":400')), "all 400 told");
  assert.ok(srv.logs.some((l) => l.includes("every connection closed")), srv.logs.join("\n"));
  for (const c of clients.splice(0)) c.close();
});

// POST /api/shutdown starts the same drain; the process exits 0.
test("drain on POST /api/shutdown", async () => {
  const srv = await startHerald({
    HERALD_API__KEY: "k",
    HERALD_DRAIN__WINDOW_MS: "300",
    HERALD_DRAIN__GRACE_MS: "1000",
  });
  const records = await crowd(srv, 10);
  const exit = exited(srv);
  const res = await fetch(`${srv.url}/api/shutdown`, { method: "POST", headers: { authorization: "Bearer k" } });
  assert.equal(res.status, 202);
  assert.equal((await res.json()).draining, true);
  assert.equal(await exit, 0);
  await sleep(200);
  for (const rec of records) assert.ok(rec.events.some((e) => e[0] === "server_shutdown"));
  for (const c of clients.splice(0)) c.close();
});

// A second signal during the drain stops at once.
test("a second signal stops at once", async () => {
  const srv = await startHerald({ HERALD_DRAIN__WINDOW_MS: "20000" });
  await crowd(srv, 4);
  const exit = exited(srv);
  srv.child.kill("SIGTERM");
  await sleep(200);
  const started = Date.now();
  srv.child.kill("SIGINT");
  assert.equal(await exit, 1);
  assert.ok(Date.now() - started < 2000);
  for (const c of clients.splice(0)) c.close();
});
