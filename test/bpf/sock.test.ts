/**
 * The socket-LB programs (bpf/sock.bpf.c) attached to a test cgroup: a client process inside the
 * cgroup and a private network namespace connects to frontends; backends listen on that
 * namespace's loopback. Checks translation, getpeername/recvfrom showing the frontend, reject,
 * the SOCKET_LB and hostNamespaceOnly switches, and the counters.
 */
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { mkdirSync, rmdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { attachCgroup, type CgroupHook } from "../../src/datapath/attach.ts";
import type { BpfLink } from "../../src/datapath/bpf.ts";
import { stats } from "../../src/datapath/lbmaps.ts";
import { needs } from "../harness/env.ts";
import { cgroup2Mount, ensureBpffs, pollUntil, REPO_ROOT } from "../harness/netns.ts";
import { abi, type ConfigSpec, Lab } from "./_lab.ts";

const skip = needs({ root: true, tools: ["clang", "ip", "nsenter", "python3"] }, "socket LB tests");

const SERVER = `
import socket, sys, threading
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", 8080)); t.listen(16)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 5353))
def tcp():
    while True:
        c, _ = t.accept(); c.sendall(b"pong"); c.close()
def udp():
    while True:
        d, a = u.recvfrom(2048); u.sendto(b"pong:" + d, a)
threading.Thread(target=tcp, daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
`;

const CLIENT = `
import json, socket, struct, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
# optional source: bound before connect (tcp, udp-connect) or given to sendmsg as IP_PKTINFO (8; udp)
src = sys.argv[4] if len(sys.argv) > 4 else ""
try:
    if mode == "cookie":
        s = socket.socket()
        print(json.dumps({"cookie": str(int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 71, 8), "little"))}))
    elif mode == "tcp":
        s = socket.socket(); s.settimeout(5)
        if src: s.bind((src, 0))
        s.connect((host, port))
        peer = "%s:%d" % s.getpeername()
        print(json.dumps({"peer": peer, "reply": s.recv(64).decode()}))
    elif mode == "udp-connect":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
        if src: s.bind((src, 0))
        s.connect((host, port))
        s.send(b"ping")
        print(json.dumps({"from": "%s:%d" % s.getpeername(), "reply": s.recv(64).decode()}))
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
        if src:
            info = struct.pack("i4s4s", 0, socket.inet_aton(src), bytes(4))
            s.sendmsg([b"ping"], [(socket.IPPROTO_IP, 8, info)], 0, (host, port))
        else:
            s.sendto(b"ping", (host, port))
        d, a = s.recvfrom(64)
        print(json.dumps({"from": "%s:%d" % a, "reply": d.decode()}))
except OSError as e:
    print(json.dumps({"error": __import__("errno").errorcode.get(e.errno, str(e))}))
`;

/** loadBalancerSourceRanges cases: the range, a source inside it and one outside. */
const SRC_RANGE = "192.0.2.0/24";
const SRC_IN = "192.0.2.10";
const SRC_OUT = "198.51.100.20";

describe.skipIf(!!skip)("socket LB programs", () => {
  const id = Math.random().toString(36).slice(2, 8);
  const ns = `kprs${id}`;
  const pinDir = `/sys/fs/bpf/kpr-test-s${id}`;
  let cgDir = "";
  let lab: Lab;
  const links: BpfLink[] = [];
  let server: ReturnType<typeof Bun.spawn> | undefined;

  const client = (mode: string, host: string, port: number, src = ""): Record<string, string> => {
    const r = Bun.spawnSync(
      [
        "sh",
        "-c",
        `echo $$ > "$0/cgroup.procs" && exec nsenter --net=/run/netns/${ns} python3 -c "$1" "$2" "$3" "$4" "$5"`,
        cgDir,
        CLIENT,
        mode,
        host,
        String(port),
        src,
      ],
      { stdout: "pipe", stderr: "pipe" },
    );
    if (r.exitCode !== 0) throw new Error(`client ${mode} ${host}:${port}: ${r.stderr.toString()}`);
    return JSON.parse(r.stdout.toString()) as Record<string, string>;
  };

  beforeAll(async () => {
    const b = Bun.spawnSync([process.execPath, join(REPO_ROOT, "build.ts"), "--bpf-only"], {
      stderr: "pipe",
    });
    if (b.exitCode !== 0) throw new Error(`build eBPF objects: ${b.stderr.toString()}`);
    ensureBpffs();
    for (const argv of [
      ["ip", "netns", "add", ns],
      ["ip", "-n", ns, "link", "set", "lo", "up"],
      // source addresses of the loadBalancerSourceRanges cases: one inside, one outside
      ["ip", "-n", ns, "addr", "add", `${SRC_IN}/32`, "dev", "lo"],
      ["ip", "-n", ns, "addr", "add", `${SRC_OUT}/32`, "dev", "lo"],
    ]) {
      const r = Bun.spawnSync(argv, { stderr: "pipe" });
      if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.toString()}`);
    }
    cgDir = join(cgroup2Mount(), `kpr-test-s${id}`);
    mkdirSync(cgDir);
    lab = Lab.open("sock", pinDir);
    const hooks: [string, CgroupHook][] = [
      ["kpr_sock4_connect", "connect4"],
      ["kpr_sock4_sendmsg", "sendmsg4"],
      ["kpr_sock4_recvmsg", "recvmsg4"],
      ["kpr_sock4_getpeername", "getpeername4"],
    ];
    for (const [prog, hook] of hooks)
      links.push(attachCgroup(lab.obj.program(prog), cgDir, hook, `${pinDir}/links/${hook}`));

    server = Bun.spawn(["nsenter", `--net=/run/netns/${ns}`, "python3", "-c", SERVER], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "inherit",
    });
    const reader = (server.stdout as ReadableStream<Uint8Array>).getReader();
    let out = "";
    await pollUntil("backend servers ready", async () => {
      const { value } = await reader.read();
      out += new TextDecoder().decode(value ?? new Uint8Array());
      return out.includes("ready");
    });
    reader.releaseLock();
  });

  afterAll(() => {
    server?.kill();
    for (const l of links) {
      l.detach();
      l.close();
    }
    lab?.close();
    rmSync(pinDir, { recursive: true, force: true });
    if (cgDir) rmdirSync(cgDir);
    Bun.spawnSync(["ip", "netns", "del", ns]);
  });

  const program = (config: ConfigSpec) => {
    lab.reset();
    lab.setConfig(config);
    lab.addService({
      address: "10.96.50.10",
      port: 80,
      revNatId: 1,
      flags: ["CLUSTERIP"],
      backends: [{ id: 1, address: "127.0.0.1", port: 8080 }],
    });
    lab.addService({
      address: "10.96.50.10",
      port: 53,
      proto: "udp",
      revNatId: 2,
      flags: ["CLUSTERIP"],
      backends: [{ id: 2, address: "127.0.0.1", port: 5353 }],
    });
    lab.addService({ address: "10.96.50.11", port: 80, revNatId: 3, flags: ["CLUSTERIP"], backends: [] });
    lab.addService({
      address: "10.96.50.11",
      port: 53,
      proto: "udp",
      revNatId: 4,
      flags: ["CLUSTERIP"],
      backends: [],
    });
    // internalTrafficPolicy=Local, endpoints on other nodes only (user space writes no slots)
    lab.addService({
      address: "10.96.50.13",
      port: 80,
      revNatId: 5,
      flags: ["CLUSTERIP", "LOCAL_SCOPE", "DROP_NO_LOCAL"],
      backends: [],
    });
    // LoadBalancer IP with loadBalancerSourceRanges (allow list), TCP and UDP, and a deny list
    for (const [proto, port, be, id, deny] of [
      ["tcp", 80, { id: 1, address: "127.0.0.1", port: 8080 }, 6, false],
      ["udp", 53, { id: 2, address: "127.0.0.1", port: 5353 }, 7, false],
      ["tcp", 81, { id: 1, address: "127.0.0.1", port: 8080 }, 8, true],
    ] as const) {
      lab.addService({
        address: "203.0.113.50",
        port,
        proto,
        revNatId: id,
        flags: ["LOADBALANCER", "SRC_RANGES", ...(deny ? ["SRC_DENY"] : [])],
        backends: [be],
      });
      lab.addSourceRange(id, SRC_RANGE);
    }
  };

  it.each([
    [
      "TCP connect reaches the backend; getpeername shows the frontend",
      "tcp",
      "10.96.50.10",
      80,
      { peer: "10.96.50.10:80", reply: "pong" },
      "KPR_R_SOCK_LB",
    ],
    [
      "UDP sendto reaches the backend; recvfrom shows the frontend",
      "udp",
      "10.96.50.10",
      53,
      { from: "10.96.50.10:53", reply: "pong:ping" },
      "KPR_R_SOCK_LB",
    ],
    [
      "frontend without backends: connect fails with EPERM",
      "tcp",
      "10.96.50.11",
      80,
      { error: "EPERM" },
      "KPR_R_SOCK_REJECT",
    ],
    [
      "address without frontend is left alone",
      "tcp",
      "10.96.50.12",
      80,
      { error: "ENETUNREACH" },
      "KPR_R_PASS",
    ],
  ] as const)("%s", (_what, mode, host, port, want, reason) => {
    program({ flags: ["SOCKET_LB"] });
    expect(client(mode, host, port)).toEqual({ ...want });
    expect(lab.reasons()[reason]).toBeGreaterThanOrEqual(1);
  });

  it.each([
    ["UDP sendto, frontend without backends: EPERM at once", "udp", "10.96.50.11", 53, "KPR_R_SOCK_REJECT"],
    [
      "connected UDP socket, frontend without backends: connect() fails with EPERM",
      "udp-connect",
      "10.96.50.11",
      53,
      "KPR_R_SOCK_REJECT",
    ],
    [
      "internalTrafficPolicy=Local, endpoints on other nodes only: connect() refused with EPERM, not dropped",
      "tcp",
      "10.96.50.13",
      80,
      "KPR_R_SOCK_REJECT_NO_LOCAL",
    ],
  ] as const)("%s", (_what, mode, host, port, reason) => {
    program({ flags: ["SOCKET_LB"] });
    const t0 = performance.now();
    const got = client(mode, host, port);
    expect({ got, fast: performance.now() - t0 < 3000 }).toEqual({ got: { error: "EPERM" }, fast: true });
    expect({ [reason]: lab.reasons()[reason] }).toEqual({ [reason]: 1 });
  });

  // kube-proxy TestLoadBalancer: "pod to LB1 (blocked by LoadBalancerSourceRanges)" is dropped,
  // "node to LB1 (allowed by LoadBalancerSourceRanges)" reaches the endpoint: decided on the
  // socket's source address.
  it.each([
    [
      "TCP from a bound source inside the ranges reaches the backend",
      "tcp",
      80,
      SRC_IN,
      { peer: "203.0.113.50:80", reply: "pong" },
      "KPR_R_SOCK_LB",
    ],
    [
      "TCP from a bound source outside the ranges is refused (EPERM)",
      "tcp",
      80,
      SRC_OUT,
      { error: "EPERM" },
      "KPR_R_DROP_SRC_RANGE",
    ],
    [
      "TCP from an unbound socket (source unknown to the hook) is refused by an allow list",
      "tcp",
      80,
      "",
      { error: "EPERM" },
      "KPR_R_DROP_SRC_RANGE",
    ],
    [
      "UDP sendmsg with an IP_PKTINFO source inside the ranges reaches the backend",
      "udp",
      53,
      SRC_IN,
      { from: "203.0.113.50:53", reply: "pong:ping" },
      "KPR_R_SOCK_LB",
    ],
    [
      "UDP sendmsg with an IP_PKTINFO source outside the ranges is refused",
      "udp",
      53,
      SRC_OUT,
      { error: "EPERM" },
      "KPR_R_DROP_SRC_RANGE",
    ],
    [
      "connected UDP socket bound outside the ranges is refused",
      "udp-connect",
      53,
      SRC_OUT,
      { error: "EPERM" },
      "KPR_R_DROP_SRC_RANGE",
    ],
    [
      "deny list: a bound source in the listed range is refused",
      "tcp",
      81,
      SRC_IN,
      { error: "EPERM" },
      "KPR_R_DROP_SRC_RANGE",
    ],
    [
      "deny list: a source outside it reaches the backend",
      "tcp",
      81,
      SRC_OUT,
      { peer: "203.0.113.50:81", reply: "pong" },
      "KPR_R_SOCK_LB",
    ],
    [
      "deny list: an unbound socket is let through",
      "tcp",
      81,
      "",
      { peer: "203.0.113.50:81", reply: "pong" },
      "KPR_R_SOCK_LB",
    ],
  ] as const)("loadBalancerSourceRanges: %s", (_what, mode, port, src, want, reason) => {
    program({ flags: ["SOCKET_LB"] });
    expect(client(mode, "203.0.113.50", port, src)).toEqual({ ...want });
    expect({ [reason]: lab.reasons()[reason] }).toEqual({ [reason]: 1 });
  });

  // An unbound socket's source is picked by the route after the hook: in the node's namespace
  // (the config's cookie) kpr has asked the kernel for it and marked the list when it is in it.
  describe("loadBalancerSourceRanges, unbound sockets", () => {
    const setup = (opts: { marker: boolean; all?: boolean; hostIsClient: boolean; deny?: boolean }) => {
      program({ flags: ["SOCKET_LB"] });
      const cookie = BigInt(client("cookie", "", 0).cookie ?? "0");
      program({ flags: ["SOCKET_LB"], hostNetnsCookie: opts.hostIsClient ? cookie : cookie + 1000n });
      const port = opts.deny ? 81 : 80;
      const id = opts.deny ? 8 : 6;
      if (opts.marker) lab.addSourceRange(id, "node");
      if (opts.all) lab.addSourceRange(id, "0.0.0.0/0");
      return port;
    };
    const ok = (port: number) => ({ peer: `203.0.113.50:${port}`, reply: "pong" });
    const cases = [
      [
        "node namespace, node marker: allowed (kube-proxy: node to LB1 allowed)",
        { marker: true, hostIsClient: true },
        true,
      ],
      [
        "other namespace, node marker: refused (kube-proxy: pod to LB1 blocked)",
        { marker: true, hostIsClient: false },
        false,
      ],
      [
        "node namespace, no marker (its source is outside the list): refused",
        { marker: false, hostIsClient: true },
        false,
      ],
      [
        "other namespace, a 0.0.0.0/0 range: allowed",
        { marker: false, all: true, hostIsClient: false },
        true,
      ],
      [
        "deny list, node namespace, node marker: refused",
        { marker: true, hostIsClient: true, deny: true },
        false,
      ],
      [
        "deny list, other namespace, node marker: let through",
        { marker: true, hostIsClient: false, deny: true },
        true,
      ],
    ] as const;
    const run = (opts: (typeof cases)[number][1], allowed: boolean) => {
      const port = setup(opts);
      expect(client("tcp", "203.0.113.50", port, "")).toEqual(allowed ? ok(port) : { error: "EPERM" });
    };
    // the node's namespace is told by its cookie, which the test reads with SO_NETNS_COOKIE (5.14+)
    const noCookie = needs({ kernel: "5.14" }, "socket LB source ranges of the node's unbound sockets");
    it.skipIf(!!noCookie).each(cases.filter((c) => c[1].hostIsClient))("%s", (_what, opts, allowed) =>
      run(opts, allowed),
    );
    it.each(cases.filter((c) => !c[1].hostIsClient))("%s", (_what, opts, allowed) => run(opts, allowed));
  });

  it("counts connections per service and backend", () => {
    program({ flags: ["SOCKET_LB"] });
    for (let i = 0; i < 3; i++) expect(client("tcp", "10.96.50.10", 80)).toMatchObject({ reply: "pong" });
    const sum = (map: string, key: number) => {
      const k = new Uint8Array(4);
      new DataView(k.buffer).setUint32(0, key, true);
      const v = lab.obj.map(map).lookup(k);
      if (!v) return 0;
      const per = lab.obj.map(map).valueStride / lab.obj.map(map).valueSize;
      return stats.decodeMany(v, per).reduce((a, s) => a + Number(s.packets), 0);
    };
    expect({ svc: sum("kpr_svc_stats", 1), be: sum("kpr_be_stats", 1) }).toEqual({ svc: 3, be: 3 });
    expect(lab.reasons().KPR_R_SOCK_LB).toBe(3);
  });

  describe("two-scope frontends (eTP=Local external frontends: in-cluster traffic to every endpoint)", () => {
    // External (tc) set: a backend nothing listens on; internal (socket) set: the TCP server.
    const twoScopes = (opts: { flag: boolean; internal: boolean }) => {
      program({ flags: ["SOCKET_LB"] });
      lab.addService({
        address: "10.96.50.20",
        port: 80,
        revNatId: 10,
        flags: opts.flag ? ["NODEPORT", "LOCAL_SCOPE", "TWO_SCOPES"] : ["NODEPORT", "LOCAL_SCOPE"],
        backends: [{ id: 10, address: "127.0.0.1", port: 8081 }],
      });
      if (opts.internal)
        lab.addService({
          address: "10.96.50.20",
          port: 80,
          revNatId: 10,
          scope: abi("KPR_SCOPE_INTERNAL"),
          flags: ["NODEPORT"],
          backends: [{ id: 11, address: "127.0.0.1", port: 8080 }],
        });
    };

    it("the socket hook balances over the internal set", () => {
      twoScopes({ flag: true, internal: true });
      expect(client("tcp", "10.96.50.20", 80)).toEqual({ peer: "10.96.50.20:80", reply: "pong" });
    });

    it("without the two-scope flag the internal entries are not read", () => {
      twoScopes({ flag: false, internal: true });
      expect(client("tcp", "10.96.50.20", 80)).toEqual({ error: "ECONNREFUSED" });
    });

    it.each([
      [
        "a bound source inside reaches the internal set",
        SRC_IN,
        { peer: "203.0.113.60:80", reply: "pong" },
        "KPR_R_SOCK_LB",
      ],
      [
        "a bound source outside is refused before the scope is chosen",
        SRC_OUT,
        { error: "EPERM" },
        "KPR_R_DROP_SRC_RANGE",
      ],
    ] as const)("LoadBalancer IP with source ranges and two scopes: %s", (_what, src, want, reason) => {
      program({ flags: ["SOCKET_LB"] });
      // eTP=Local without a local endpoint (external set empty), all endpoints for in-cluster clients
      const flags = ["LOADBALANCER", "SRC_RANGES"];
      lab.addService({
        address: "203.0.113.60",
        port: 80,
        revNatId: 12,
        flags: [...flags, "LOCAL_SCOPE", "DROP_NO_LOCAL", "TWO_SCOPES"],
        backends: [],
      });
      lab.addService({
        address: "203.0.113.60",
        port: 80,
        revNatId: 12,
        scope: abi("KPR_SCOPE_INTERNAL"),
        flags,
        backends: [{ id: 1, address: "127.0.0.1", port: 8080 }],
      });
      lab.addSourceRange(12, SRC_RANGE);
      expect(client("tcp", "203.0.113.60", 80, src)).toEqual({ ...want });
      expect({ [reason]: lab.reasons()[reason] }).toEqual({ [reason]: 1 });
    });

    it("flag set but internal entries missing (mid-update): the external set is used", () => {
      twoScopes({ flag: true, internal: false });
      expect(client("tcp", "10.96.50.20", 80)).toEqual({ error: "ECONNREFUSED" });
    });
  });

  it("socket LB off (no SOCKET_LB flag): nothing is translated", () => {
    program({});
    expect(client("tcp", "10.96.50.10", 80)).toEqual({ error: "ENETUNREACH" });
    expect(lab.reasons().KPR_R_SOCK_DISABLED).toBeGreaterThanOrEqual(1);
  });

  // the test reads the namespace's cookie with SO_NETNS_COOKIE, as kpr does (5.14+)
  const noCookie = needs({ kernel: "5.14" }, "socket LB hostNamespaceOnly");
  it.skipIf(!!noCookie)(
    "hostNamespaceOnly: only the namespace whose cookie is configured is translated",
    () => {
      program({ flags: ["SOCKET_LB"] });
      const cookie = BigInt(client("cookie", "", 0).cookie ?? "0");
      expect(cookie).toBeGreaterThan(0n);
      program({ flags: ["SOCKET_LB", "HOST_NS_ONLY"], hostNetnsCookie: cookie + 1000n });
      expect({ other: client("tcp", "10.96.50.10", 80) }).toEqual({ other: { error: "ENETUNREACH" } });
      expect(lab.reasons().KPR_R_SOCK_SKIP_NETNS).toBeGreaterThanOrEqual(1);
      program({ flags: ["SOCKET_LB", "HOST_NS_ONLY"], hostNetnsCookie: cookie });
      expect({ host: client("tcp", "10.96.50.10", 80) }).toEqual({
        host: { peer: "10.96.50.10:80", reply: "pong" },
      });
    },
  );
});
