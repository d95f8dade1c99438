/**
 * Service semantics of the datapath, end to end on the namespace cluster (see _cluster.ts), as
 * kube-proxy's packet-flow tests and the Kubernetes e2e Service tests define them:
 *  - UDP to a service without endpoints is refused with ICMP port unreachable (tc), so a
 *    connected UDP client fails at once with ECONNREFUSED; the socket path refuses the call;
 *  - loadBalancerSourceRanges in the socket path (kube-proxy TestLoadBalancer: "pod to LB1
 *    (blocked by LoadBalancerSourceRanges)", "node to LB1 (allowed by
 *    LoadBalancerSourceRanges)", "nodePort bypasses LoadBalancerSourceRanges");
 *  - reject versus drop: refused at once where kpr rejects (no endpoints at all; any socket-path
 *    refusal), never answered where tc drops (externalTrafficPolicy=Local, endpoints on other
 *    nodes only: the SYN is dropped and connect() times out).
 * Clients are real sockets (python3: the errno and the time it took are the result).
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { bpfClangArgs } from "../../scripts/bpf-cflags.ts";
import { startCapture } from "../harness/capture.ts";
import { needs } from "../harness/env.ts";
import { type Topology, useTopology } from "../harness/netns.ts";
import { parsePacket, toHex, verifyChecksums } from "../harness/packet.ts";
import { httpGet } from "../harness/servers.ts";
import {
  ADDR,
  buildCluster,
  DEVICE,
  dnsPort,
  httpPort,
  kprOk,
  LOCAL_ENDPOINTS,
  NS,
  REMOTE_ENDPOINT,
  spread,
  writeManifests,
} from "./_cluster.ts";
import { node, service } from "./_manifests.ts";

/** The LoadBalancer IP guarded by loadBalancerSourceRanges, and its range (node-1 inside). */
const LB_IP = "203.0.113.20";
const LB_RANGE = "192.168.50.0/24";
/** A second LoadBalancer IP whose range leaves node-1's address out. */
const LB_IP2 = "203.0.113.21";
const LB_RANGE2 = "198.51.100.0/24";

/** Frontends of the manifests below. */
const FE = {
  emptyUdp: { clusterIP: "10.96.1.53", nodePort: 30181 },
  emptyTcp: { clusterIP: "10.96.1.80", nodePort: 30182 },
  etpLocal: { clusterIP: "10.96.1.81", nodePort: 30183 },
  itpLocal: { clusterIP: "10.96.1.82" },
  fw: { clusterIP: "10.96.1.83", nodePort: 30184 },
  fw2: { clusterIP: "10.96.1.84", nodePort: 30185 },
} as const;

/** service() with spec.loadBalancerSourceRanges set (the builder has no field for it). */
function withSourceRanges(objects: object[], ranges: string[]): object[] {
  const [svc, ...rest] = objects as { spec: Record<string, unknown> }[];
  return [{ ...svc!, spec: { ...svc!.spec, loadBalancerSourceRanges: ranges } }, ...rest];
}

const MANIFESTS = [
  node("node-1", ADDR.node1),
  ...service({
    name: "empty-dns",
    type: "NodePort",
    clusterIP: FE.emptyUdp.clusterIP,
    ports: [dnsPort(FE.emptyUdp.nodePort)],
    endpoints: [],
  }),
  ...service({
    name: "empty-web",
    type: "NodePort",
    clusterIP: FE.emptyTcp.clusterIP,
    ports: [httpPort(FE.emptyTcp.nodePort)],
    endpoints: [],
  }),
  ...service({
    name: "etp-local",
    type: "NodePort",
    clusterIP: FE.etpLocal.clusterIP,
    ports: [httpPort(FE.etpLocal.nodePort)],
    externalTrafficPolicy: "Local",
    endpoints: [REMOTE_ENDPOINT],
  }),
  ...service({
    name: "itp-local",
    type: "ClusterIP",
    clusterIP: FE.itpLocal.clusterIP,
    ports: [httpPort()],
    internalTrafficPolicy: "Local",
    endpoints: [REMOTE_ENDPOINT],
  }),
  ...withSourceRanges(
    service({
      name: "fw",
      type: "LoadBalancer",
      clusterIP: FE.fw.clusterIP,
      ports: [httpPort(FE.fw.nodePort)],
      loadBalancerIPs: [LB_IP],
      endpoints: LOCAL_ENDPOINTS,
    }),
    [LB_RANGE],
  ),
  ...withSourceRanges(
    service({
      name: "fw2",
      type: "LoadBalancer",
      clusterIP: FE.fw2.clusterIP,
      ports: [httpPort(FE.fw2.nodePort)],
      loadBalancerIPs: [LB_IP2],
      endpoints: LOCAL_ENDPOINTS,
    }),
    [LB_RANGE2],
  ),
];

