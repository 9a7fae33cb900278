// The documents peer: the npm `y-socket.io` 1.1.3 server (YSocketIO on socket.io 4),
// the server the stock provider is written for, as its README sets it up. Documents
// live in memory; with --persist DIR they are kept in LevelDB there (y-socket.io's own
// persistence, y-leveldb): a document is written back and dropped from memory when its
// last socket leaves, and read again by the next one.
// Binds 127.0.0.1 on --port or PORT; prints `PID <pid>` then `LISTENING <port>`.
import { createServer } from "node:http";
import { Server } from "socket.io";
import { YSocketIO } from "y-socket.io/dist/server";

const arg = (name) => {
  const at = process.argv.indexOf(name);
  return at > 0 ? process.argv[at + 1] : undefined;
};
const port = Number(arg("--port") ?? process.env.PORT ?? 3000);
const persist = arg("--persist");

const http = createServer();
const io = new Server(http, { serveClient: false });
const ysocketio = new YSocketIO(io, persist ? { levelPersistenceDir: persist } : {});
ysocketio.initialize();
http.listen(port, "127.0.0.1", () => {
  console.log(`PID ${process.pid}`);
  console.log(`LISTENING ${http.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
