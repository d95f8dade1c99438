/**
 * Test backend: answers every HTTP request with "<name> <client address>:<client port>\n".
 * Usage: bun http-echo.ts NAME [PORT=0] [HOST=0.0.0.0]. Prints "listening HOST PORT" when ready.
 */
const [name = "backend", portArg = "0", host = "0.0.0.0"] = process.argv.slice(2);

/** IPv4 clients of a dual-stack socket appear as ::ffff:a.b.c.d: show them as a.b.c.d. */
function plain(addr: string): string {
  return addr.startsWith("::ffff:") && addr.includes(".") ? addr.slice(7) : addr;
}

const server = Bun.serve({
  port: Number(portArg),
  hostname: host,
  fetch(req, srv) {
    const ip = srv.requestIP(req);
    const who = ip ? `${plain(ip.address)}:${ip.port}` : "unknown";
    return new Response(`${name} ${who}\n`, { headers: { "x-backend": name } });
  },
});
console.log(`listening ${host} ${server.port}`);

export {};
