/**
 * UDP client on an unconnected socket (sendto/recvfrom: the cgroup sendmsg4/recvmsg4 hooks):
 * sends PAYLOAD to ADDR PORT and prints "from <addr>:<port> <reply>" for the first reply — the
 * source address recvfrom(2) reported. Exit 1 when no reply arrives within 3 s.
 * Usage: bun udp-from.ts ADDR PORT PAYLOAD
 */
const [addr, port, payload = "ping"] = process.argv.slice(2);
if (!addr || !port) {
  console.error("usage: udp-from.ts ADDR PORT PAYLOAD");
  process.exit(2);
}
setTimeout(() => {
  console.error(`udp ${addr}:${port}: no reply within 3000 ms`);
  process.exit(1);
}, 3000);
const sock = await Bun.udpSocket({
  hostname: "0.0.0.0",
  port: 0,
  socket: {
    data(_s, buf, fromPort, fromAddr) {
      console.log(`from ${fromAddr}:${fromPort} ${buf.toString().trim()}`);
      process.exit(0);
    },
  },
});
sock.send(payload, Number(port), addr);
export {};
