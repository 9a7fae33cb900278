// TLS on the `herald` listener, with certificates this test makes (openssl): the npm
// socket.io-client over wss and https polling; plain HTTP refused; the certificate
// reloaded on SIGHUP without dropping a connection; a bad reload keeps the old one.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync, renameSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import https from "node:https";
import http from "node:http";
import tls from "node:tls";
import { io } from "socket.io-client";
import { startHerald, once, sleep } from "./harness.mjs";

const dir = mkdtempSync(path.join(tmpdir(), "herald-tls-"));
const certFile = path.join(dir, "cert.pem");
const keyFile = path.join(dir, "key.pem");
let srv;
const clients = [];

/** A self-signed certificate for 127.0.0.1, written to cert.pem and key.pem (atomically). */
function makeCert(name) {
  const cert = path.join(dir, `${name}.cert.pem`);
  const key = path.join(dir, `${name}.key.pem`);
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", key, "-out", cert, "-days", "1", "-subj", `/CN=herald-test-${name}`,
    "-addext", "subjectAltName=IP:127.0.0.1",
  ], { stdio: "ignore" });
  return { cert, key, pem: readFileSync(cert, "utf8") };
}

function install({ cert, key }) {
  writeFileSync(`${certFile}.new`, readFileSync(cert));
  writeFileSync(`${keyFile}.new`, readFileSync(key));
  renameSync(`${certFile}.new`, certFile);
  renameSync(`${keyFile}.new`, keyFile);
}

/** The subject CN of the certificate the server presents now. */
function presented(ca) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: "127.0.0.1", port: srv.port, ca, servername: undefined }, () => {
      const cn = s.getPeerCertificate().subject.CN;
      s.end();
      resolve(cn);
    });
    s.on("error", reject);
  });
}

function client(ca, transports) {
  const socket = io(srv.url, { forceNew: true, reconnection: false, transports, ca });
  clients.push(socket);
  return socket;
}

let first;

before(async () => {
  first = makeCert("first");
  install(first);
  srv = await startHerald({ HERALD_TLS__CERT_FILE: certFile, HERALD_TLS__KEY_FILE: keyFile });
});

after(async () => {
  for (const c of clients) c.close();
  await srv?.stop();
  rmSync(dir, { recursive: true, force: true });
});

// wss and https polling work with the certificate; the log says https.
test("socket.io over TLS, both transports", async () => {
  assert.match(srv.url, /^https:/);
  for (const transports of [["websocket"], ["polling"], ["polling", "websocket"]]) {
    const a = client(first.pem, transports);
    const b = client(first.pem, transports);
    await Promise.all([once(a, "connect"), once(b, "connect")]);
    assert.deepEqual(await a.emitWithAck("subscribe", "tls-room"), { ok: true });
    const got = once(a, "hello");
    assert.deepEqual(await b.emitWithAck("publish", "tls-room", "hello", "over tls"), { ok: true });
    assert.deepEqual(await got, ["over tls", { from: null }]);
    a.close();
    b.close();
  }
});

// Plain HTTP on the TLS port gets nowhere, and the failure is counted; the server
// keeps serving.
test("plain HTTP is refused", async () => {
  const outcome = await new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port: srv.port, path: "/livez", agent: false }, (res) => resolve(`status ${res.statusCode}`));
    req.on("error", (e) => resolve(`error ${e.code}`));
    req.setTimeout(3000, () => {
      req.destroy();
      resolve("timeout");
    });
  });
  assert.match(outcome, /^error/);
  const metrics = await new Promise((resolve, reject) => {
    https.get({ host: "127.0.0.1", port: srv.port, path: "/metrics", ca: first.pem }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve(body));
    }).on("error", reject);
  });
  const m = /^herald_tls_handshake_failures_total (\d+)$/m.exec(metrics);
  assert.ok(Number(m[1]) >= 1, metrics);
});

// SIGHUP reloads the certificate: connections made before keep going, new ones get the
// new certificate; a reload of bad files keeps the old one.
test("reload on SIGHUP without dropping connections", async () => {
  const before = client(first.pem, ["websocket"]);
  await once(before, "connect");
  assert.equal(await presented(first.pem), "herald-test-first");

  const second = makeCert("second");
  install(second);
  srv.child.kill("SIGHUP");
  await sleep(300);
  assert.equal(await presented(second.pem), "herald-test-second");
  await assert.rejects(presented(first.pem), "the old certificate is no longer presented");
  assert.ok(before.connected, "a connection made before the reload was dropped");
  assert.deepEqual(await before.emitWithAck("subscribe", "after-reload"), { ok: true });
  const after = client(second.pem, ["websocket"]);
  await once(after, "connect");

  writeFileSync(certFile, "not a certificate");
  srv.child.kill("SIGHUP");
  await sleep(300);
  assert.ok(srv.alive(), "a bad reload stopped the server");
  assert.equal(await presented(second.pem), "herald-test-second");
  assert.ok(srv.logs.some((l) => /TLS reload failed/.test(l)), srv.logs.join("\n"));
  assert.deepEqual(await after.emitWithAck("subscribe", "still"), { ok: true });
});
