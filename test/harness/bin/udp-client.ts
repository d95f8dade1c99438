/**
 * Test client: sends one UDP datagram and prints the first reply, then exits 0; exits 1 after the
 * timeout. Usage: bun udp-client.ts ADDR PORT PAYLOAD [--sendto] [--timeout MS] [--sport N].
 * Default is a connected socket (connect(2): the cgroup connect hook); --sendto uses sendto(2)
 * on an unconnected socket (the sendmsg/recvmsg hooks).
 */
const args = process.argv.slice(2);
const flag = (f: string) => {
  const i = args.indexOf(f);
  if (i < 0) return undefined;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const sendto = args.includes("--sendto");
if (sendto) args.splice(args.indexOf("--sendto"), 1);
const timeoutMs = Number(flag("--timeout") ?? "3000");
const sport = Number(flag("--sport") ?? "0");
const [addr, portText, payload = "ping"] = args;
if (!addr || !portText) {
  console.error("usage: udp-client.ts ADDR PORT PAYLOAD [--sendto] [--timeout MS] [--sport N]");
  process.exit(2);
}
const port = Number(portText);
const v6 = addr.includes(":");
const handlers = {
  data(_s: unknown, buf: Buffer) {
    process.stdout.write(buf.toString());
    process.exit(0);
  },
};
const timer = setTimeout(() => {
  console.error(`udp ${addr}:${port}: no reply within ${timeoutMs} ms`);
  process.exit(1);
}, timeoutMs);
void timer;
const bindHost = v6 ? "::" : "0.0.0.0";
if (sendto) {
  const s = await Bun.udpSocket({ hostname: bindHost, port: sport, socket: handlers });
  s.send(payload, port, addr);
} else {
  const s = await Bun.udpSocket({
    hostname: bindHost,
    port: sport,
    connect: { hostname: addr, port },
    socket: handlers,
  });
  s.send(payload);
}

export {};
