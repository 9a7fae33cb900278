// What the documents tests share about the stock `y-socket.io` provider.
import * as bc from "lib0/broadcastchannel";

/** Stops providers for good, so that the test process can end. */
export function closeProviders(providers) {
  for (const p of providers) {
    p.destroy();
    // A provider whose server went keeps reconnecting; this stops it.
    p.socket.close();
    // y-socket.io publishes on a BroadcastChannel when it disconnects, even with
    // disableBc (its own bug); that channel would keep the process alive.
    const noop = () => {};
    bc.subscribe(p.broadcastChannel, noop);
    bc.unsubscribe(p.broadcastChannel, noop);
  }
}
