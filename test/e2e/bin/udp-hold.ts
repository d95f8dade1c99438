/**
 * A long-lived connected UDP client: connect(2) to ADDR PORT (the cgroup connect4 hook), then one
 * datagram every INTERVAL ms on that socket. Prints "connected <n>" for each socket it connects,
 * "#<i> <reply>" for each reply and "error <code> <message>" for an error on the socket (a
 * destroyed socket reports ECONNABORTED). After an error it closes the socket and connects a new
 * one (a client that re-resolves); with --once it exits 1 instead.
 * Usage: bun udp-hold.ts ADDR PORT [INTERVAL_MS=50] [--sport N] [--once]
 */
import dgram from "node:dgram";

const args = process.argv.slice(2);
const once = args.includes("--once");
const si = args.indexOf("--sport");
const sport = si >= 0 ? Number(args[si + 1]) : 0;
const pos = args.filter((a, i) => !a.startsWith("--") && !(si >= 0 && i === si + 1));
const [addr, port, intervalArg = "50"] = pos;
if (!addr || !port) {
  console.error("usage: udp-hold.ts ADDR PORT [INTERVAL_MS] [--sport N] [--once]");
  process.exit(2);
}
let replies = 0;
let sockets = 0;
let sock: dgram.Socket | undefined;
let ready = false;

function open(): void {
  const s = dgram.createSocket("udp4");
  sock = s;
  ready = false;
  s.on("message", (m) => {
    if (s !== sock) return;
    console.log(`#${++replies} ${m.toString().trim()}`);
  });
  s.on("error", (e: NodeJS.ErrnoException) => {
    if (s !== sock) return;
    console.log(`error ${e.code ?? "?"} ${e.message}`);
    if (once) process.exit(1);
    sock = undefined;
    try {
      s.close();
    } catch {}
    setTimeout(open, 10);
  });
  s.bind(sport, () =>
    s.connect(Number(port), addr, () => {
      console.log(`connected ${++sockets}`);
      ready = true;
    }),
  );
}

open();
setInterval(() => {
  const s = sock;
  if (!s || !ready) return;
  s.send(`ping ${replies + 1}`, (err) => {
    if (err && s === sock) s.emit("error", err);
  });
}, Number(intervalArg));
