// A Herald node (cluster-node --sharded MODE) and a Node socket.io server on the npm
// @socket.io/redis-adapter's createShardedAdapter share a private Redis (sharded pub/sub:
// SSUBSCRIBE, SPUBLISH), in each subscription mode: broadcasts, fetchSockets,
// socketsJoin/Leave, disconnectSockets, serverSideEmit with and without acks and
// broadcasts with acks, in both directions; the channels subscribed follow the mode.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { Server } from "socket.io";
import { io as connect } from "socket.io-client";
import { createShardedAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { once, privateRedis, startServer, until } from "./harness.mjs";

/** Resolves with the args of the next `event` on `socket`, or rejects after `ms`. */
function next(socket, event, ms = 3000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${event}" within ${ms} ms`)), ms);
    socket.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

/** Rejects if `event` comes to `socket` within `ms`. */
function none(socket, event, ms = 300) {
  return new Promise((resolve, reject) => {
    const seen = (...args) => reject(new Error(`unexpected "${event}" ${JSON.stringify(args)}`));
    socket.once(event, seen);
    setTimeout(() => {
      socket.off(event, seen);
      resolve();
    }, ms);
  });
}

for (const mode of ["dynamic", "dynamic-private", "static"]) {
  describe(`sharded adapter, ${mode}`, () => {
    let redis, herald, nodeIo, nodeUrl, heraldUrl;
    const redisClients = [];
    const clients = [];

    async function client(url, name) {
      const socket = connect(url, { transports: ["websocket"], auth: { name }, reconnection: false, forceNew: true });
      clients.push(socket);
      await once(socket, "connect");
      return socket;
    }

    async function redisClient() {
      const c = createClient({ url: redis.url });
      c.on("error", () => {});
      await c.connect();
      redisClients.push(c);
      return c;
    }

    let admin;
    /** How many connections subscribe the shard channel `channel`. */
    async function shardNumSub(channel) {
      const out = await admin.sendCommand(["PUBSUB", "SHARDNUMSUB", channel]);
      return Number(out[1]);
    }

    before(async () => {
      redis = await privateRedis();
      herald = await startServer("cluster-node", ["--port", "0", "--sharded", mode], { REDIS_URL: redis.url });
      heraldUrl = `http://127.0.0.1:${herald.port}`;
      admin = await redisClient();
      const http = createServer();
      nodeIo = new Server(http);
      const pub = await redisClient();
      const sub = await redisClient();
      nodeIo.adapter(createShardedAdapter(pub, sub, { subscriptionMode: mode }));
      nodeIo.on("connection", (socket) => {
        socket.data = { name: socket.handshake.auth.name };
        socket.on("join", (room, ack) => {
          socket.join(room);
          ack("ok");
        });
      });
      nodeIo.on("hello", (...args) => {
        const ack = typeof args.at(-1) === "function" ? args.pop() : null;
        nodeIo.local.emit("sse", "hello", args);
        if (ack) ack({ node: true, args });
      });
      await new Promise((r) => http.listen(0, "127.0.0.1", r));
      nodeUrl = `http://127.0.0.1:${http.address().port}`;
      await until(async () => (await shardNumSub("socket.io#/#")) === 2, "two servers on the namespace's channel");
    });

    after(async () => {
      for (const c of clients) c.disconnect();
      nodeIo?.close();
      for (const c of redisClients) await c.quit().catch(() => {});
      await herald?.stop();
      await redis?.stop();
    });

    test("broadcasts from Node reach Herald's clients; the channels follow the mode", async () => {
      const h = await client(heraldUrl, "hana");
      assert.equal(await h.emitWithAck("join", "room1"), "ok");
      if (mode === "static") {
        assert.equal(await shardNumSub("socket.io#/#room1#"), 0);
      } else {
        await until(async () => (await shardNumSub("socket.io#/#room1#")) === 1, "room1's channel subscribed by Herald");
      }
      const own = await shardNumSub(`socket.io#/#${h.id}#`);
      assert.equal(own, mode === "dynamic-private" ? 1 : 0, "a socket's own room has a channel in dynamic-private only");

      const got = next(h, "news");
      nodeIo.to("room1").emit("news", "n1", { a: 1 });
      assert.deepEqual(await got, ["n1", { a: 1 }]);
      const bin = next(h, "bin");
      nodeIo.to("room1").emit("bin", Buffer.from([1, 2, 3]));
      assert.deepEqual([...new Uint8Array((await bin)[0])], [1, 2, 3]);
      const direct = next(h, "direct");
      nodeIo.to(h.id).emit("direct", 1);
      assert.deepEqual(await direct, [1]);
      const silent = none(h, "skipped");
      nodeIo.except("room1").emit("skipped");
      await silent;
      const all = next(h, "everyone");
      nodeIo.emit("everyone", true);
      assert.deepEqual(await all, [true]);
    });

    test("broadcasts from Herald reach Node's clients", async () => {
      const h = await client(heraldUrl, "hugo");
      const n = await client(nodeUrl, "nina");
      assert.equal(await n.emitWithAck("join", "room2"), "ok");
      const got = next(n, "news");
      await h.emitWithAck("emit", { rooms: ["room2"], event: "news", args: ["h1", { b: 2 }] });
      assert.deepEqual(await got, ["h1", { b: 2 }]);
      const direct = next(n, "direct");
      await h.emitWithAck("emit", { rooms: [n.id], event: "direct", args: [2] });
      assert.deepEqual(await direct, [2]);
      const silent = none(n, "skipped");
      await h.emitWithAck("emit", { except: ["room2"], event: "skipped", args: [] });
      await silent;
      const localOnly = none(n, "mine");
      await h.emitWithAck("emit", { event: "mine", args: [], local: true });
      await localOnly;
    });

    test("fetchSockets and server counts, both ways", async () => {
      const h = await client(heraldUrl, "hedy");
      await h.emitWithAck("join", "fetch-h");
      await h.emitWithAck("setData", { role: "tester" });
      const n = await client(nodeUrl, "nils");
      await n.emitWithAck("join", "fetch-n");

      const fromNode = await nodeIo.in("fetch-h").fetchSockets();
      assert.equal(fromNode.length, 1);
      assert.equal(fromNode[0].id, h.id);
      assert.deepEqual([...fromNode[0].rooms].sort(), [h.id, "fetch-h"].sort());
      assert.deepEqual(fromNode[0].data, { role: "tester" });
      assert.deepEqual(fromNode[0].handshake.auth, { name: "hedy" });

      const fromHerald = await h.emitWithAck("fetch", { rooms: ["fetch-n"] });
      assert.equal(fromHerald.length, 1);
      assert.equal(fromHerald[0].id, n.id);
      assert.deepEqual(fromHerald[0].data, { name: "nils" });

      assert.equal(await nodeIo.of("/").adapter.serverCount(), 2);
      assert.equal(await h.emitWithAck("serverCount"), 2);
    });

    test("socketsJoin, socketsLeave and disconnectSockets, both ways", async () => {
      const h = await client(heraldUrl, "hal");
      const n = await client(nodeUrl, "ned");
      nodeIo.in(h.id).socketsJoin("by-node");
      await until(async () => (await h.emitWithAck("fetch", { rooms: ["by-node"], local: true })).length === 1, "Herald's socket joined");
      if (mode !== "static") {
        // Its channel subscribed: a broadcast before that would not reach Herald.
        await until(async () => (await shardNumSub("socket.io#/#by-node#")) === 1, "by-node's channel subscribed");
      }
      const got = next(h, "joined");
      nodeIo.to("by-node").emit("joined", "yes");
      assert.deepEqual(await got, ["yes"]);
      nodeIo.in(h.id).socketsLeave("by-node");
      await until(async () => (await h.emitWithAck("fetch", { rooms: ["by-node"], local: true })).length === 0, "left");

      await h.emitWithAck("socketsJoin", { rooms: [n.id], room: "by-herald" });
      const nodeSocket = nodeIo.of("/").sockets.get(n.id);
      await until(() => nodeSocket.rooms.has("by-herald"), "Node's socket joined by-herald");
      await h.emitWithAck("socketsLeave", { rooms: [n.id], room: "by-herald" });
      await until(() => !nodeSocket.rooms.has("by-herald"), "Node's socket left by-herald");

      const h2 = await client(heraldUrl, "hex");
      const gone = next(h2, "disconnect");
      nodeIo.in(h2.id).disconnectSockets();
      assert.equal((await gone)[0], "io server disconnect");
      const n2 = await client(nodeUrl, "neo");
      const gone2 = next(n2, "disconnect");
      await h.emitWithAck("disconnectSockets", { rooms: [n2.id] });
      assert.equal((await gone2)[0], "io server disconnect");
    });

    test("serverSideEmit with and without acks, both ways", async () => {
      const h = await client(heraldUrl, "hera");
      const n = await client(nodeUrl, "nora");
      const told = next(h, "sse");
      nodeIo.serverSideEmit("hello", 1);
      assert.deepEqual(await told, ["hello", [1]]);
      const answers = await nodeIo.serverSideEmitWithAck("hello", 2);
      assert.deepEqual(answers, [{ herald: true, event: "hello", args: [2] }]);
      const toNode = next(n, "sse");
      assert.equal(await h.emitWithAck("serverSideEmit", { event: "hello", args: [3] }), "sent");
      assert.deepEqual(await toNode, ["hello", [3]]);
      const fromHerald = await h.emitWithAck("serverSideEmit", { event: "hello", args: [4], ack: true });
      assert.deepEqual(fromHerald, { responses: [{ node: true, args: [4] }], complete: true });
    });

    test("broadcasts with acks count the clients of every node, both ways", async () => {
      for (const c of clients.splice(0)) c.disconnect();
      await until(async () => (await nodeIo.fetchSockets()).length === 0, "every earlier client gone");
      const h = await client(heraldUrl, "hank");
      const n = await client(nodeUrl, "nell");
      h.on("ask", (q, ack) => ack(`herald:${q}`));
      n.on("ask", (q, ack) => ack(`node:${q}`));
      const fromNode = await nodeIo.timeout(2000).emitWithAck("ask", "q1");
      assert.deepEqual(fromNode.sort(), ["herald:q1", "node:q1"]);
      const fromHerald = await h.emitWithAck("emitWithAck", { event: "ask", args: ["q2"] });
      assert.deepEqual(fromHerald.responses.sort(), ["herald:q2", "node:q2"]);
      assert.equal(fromHerald.errors, 0);
    });
  });
}
