// Interop of the Engine.IO server (the `conformance` echo binary) with the npm
// engine.io-client, over both transports and the upgrade between them.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Socket } from "engine.io-client";
import { startServer, once, collect, sleep } from "./harness.mjs";

let server;
const open = [];

before(async () => {
  server = await startServer("conformance");
});

after(async () => {
  for (const s of open) s.close();
  await server.stop();
});

function connect(opts = {}) {
  const socket = new Socket(`http://127.0.0.1:${server.port}`, { path: "/engine.io/", ...opts });
  open.push(socket);
  return socket;
}

// WebSocket only: the session opens over WebSocket and a text message is echoed.
test("websocket only", async () => {
  const socket = connect({ transports: ["websocket"] });
  await once(socket, "open");
  assert.equal(socket.transport.name, "websocket");
  assert.equal(socket.id.length, 20);
  socket.send("hello");
  assert.equal(await once(socket, "message"), "hello");
  socket.close();
});

// Polling only: the session opens over polling, never upgrades, and echoes.
test("polling only", async () => {
  const socket = connect({ transports: ["polling"], upgrade: false });
  await once(socket, "open");
  assert.equal(socket.transport.name, "polling");
  socket.send("hello over polling");
  assert.equal(await once(socket, "message"), "hello over polling");
  assert.equal(socket.transport.name, "polling");
  socket.close();
});

// Polling then upgrade: messages sent before, during and after the switch all come
// back, once each, in order.
test("polling then upgrade keeps order", async () => {
  const socket = connect();
  await once(socket, "open");
  assert.equal(socket.transport.name, "polling");
  const n = 200;
  const received = collect(socket, n, 15_000);
  const upgraded = once(socket, "upgrade", 10_000);
  for (let i = 0; i < n; i++) {
    socket.send(String(i));
    if (i % 10 === 9) await sleep(5);
  }
  await upgraded;
  assert.equal(socket.transport.name, "websocket");
  const got = await received;
  assert.deepEqual(got, Array.from({ length: n }, (_, i) => String(i)));
  socket.close();
});

// Binary both ways over WebSocket: Uint8Array, Buffer and ArrayBuffer come back
// byte for byte as binary.
test("binary over websocket", async () => {
  const socket = connect({ transports: ["websocket"] });
  socket.binaryType = "arraybuffer";
  await once(socket, "open");
  const inputs = [
    Uint8Array.from([1, 2, 3, 4]),
    Buffer.from([0, 255, 128, 7]),
    Uint8Array.from({ length: 5000 }, (_, i) => i % 256).buffer,
  ];
  for (const input of inputs) {
    socket.send(input);
    const back = await once(socket, "message");
    assert.ok(back instanceof ArrayBuffer, "binary comes back as binary");
    assert.deepEqual(new Uint8Array(back), new Uint8Array(input.buffer ?? input, input.byteOffset ?? 0, input.byteLength));
  }
  socket.close();
});

// Binary both ways over polling (base64 records on the wire).
test("binary over polling", async () => {
  const socket = connect({ transports: ["polling"], upgrade: false });
  socket.binaryType = "arraybuffer";
  await once(socket, "open");
  const input = Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) % 256);
  socket.send(input);
  const back = await once(socket, "message");
  assert.ok(back instanceof ArrayBuffer);
  assert.deepEqual(new Uint8Array(back), input);
  socket.close();
});

// Many messages both ways over WebSocket: 5,000 echoed in order, none lost or doubled.
test("5000 messages over websocket in order", async () => {
  const socket = connect({ transports: ["websocket"] });
  await once(socket, "open");
  const n = 5000;
  const received = collect(socket, n, 20_000);
  for (let i = 0; i < n; i++) socket.send(`m${i}`);
  assert.deepEqual(await received, Array.from({ length: n }, (_, i) => `m${i}`));
  socket.close();
});

// Many messages both ways over polling: 1,000 echoed in order.
test("1000 messages over polling in order", async () => {
  const socket = connect({ transports: ["polling"], upgrade: false });
  await once(socket, "open");
  const n = 1000;
  const received = collect(socket, n, 20_000);
  for (let i = 0; i < n; i++) socket.send(`p${i}`);
  assert.deepEqual(await received, Array.from({ length: n }, (_, i) => `p${i}`));
  socket.close();
});

// Heartbeat: the client answers the server's 300 ms pings; the session survives 1.5 s on
// both transports.
test("heartbeat keeps sessions alive", async () => {
  const ws = connect({ transports: ["websocket"] });
  const polling = connect({ transports: ["polling"], upgrade: false });
  await Promise.all([once(ws, "open"), once(polling, "open")]);
  let closed = false;
  ws.on("close", () => (closed = true));
  polling.on("close", () => (closed = true));
  await sleep(1500);
  assert.equal(closed, false);
  ws.send("still");
  polling.send("here");
  assert.equal(await once(ws, "message"), "still");
  assert.equal(await once(polling, "message"), "here");
  ws.close();
  polling.close();
});

// Close and reopen: a client close is reported as "forced close"; 50 sessions in a row
// open, echo and close.
test("close and reopen", async () => {
  const first = connect({ transports: ["websocket"] });
  await once(first, "open");
  const closing = once(first, "close");
  first.close();
  const [reason] = await closing;
  assert.equal(reason, "forced close");
  for (let i = 0; i < 50; i++) {
    const socket = connect({ transports: i % 2 ? ["polling"] : ["websocket"] });
    await once(socket, "open");
    socket.send(`round ${i}`);
    assert.equal(await once(socket, "message"), `round ${i}`);
    socket.close();
  }
});

// Size limit: 900 KB echoes intact; 1.1 MB makes the server close that session while
// another client goes on.
test("max payload over websocket", async () => {
  const bystander = connect({ transports: ["websocket"] });
  const socket = connect({ transports: ["websocket"] });
  await Promise.all([once(bystander, "open"), once(socket, "open")]);
  const big = "x".repeat(900_000);
  socket.send(big);
  assert.equal(await once(socket, "message"), big);
  const closing = once(socket, "close");
  socket.send("y".repeat(1_100_000));
  await closing;
  bystander.send("unaffected");
  assert.equal(await once(bystander, "message"), "unaffected");
  assert.ok(server.alive());
  bystander.close();
});
