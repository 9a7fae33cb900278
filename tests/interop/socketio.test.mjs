// Interop of the Socket.IO layer (the `conformance` binary on /socket.io/) with the npm
// socket.io-client 4.x, default and msgpack parsers.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";
import { startServer, once, sleep } from "./harness.mjs";

let server;
let msgpackServer;
const clients = [];

before(async () => {
  server = await startServer("conformance");
  msgpackServer = await startServer("conformance", ["--port", "0", "--parser", "msgpack"]);
});

after(async () => {
  for (const c of clients) c.close();
  await server.stop();
  await msgpackServer.stop();
});

function client(nsp = "/", opts = {}, target = server) {
  const socket = io(`http://127.0.0.1:${target.port}${nsp}`, { forceNew: true, reconnection: false, ...opts });
  clients.push(socket);
  return socket;
}

// Connects, receives the auth echo, and gets an event echoed with mixed arguments.
async function roundTrip(socket) {
  const auth = await once(socket, "auth");
  assert.ok(socket.connected);
  assert.equal(socket.id.length, 20);
  const back = once(socket, "message-back");
  socket.emit("message", 1, "2", { 3: [true] });
  assert.deepEqual(await back, [1, "2", { 3: [true] }]);
  return auth;
}

// WebSocket only: connect with an auth payload (echoed) and exchange an event.
test("websocket only", async () => {
  const socket = client("/", { transports: ["websocket"], auth: { token: "123" } });
  assert.deepEqual(await roundTrip(socket), { token: "123" });
  assert.equal(socket.io.engine.transport.name, "websocket");
  socket.close();
});

// Polling only.
test("polling only", async () => {
  const socket = client("/", { transports: ["polling"] });
  assert.deepEqual(await roundTrip(socket), {});
  assert.equal(socket.io.engine.transport.name, "polling");
  socket.close();
});

// Polling then upgrade: events keep flowing across the switch.
test("polling then upgrade", async () => {
  const socket = client("/");
  await once(socket, "auth");
  // The upgrade may finish before or after the auth event: wait for its result.
  for (let i = 0; i < 500 && socket.io.engine.transport.name !== "websocket"; i++) await sleep(10);
  assert.equal(socket.io.engine.transport.name, "websocket");
  const back = once(socket, "message-back");
  socket.emit("message", "after upgrade");
  assert.equal(await back, "after upgrade");
  socket.close();
});

// Binary attachments both ways, over WebSocket and over polling.
for (const transports of [["websocket"], ["polling"]]) {
  test(`binary both ways over ${transports[0]}`, async () => {
    const socket = client("/", { transports });
    await once(socket, "auth");
    const back = once(socket, "message-back");
    socket.emit("message", Buffer.from([1, 2, 3]), { nested: Buffer.from([4, 5]) }, "text");
    const [a, b, c] = await back;
    assert.deepEqual([...a], [1, 2, 3]);
    assert.deepEqual([...b.nested], [4, 5]);
    assert.equal(c, "text");
    const ack = await socket.timeout(2000).emitWithAck("message-with-ack", Buffer.from([9, 8]));
    assert.deepEqual([...ack], [9, 8]);
    socket.close();
  });
}

// Acks: answered acks resolve; an event the server never acknowledges times out.
test("acks with timeout", async () => {
  const socket = client("/", { transports: ["websocket"] });
  await once(socket, "auth");
  assert.deepEqual(await socket.timeout(2000).emitWithAck("message-with-ack", "x", 2), "x");
  await assert.rejects(socket.timeout(200).emitWithAck("message", "no ack here"), /timed out/);
  socket.close();
});

// Several namespaces multiplexed on one Engine.IO connection.
test("namespaces multiplexed", async () => {
  const main = io(`http://127.0.0.1:${server.port}/`, { forceNew: true, reconnection: false, transports: ["websocket"] });
  clients.push(main);
  const custom = main.io.socket("/custom", { auth: { token: "abc" } });
  clients.push(custom);
  custom.connect();
  const [mainAuth, customAuth] = await Promise.all([once(main, "auth"), once(custom, "auth")]);
  assert.deepEqual(mainAuth, {});
  assert.deepEqual(customAuth, { token: "abc" });
  assert.equal(main.io.engine, custom.io.engine);
  custom.disconnect();
  const back = once(main, "message-back");
  main.emit("message", "main still here");
  assert.equal(await back, "main still here");
  main.close();
});

// A namespace that does not exist is refused with "Invalid namespace".
test("refused namespace", async () => {
  const socket = client("/random", { transports: ["websocket"] });
  const err = await once(socket, "connect_error");
  assert.equal(err.message, "Invalid namespace");
  socket.close();
});

// Reconnection: the transport is cut and the client reconnects on its own.
test("reconnection", async () => {
  const socket = client("/", { transports: ["websocket"], reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 100 });
  await once(socket, "auth");
  const firstId = socket.id;
  const reason = once(socket, "disconnect");
  socket.io.engine.close();
  // Closing the engine from the client side is a "forced close" of the transport.
  assert.equal((await reason)[0], "forced close");
  await once(socket, "auth", 5000);
  assert.ok(socket.connected);
  assert.notEqual(socket.id, firstId);
  const back = once(socket, "message-back");
  socket.emit("message", "again");
  assert.equal(await back, "again");
  socket.close();
});

// A burst emitted before the connection is even open (buffered by the client, flushed
// right after CONNECT) arrives complete and in order.
for (const transports of [["websocket"], ["polling"]]) {
  test(`burst right after connect over ${transports[0]}`, async () => {
    const socket = client("/", { transports });
    const n = 2000;
    const got = [];
    const done = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`got ${got.length} of ${n}`)), 15_000);
      socket.on("message-back", (i) => {
        got.push(i);
        if (got.length === n) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    for (let i = 0; i < n; i++) socket.emit("message", i);
    await done;
    assert.deepEqual(got, Array.from({ length: n }, (_, i) => i));
    socket.close();
  });
}

// The msgpack parser: connect, events with binary, acks, a refused namespace.
test("msgpack parser", async () => {
  for (const transports of [["websocket"], ["polling"]]) {
    const socket = client("/", { transports, parser: msgpackParser, auth: { token: "mp" } }, msgpackServer);
    assert.deepEqual(await once(socket, "auth"), { token: "mp" });
    const back = once(socket, "message-back");
    socket.emit("message", 1, "2", Buffer.from([7, 7]));
    const [a, b, c] = await back;
    assert.equal(a, 1);
    assert.equal(b, "2");
    assert.deepEqual([...c], [7, 7]);
    assert.equal(await socket.timeout(2000).emitWithAck("message-with-ack", "acked"), "acked");
    socket.close();
    const refused = client("/random", { transports, parser: msgpackParser }, msgpackServer);
    assert.equal((await once(refused, "connect_error")).message, "Invalid namespace");
    refused.close();
  }
});
