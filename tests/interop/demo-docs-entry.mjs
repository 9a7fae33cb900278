// The demo page's Document tab imports this, bundled into one ES module (served at
// /demo/docs.js with demo.docs_js; `npm run demo-docs` builds build/demo-docs.js):
// Yjs, the stock y-socket.io provider (with its own socket.io-client inside), and the
// msgpack parser for a Herald that speaks msgpack.
import msgpack from "socket.io-msgpack-parser";

export * as Y from "yjs";
export { SocketIOProvider } from "y-socket.io";
export const msgpackParser = msgpack;
