/**
 * A long-lived HTTP/1.1 keep-alive client: one TCP connection to ADDR PORT, a GET every
 * INTERVAL ms on it, each answer printed as "#<n> <body>". Any error or close prints
 * "error <what>" and exits 1 — so a test sees whether an established connection survives.
 * Usage: bun hold.ts ADDR PORT [INTERVAL_MS=50]
 */
import net from "node:net";

const [addr, port, intervalArg = "50"] = process.argv.slice(2);
if (!addr || !port) {
  console.error("usage: hold.ts ADDR PORT [INTERVAL_MS]");
  process.exit(2);
}
const interval = Number(intervalArg);
const sock = net.connect({ host: addr, port: Number(port) });
let buf = "";
let n = 0;
const fail = (what: string) => {
  console.log(`error ${what}`);
  process.exit(1);
};
const request = () => sock.write(`GET /${n + 1} HTTP/1.1\r\nHost: ${addr}\r\n\r\n`);
sock.setTimeout(5000, () => fail("no answer within 5000 ms"));
sock.on("connect", () => {
  console.log(`connected ${sock.localAddress}:${sock.localPort}`);
  request();
});
sock.on("data", (b) => {
  buf += b.toString("latin1");
  for (;;) {
    const head = buf.indexOf("\r\n\r\n");
    if (head < 0) return;
    const len = /content-length: *(\d+)/i.exec(buf.slice(0, head));
    if (!len) return fail(`answer without content-length: ${JSON.stringify(buf.slice(0, head))}`);
    const end = head + 4 + Number(len[1]);
    if (buf.length < end) return;
    n++;
    console.log(`#${n} ${buf.slice(head + 4, end).trim()}`);
    buf = buf.slice(end);
    setTimeout(request, interval);
  }
});
sock.on("end", () => fail("closed by the peer"));
sock.on("error", (e) => fail(e.message));
