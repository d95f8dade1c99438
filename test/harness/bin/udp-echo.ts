/**
 * Test backend: answers every UDP datagram with "<name> <client address>:<client port> <payload>".
 * Usage: bun udp-echo.ts NAME [PORT=0] [HOST=0.0.0.0]. Prints "listening HOST PORT" when ready.
 */
const [name = "backend", portArg = "0", host = "0.0.0.0"] = process.argv.slice(2);

function plain(addr: string): string {
  return addr.startsWith("::ffff:") && addr.includes(".") ? addr.slice(7) : addr;
}

const sock = await Bun.udpSocket({
  port: Number(portArg),
  hostname: host,
  socket: {
    data(s, buf, port, addr) {
      s.send(`${name} ${plain(addr)}:${port} ${buf.toString()}`, port, addr);
    },
  },
});
console.log(`listening ${host} ${sock.port}`);

export {};