/**
 * One connection attempt: connect() (bound to SRC when given), then one request (UDP: a
 * datagram and a recv; TCP: an HTTP GET). Prints {"result": "ok" | "timeout" | errno name,
 * "ms": elapsed}. Mode udp-sendto uses an unconnected socket (sendto/recvfrom).
 */
const CLIENT = `
import errno, json, socket, sys, time
mode, host, port, src, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
t0 = time.monotonic()
out = {}
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if mode == "tcp" else socket.SOCK_DGRAM)
    s.settimeout(timeout)
    if src:
        s.bind((src, 0))
    if mode == "udp-sendto":
        s.sendto(b"ping", (host, port))
        s.recvfrom(512)
    else:
        s.connect((host, port))
        s.send(b"ping" if mode == "udp" else b"GET / HTTP/1.0\\r\\n\\r\\n")
        s.recv(4096)
    out["result"] = "ok"
except socket.timeout:
    out["result"] = "timeout"
except OSError as e:
    out["result"] = errno.errorcode.get(e.errno, str(e))
out["ms"] = round((time.monotonic() - t0) * 1000)
print(json.dumps(out))
`;

interface Attempt {
  result: string;
  ms: number;
}

/** One attempt from ns (in the socket-LB cgroup when cgroup), bound to src when given. */
async function attemptIn(
  topo: Topology,
  ns: string,
  mode: "tcp" | "udp" | "udp-sendto",
  host: string,
  port: number,
  opts: { cgroup?: boolean; src?: string; timeoutS?: number } = {},
): Promise<Attempt> {
  const argv = [
    "python3",
    "-c",
    CLIENT,
    mode,
    host,
    String(port),
    opts.src ?? "",
    String(opts.timeoutS ?? 3),
  ];
  const run = opts.cgroup ? topo.runInCgroup.bind(topo) : topo.exec.bind(topo);
  const r = await run(ns, argv, { timeoutMs: 20_000, nsenter: true });
  if (r.code !== 0) throw new Error(`client ${mode} ${host}:${port} in ${ns}: exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Attempt;
}

/** The datapath's reason counters on node-1 (kpr bpf metrics). */
async function reasonsOf(topo: Topology): Promise<Record<string, number>> {
  const r = await kprOk(topo, ["bpf", "metrics", "-o", "json", "--all"]);
  const j = JSON.parse(r.stdout) as { reasons?: { reason: string; count: string | number }[] };
  return Object.fromEntries((j.reasons ?? []).map((x) => [x.reason, Number(x.count)]));
}

/**
 * A connected UDP client in the client namespace sends to the NodePort of a service without
 * endpoints, with a capture on its device: recv() must fail at once with ECONNREFUSED, and the
 * ICMP port unreachable it received must carry valid IPv4 and ICMP checksums (recomputed here
 * over the captured bytes), come from the NodePort address and quote the datagram's IPv4 header
 * and UDP header byte for byte. The reject-icmp counter must move.
 */
async function checkPortUnreachable(topo: Topology): Promise<void> {
  const before = (await reasonsOf(topo))["reject-icmp"] ?? 0;
  const port = FE.emptyUdp.nodePort;
  const cap = await startCapture(topo, NS.client, DEVICE, { filter: `icmp or (udp and dst port ${port})` });
  let got: Attempt;
  let frames: Uint8Array[];
  try {
    got = await attemptIn(topo, NS.client, "udp", ADDR.node1, port);
    frames = await cap.waitForFrames(2);
  } finally {
    await cap.stop();
  }
  expect(
    { result: got.result, fast: got.ms < 1000 },
    `UDP NodePort without endpoints: ${JSON.stringify(got)}`,
  ).toEqual({
    result: "ECONNREFUSED",
    fast: true,
  });
  const sent = frames.find((f) => parsePacket(f).udp);
  const icmp = frames.find((f) => parsePacket(f).icmp);
  expect({ sent: !!sent, icmp: !!icmp }, "captured the datagram and the ICMP error").toEqual({
    sent: true,
    icmp: true,
  });
  const p = parsePacket(icmp!);
  const hl = (sent![14]! & 0x0f) * 4;
  expect({
    from: p.ip4?.src,
    to: p.ip4?.dst,
    type: p.icmp?.type,
    code: p.icmp?.code,
    checksums: verifyChecksums(icmp!),
    quote: toHex(icmp!.slice(42, 42 + hl + 8)),
  }).toEqual({
    from: ADDR.node1,
    to: ADDR.client,
    type: 3,
    code: 3,
    checksums: { ok: true, errors: [] },
    quote: toHex(sent!.slice(14, 14 + hl + 8)),
  });
  const after = (await reasonsOf(topo))["reject-icmp"] ?? 0;
  expect(after - before, "reject-icmp counted by the datapath").toBeGreaterThanOrEqual(1);
}

const skip = needs(
  { root: true, built: true, tools: ["ip", "nsenter", "curl", "sysctl", "python3", "tcpdump"] },
  "e2e datapath semantics",
);

describe.skipIf(!!skip)("e2e: datapath semantics (kube-proxy's packet-flow expectations)", () => {
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      // node-1 reaches the LoadBalancer IPs on its device (as through a load balancer's subnet):
      // the route kpr asks for their source, and that a node process's unbound socket gets
      await t.route(NS.node1, "203.0.113.0/24", { dev: DEVICE });
      const file = await writeManifests(t, "services.yaml", MANIFESTS);
      await kprOk(t, ["apply", "-f", file]);
    },
  });

  const attempt = (
    ns: string,
    mode: "tcp" | "udp" | "udp-sendto",
    host: string,
    port: number,
    opts: { cgroup?: boolean; src?: string; timeoutS?: number } = {},
  ) => attemptIn(topo(), ns, mode, host, port, opts);
  const reasons = () => reasonsOf(topo());

  test("should reject UDP to a service without endpoints with ICMP port unreachable (tc)", async () => {
    await checkPortUnreachable(topo());
  });

  test("kpr explain shows the ICMP port unreachable for UDP to a service without endpoints", async () => {
    const r = await kprOk(topo(), [
      "explain",
      "--src",
      `${ADDR.client}:41000`,
      "--dst",
      `${ADDR.node1}:${FE.emptyUdp.nodePort}`,
      "--proto",
      "udp",
      "-o",
      "json",
    ]);
    const j = JSON.parse(r.stdout) as { reason: string; verdict: string; output?: unknown; why: string[] };
    expect({ reason: j.reason, verdict: j.verdict, output: j.output }).toEqual({
      reason: "reject-icmp",
      verdict: "redirect",
      output: { src: ADDR.node1, dst: ADDR.client },
    });
    expect(j.why.join("\n"), "why").toContain("ICMP port unreachable");
  });

  test.each([
    ["connected UDP socket: connect() fails", "udp"],
    ["unconnected UDP socket: sendto() fails", "udp-sendto"],
  ] as const)("socket path, UDP ClusterIP without endpoints, %s with EPERM at once", async (_what, mode) => {
    const got = await attempt(NS.node1, mode, FE.emptyUdp.clusterIP, 53, { cgroup: true });
    expect({ result: got.result, fast: got.ms < 1000 }, JSON.stringify(got)).toEqual({
      result: "EPERM",
      fast: true,
    });
  });

  // reject versus drop
  test("should reject TCP to a service without endpoints (tc: RST, connect() refused at once)", async () => {
    const got = await attempt(NS.client, "tcp", ADDR.node1, FE.emptyTcp.nodePort);
    expect({ result: got.result, fast: got.ms < 1000 }, JSON.stringify(got)).toEqual({
      result: "ECONNREFUSED",
      fast: true,
    });
  });

  test("should drop external traffic to an eTP=Local NodePort whose endpoints are all on other nodes (SYN never answered)", async () => {
    const got = await attempt(NS.client, "tcp", ADDR.node1, FE.etpLocal.nodePort, { timeoutS: 2 });
    expect({ result: got.result, waited: got.ms >= 1900 }, JSON.stringify(got)).toEqual({
      result: "timeout",
      waited: true,
    });
  });

  test("socket path refuses (EPERM, at once) an iTP=Local ClusterIP whose endpoints are all on other nodes, where kube-proxy drops", async () => {
    const before = (await reasons())["sock-reject-no-local"] ?? 0;
    const got = await attempt(NS.node1, "tcp", FE.itpLocal.clusterIP, 80, { cgroup: true });
    expect({ result: got.result, fast: got.ms < 1000 }, JSON.stringify(got)).toEqual({
      result: "EPERM",
      fast: true,
    });
    const after = (await reasons())["sock-reject-no-local"] ?? 0;
    expect(after - before, "counted as sock-reject-no-local").toBe(1);
  });

  // loadBalancerSourceRanges in the socket path (kube-proxy TestLoadBalancer)
  test("node to LB (allowed by loadBalancerSourceRanges): a node process bound to the node IP reaches the endpoints", async () => {
    const { counts, errors } = await spread(async () => {
      const r = await httpGet(topo(), NS.node1, `http://${LB_IP}:80/`, {
        cgroup: true,
        timeoutMs: 3000,
        curlArgs: ["--interface", ADDR.node1],
      });
      return r.echo?.name ?? { error: `curl exit ${r.curlCode} ${r.stderr.trim()}` };
    }, ["pod-a", "pod-b"]);
    expect(errors, "node → LB IP from the node address: failed requests").toEqual([]);
    expect(Object.keys(counts).sort(), "backends that answered").toEqual(["pod-a", "pod-b"]);
  });

  test.each([
    ["bound to its pod IP", ADDR.podA],
    ["unbound (source chosen by the route, unknown to the hook)", ""],
  ])("pod to LB (blocked by loadBalancerSourceRanges), %s: refused", async (_what, src) => {
    const got = await attempt(NS.podA, "tcp", LB_IP, 80, { cgroup: true, src });
    expect({ result: got.result, fast: got.ms < 1000 }, JSON.stringify(got)).toEqual({
      result: "EPERM",
      fast: true,
    });
  });

  // the node's namespace is told by its cookie (SO_NETNS_COOKIE, 5.14+); before, its unbound
  // sockets are treated as a pod's (README)
  const noCookie = needs({ kernel: "5.14" }, "e2e: source ranges of the node's unbound sockets");
  test.skipIf(!!noCookie)(
    "node to LB (allowed by loadBalancerSourceRanges), unbound socket: the source node-1's route picks is in the list",
    async () => {
      const got = await attempt(NS.node1, "tcp", LB_IP, 80, { cgroup: true });
      expect(got.result, JSON.stringify(got)).toBe("ok");
      const list = JSON.parse((await kprOk(topo(), ["service", "list", "-o", "json"])).stdout) as {
        frontend: { address: string };
        sourceRanges?: { nodeSourceInList?: boolean };
      }[];
      const ranges = (ip: string) => list.find((e) => e.frontend.address === ip)?.sourceRanges;
      expect(ranges(LB_IP)?.nodeSourceInList, "service list: node source in the list").toBe(true);
      expect(
        ranges(LB_IP2)?.nodeSourceInList,
        "service list: node source not in the second list",
      ).toBeUndefined();
    },
  );

  test("node to LB, unbound socket, the route's source outside loadBalancerSourceRanges: refused", async () => {
    const got = await attempt(NS.node1, "tcp", LB_IP2, 80, { cgroup: true });
    expect({ result: got.result, fast: got.ms < 1000 }, JSON.stringify(got)).toEqual({
      result: "EPERM",
      fast: true,
    });
  });

  test("nodePort bypasses loadBalancerSourceRanges (a pod reaches the NodePort of the same service)", async () => {
    const got = await attempt(NS.podA, "tcp", ADDR.node1, FE.fw.nodePort, { cgroup: true, src: ADDR.podA });
    expect(got.result, JSON.stringify(got)).toBe("ok");
  });
});

