// The bench app on the Node `socket.io` server (npm), the same app as Herald's
// `bench-server` and the socketioxide peer, on namespace `/`:
//   join (room) with ack -> the socket joins the room; ack "ok"
//   echo (data) with ack -> ack with the data
//   broadcast (room, data) -> emit `msg` with the data to everyone in the room
// Binds 127.0.0.1 on --port or PORT (0 picks one); prints `PID <pid>` then
// `LISTENING <port>`; exits on SIGTERM. The server's defaults otherwise. With
// REDIS_URL set, the server joins the cluster on that Redis with the npm
// @socket.io/redis-adapter (classic, key "socket.io"), as Herald's bench-server does.
import { createServer } from "node:http";
import { Server } from "socket.io";

const at = process.argv.indexOf("--port");
const port = Number(at > 0 ? process.argv[at + 1] : process.env.PORT ?? 3000);

const http = createServer();
const io = new Server(http, { serveClient: false });
if (process.env.REDIS_URL) {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}
io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack("ok");
  });
  socket.on("echo", (data, ack) => {
    if (typeof ack === "function") ack(data);
  });
  socket.on("broadcast", (room, data) => {
    io.to(room).emit("msg", data);
  });
});
http.listen(port, "127.0.0.1", () => {
  console.log(`PID ${process.pid}`);
  console.log(`LISTENING ${http.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
