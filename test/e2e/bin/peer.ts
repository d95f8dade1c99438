/**
 * TCP client showing what getpeername(2) says: connects to ADDR PORT, prints
 * "peer <addr>:<port>" (node:net reads it with getpeername), sends one HTTP/1.0 GET and prints
 * "body <first line of the answer's body>". Exit 1 on a connection error.
 * Usage: bun peer.ts ADDR PORT
 */
import net from "node:net";

const [addr, port] = process.argv.slice(2);
if (!addr || !port) {
  console.error("usage: peer.ts ADDR PORT");
  process.exit(2);
}
const sock = net.connect({ host: addr, port: Number(port) });
let data = "";
sock.setTimeout(5000, () => {
  console.error(`peer ${addr}:${port}: timed out`);
  process.exit(1);
});
sock.on("connect", () => {
  console.log(`peer ${sock.remoteAddress}:${sock.remotePort}`);
  sock.write(`GET / HTTP/1.0\r\nHost: ${addr}\r\n\r\n`);
});
sock.on("data", (b) => {
  data += b.toString();
});
sock.on("end", () => {
  const body = data.slice(data.indexOf("\r\n\r\n") + 4);
  console.log(`body ${body.split("\n")[0]}`);
  process.exit(0);
});
sock.on("error", (e) => {
  console.error(`peer ${addr}:${port}: ${e.message}`);
  process.exit(1);
});