const skipXdp = needs(
  { root: true, built: true, tools: ["ip", "nsenter", "sysctl", "python3", "tcpdump", "clang"] },
  "e2e datapath semantics with XDP",
);

describe.skipIf(!!skipXdp)(
  "e2e: datapath semantics with XDP acceleration (native, on node-1's veth0)",
  () => {
    const topo = useTopology({
      setup: async (t) => {
        await buildCluster(t);
        // XDP_TX on a veth reaches the peer only when the peer runs an XDP program itself (veth
        // schedules the peer's NAPI for XDP_TX frames only then): an XDP_PASS program on pn1.
        const src = join(t.tmpDir, "xdp-pass.bpf.c");
        const obj = join(t.tmpDir, "xdp-pass.bpf.o");
        await Bun.write(
          src,
          'int pass(void *ctx) __attribute__((section("xdp"), used));\nint pass(void *ctx) { return 2; }\n' +
            'char _license[] __attribute__((section("license"), used)) = "GPL";\n',
        );
        const cc = Bun.spawnSync(bpfClangArgs(src, obj), { stderr: "pipe" });
        if (cc.exitCode !== 0) throw new Error(`clang ${src}: ${cc.stderr.toString()}`);
        await t.run(NS.fabric, ["ip", "link", "set", "dev", "pn1", "xdpdrv", "obj", obj, "sec", "xdp"]);
        t.writeConfig({
          devices: [DEVICE],
          nodeName: "node-1",
          loadBalancer: { acceleration: "native" },
          socketLB: { enabled: false },
        });
        const file = await writeManifests(t, "services.yaml", MANIFESTS);
        await kprOk(t, ["apply", "-f", file]);
      },
    });

    test("should reject UDP to a service without endpoints with ICMP port unreachable (XDP_TX)", async () => {
      const link = await topo().run(NS.node1, ["ip", "-d", "link", "show", DEVICE]);
      expect(link, "native XDP attached to node-1's device").toMatch(/xdp(drv)? |prog\/xdp/);
      await checkPortUnreachable(topo());
    });
  },
);
