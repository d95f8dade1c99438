/**
 * Datapath benchmark: ns per packet of kpr's tc ingress and XDP programs under
 * BPF_PROG_TEST_RUN, with 1 and with 10,000 services programmed by `kpr apply`, next to no-op tc
 * and XDP programs, in one run.
 *
 *   bun bench/datapath.ts [--services 1,10000] [--endpoints 10] [--packets 100000]
 *                         [--object tc.bpf.o] [--baseline other-tc.bpf.o] [--xdp xdp.bpf.o]
 *                         [--kpr dist/kpr]
 *
 * Cases per service count (each object; --baseline adds a "before" object measured in the same
 * run, case by case, per-call cases interleaved 1,000 calls at a time):
 *   - no-op tc program (bpf/probe.bpf.c's probe_tc): the cost of BPF_PROG_TEST_RUN itself;
 *   - packet to no service (lookup miss, passed);
 *   - established flow, warm: a DNAT ping-pong pair of frontends run with `repeat` (each run
 *     is a CT hit that rewrites the packet into the other frontend's flow);
 *   - TCP SYN of a new flow to a NodePort frontend whose backends are all local (selection,
 *     CT insert, DNAT, checksums), one packet per call, a new 5-tuple each;
 *   - TCP ACK of an established flow (CT hit, DNAT), one packet per call.
 * XDP cases (one packet per call, Katran's method; the frame arrives on the node's device, whose
 * FIB routes the pod CIDR via a gateway with a permanent neighbour entry): no-op XDP program
 * (probe_xdp), packet to no service, TCP SYN of a new flow to a NodePort whose backends are all
 * remote (selection, CT insert, SNAT port allocation, DNAT+SNAT, checksums, FIB lookup, MACs,
 * XDP_REDIRECT), TCP ACK of an established flow to it (CT hit, SNAT refresh, same rewrite).
 * test_run's repeat loop runs on one skb, which a rewriting program changes, hence the
 * ping-pong pair and the per-call cases. Per-call durations include the fixed cost of one run
 * and cold caches: compare them with the per-call no-op, the repeat ones with the repeat no-op.
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  CLUSTER_CIDR,
  cleanupKprRoot,
  createNetns,
  fmtRatio,
  KPR,
  makeServiceSet,
  printTable,
  REPO,
  run,
  runSync,
  startBench,
  vethInNs,
  writeKprConfig,
  writeManifests,
} from "./_lib.ts";

const NODE = "bench-node";
const NODE_ADDR = "192.168.77.1";
const NODEPORT = 30000;
/** NodePort of the service with remote backends only (the XDP forwarding cases). */
const REMOTE_NODEPORT = 32767;
/** The gateway the node routes the pod CIDR through (permanent neighbour entry). */
const GW = { addr: "192.168.77.254", mac: "02:00:00:00:00:fe" };
/** New flows per XDP SYN measurement: each takes a SNAT port; kept well below the ports of the
 * remote backends (10 × the SNAT range) so that allocation probes stay short. */
const XDP_NEW_FLOWS_MAX = 20000;

interface CaseResult {
  /** mean kernel-measured ns per run */
  ns: number;
  /** how it was run */
  how: "per-call" | "repeat";
}

/** object path → case → result */
type InnerResult = Record<string, Record<string, CaseResult>>;

/**
 * Programs the ping-pong pair of the established-flow `repeat` case straight into the pinned
 * maps (kpr's codecs): external frontends P:30100 and Q:30200, each with one node-local backend,
 * the other frontend. Ids are taken from the top of their ranges and checked unused first.
 */
async function pingPong(tcObj: import("../src/datapath/bpf.ts").BpfObject) {
  const { lb4Key, lb4Service, lb4Backend, lb4Revnat, SVC_F, BE_F, PROTO_NUM } = await import(
    "../src/datapath/lbmaps.ts"
  );
  const svcMap = tcObj.map("kpr_lb4_svc");
  const beMap = tcObj.map("kpr_lb4_be");
  const rnatMap = tcObj.map("kpr_lb4_rnat");
  const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
  const u16 = (n: number) => new Uint8Array(new Uint16Array([n]).buffer);
  const ends = [
    { addr: "192.168.77.101", port: 30100, rev: 65534, be: 0xfffffff0 },
    { addr: "192.168.77.102", port: 30200, rev: 65535, be: 0xfffffff1 },
  ] as const;
  for (const [i, e] of ends.entries()) {
    const other = ends[1 - i]!;
    if (beMap.lookup(u32(e.be)) || rnatMap.lookup(u16(e.rev)))
      throw new Error(`ping-pong: backend id ${e.be} or rev_nat_id ${e.rev} is already used by kpr`);
    const key = { address: e.addr, dport: e.port, slot: 0, proto: PROTO_NUM.TCP, scope: 0 };
    const master = {
      backend_id: 0,
      affinity_timeout: 0,
      count: 1,
      rev_nat_id: e.rev,
      flags: SVC_F.EXTERNALIP,
      algorithm: 0,
      active_count: 1,
    };
    // backend `e.be` is the other frontend's address:port
    beMap.update(
      u32(e.be),
      lb4Backend.encode({
        address: other.addr,
        port: other.port,
        proto: PROTO_NUM.TCP,
        state: 0,
        flags: BE_F.LOCAL,
      }),
    );
    rnatMap.update(u16(e.rev), lb4Revnat.encode({ address: e.addr, port: e.port }));
    svcMap.update(lb4Key.encode({ ...key, slot: 1 }), lb4Service.encode({ ...master, backend_id: e.be }));
    svcMap.update(lb4Key.encode(key), lb4Service.encode(master));
  }
  return { p: ends[0].addr, pPort: ends[0].port, q: ends[1].addr, qPort: ends[1].port };
}

// ---------------------------------------------------------------------------------------------
// inner mode: inside the netns, load the programs on the pinned maps and run them

async function inner(
  cfgPath: string,
  packets: number,
  objects: string[],
  xdpPath: string,
  dev: string,
): Promise<void> {
  const { loadConfig } = await import("../src/config/load.ts");
  const { openObject, BpfMap } = await import("../src/datapath/bpf.ts");
  const { buildPacket, parsePacket, verifyChecksums } = await import("../test/harness/packet.ts");
  const cfg = loadConfig(cfgPath);
  const mapsDir = `${cfg.bpf.root}/maps`;

  // every tc object shares kpr's pinned maps: same sizes as the pins, reuse only (no new pins)
  const tcObjs = objects.map((path, i) => {
    const o = openObject(new Uint8Array(readFileSync(path)), `kpr_tc${i}`);
    const pinned = o.maps().filter((m) => existsSync(`${mapsDir}/${m}`));
    for (const m of pinned) {
      using pm = BpfMap.openPinned(`${mapsDir}/${m}`);
      o.setMaxEntries(m, pm.maxEntries);
    }
    o.pinMaps(mapsDir, pinned);
    o.load();
    return o;
  });
  const probeObj = openObject(
    new Uint8Array(readFileSync(join(REPO, ".build/bpf/probe.bpf.o"))),
    "kpr_probe",
  );
  probeObj.load();
  const noop = probeObj.program("probe_tc");
  type Prog = typeof noop;
  const lbs = tcObjs.map((o) => o.program("kpr_tc_ingress"));
  const xdpObj = openObject(new Uint8Array(readFileSync(xdpPath)), "kpr_xdp");
  {
    const pinned = xdpObj.maps().filter((m) => existsSync(`${mapsDir}/${m}`));
    for (const m of pinned) {
      using pm = BpfMap.openPinned(`${mapsDir}/${m}`);
      xdpObj.setMaxEntries(m, pm.maxEntries);
    }
    xdpObj.pinMaps(mapsDir, pinned);
    xdpObj.load();
  }
  const xdp = xdpObj.program("kpr_xdp");
  const xdpNoop = probeObj.program("probe_xdp");
  const ifindex = (
    JSON.parse(Bun.spawnSync(["ip", "-j", "link", "show", "dev", dev]).stdout.toString()) as {
      ifindex: number;
    }[]
  )[0]!.ifindex;
  // struct xdp_md: data_end = frame length, ingress_ifindex = the node's device
  const xdpCtx = (len: number) => {
    const c = new Uint8Array(24);
    const dv = new DataView(c.buffer);
    dv.setUint32(4, len, true);
    dv.setUint32(12, ifindex, true);
    return c;
  };
  const xdpRun = (prog: Prog, data: Uint8Array) => prog.testRun({ data, ctx: xdpCtx(data.length) });

  const eth = { src: "02:00:00:00:00:02", dst: "02:00:00:00:00:01" };
  const client = (i: number) => `172.16.${(i >>> 8) & 255}.${i & 255}`;
  const syn = (i: number) =>
    buildPacket({
      eth,
      ip4: { src: client(i >>> 14), dst: NODE_ADDR },
      tcp: { sport: 10000 + (i & 0x3fff), dport: NODEPORT, flags: "S", seq: 1 },
    });
  const ack = buildPacket({
    eth,
    ip4: { src: "172.31.255.1", dst: NODE_ADDR },
    tcp: { sport: 40000, dport: NODEPORT, flags: "A", seq: 2, ack: 1 },
  });
  const ackSyn = buildPacket({
    eth,
    ip4: { src: "172.31.255.1", dst: NODE_ADDR },
    tcp: { sport: 40000, dport: NODEPORT, flags: "S", seq: 1 },
  });
  const miss = buildPacket({
    eth,
    ip4: { src: "172.31.255.2", dst: "10.200.0.1" },
    tcp: { sport: 40001, dport: 80, flags: "A", seq: 2, ack: 1 },
  });

  // Established flow under `repeat`: two external frontends whose only (node-local) backend is
  // the other one, P:30100 -> Q:30200 and Q:30200 -> P:30100. Once both flows are tracked, every
  // run of the repeat loop is a CT hit that rewrites address, port and checksums, and hands the
  // next run the other frontend: the whole established path, warm, with no rewrite undone.
  const pp = await pingPong(tcObjs[0]!);
  const ppPacket = (dst: string, dport: number, flags: "S" | "A") =>
    buildPacket({
      eth,
      ip4: { src: "172.31.255.3", dst },
      tcp: { sport: 40002, dport, flags, seq: flags === "S" ? 1 : 2, ack: flags === "S" ? 0 : 1 },
    });
  const ppAck = ppPacket(pp.p, pp.pPort, "A");

  // the path each case takes is checked once, for every object, before anything is timed
  const expectTo = (
    what: string,
    lb: Prog,
    data: Uint8Array,
    dst: string | RegExp,
    dport: number,
    repeat = 1,
  ) => {
    const rr = lb.testRun({ data, repeat });
    const p = parsePacket(rr.data);
    const sums = verifyChecksums(rr.data);
    const dstOk = typeof dst === "string" ? p.ip4?.dst === dst : dst.test(p.ip4?.dst ?? "");
    if (rr.retval !== 0 || !dstOk || p.tcp?.dport !== dport || !sums.ok)
      throw new Error(
        `${what}: expected TC_ACT_OK to ${dst}:${dport} with valid checksums, got verdict ${rr.retval}, ` +
          `dst ${p.ip4?.dst}:${p.tcp?.dport} ${sums.errors.join("; ")}`,
      );
  };
  const backend = /^10\.128\./;
  for (const [i, lb] of lbs.entries()) {
    const what = (c: string) => `${objects[i]}: ${c}`;
    expectTo(what("SYN opening the established flow"), lb, ackSyn, backend, 8080);
    expectTo(what("ACK of the established flow"), lb, ack, backend, 8080);
    expectTo(what("packet to no service"), lb, miss, "10.200.0.1", 80);
    expectTo(what("SYN of a new flow"), lb, syn(0x7fffff00 + i), backend, 8080);
    expectTo(what("ping-pong SYN to P"), lb, ppPacket(pp.p, pp.pPort, "S"), pp.q, pp.qPort);
    expectTo(what("ping-pong SYN to Q"), lb, ppPacket(pp.q, pp.qPort, "S"), pp.p, pp.pPort);
    expectTo(what("ping-pong ACK, repeat=2"), lb, ppAck, pp.p, pp.pPort, 2);
    expectTo(what("ping-pong ACK, repeat=3"), lb, ppAck, pp.q, pp.qPort, 3);
  }

  // XDP: the paths checked once before timing
  const XDP_PASS = 2;
  const XDP_REDIRECT = 4;
  const xdpSyn = (i: number) =>
    buildPacket({
      eth,
      ip4: { src: client(i >>> 14), dst: NODE_ADDR },
      tcp: { sport: 10000 + (i & 0x3fff), dport: REMOTE_NODEPORT, flags: "S", seq: 1 },
    });
  const xdpAck = buildPacket({
    eth,
    ip4: { src: "172.31.255.4", dst: NODE_ADDR },
    tcp: { sport: 40003, dport: REMOTE_NODEPORT, flags: "A", seq: 2, ack: 1 },
  });
  const xdpExpect = (what: string, data: Uint8Array, want: number, dst: RegExp | string, src?: string) => {
    const rr = xdpRun(xdp, data);
    const p = parsePacket(rr.data);
    const sums = verifyChecksums(rr.data);
    const dstOk = typeof dst === "string" ? p.ip4?.dst === dst : dst.test(p.ip4?.dst ?? "");
    if (rr.retval !== want || !dstOk || (src && p.ip4?.src !== src) || !sums.ok)
      throw new Error(
        `xdp ${what}: expected verdict ${want} to ${dst} from ${src ?? "the client"} with valid checksums, got ` +
          `${rr.retval}, ${p.ip4?.src} -> ${p.ip4?.dst}:${p.tcp?.dport} ${sums.errors.join("; ")}`,
      );
  };
  xdpExpect("packet to no service", miss, XDP_PASS, "10.200.0.1");
  xdpExpect(
    "SYN opening the established flow",
    buildPacket({
      eth,
      ip4: { src: "172.31.255.4", dst: NODE_ADDR },
      tcp: { sport: 40003, dport: REMOTE_NODEPORT, flags: "S", seq: 1 },
    }),
    XDP_REDIRECT,
    /^10\.255\./,
    NODE_ADDR,
  );
  xdpExpect("ACK of the established flow", xdpAck, XDP_REDIRECT, /^10\.255\./, NODE_ADDR);
  xdpExpect("SYN of a new flow", xdpSyn(0x7ffff000), XDP_REDIRECT, /^10\.255\./, NODE_ADDR);
  if (xdpRun(xdpNoop, miss).retval !== XDP_PASS) throw new Error("no-op XDP program: expected XDP_PASS");

  const perCall = (prog: Prog, data: (i: number) => Uint8Array): CaseResult => {
    let total = 0;
    for (let i = 0; i < packets; i++) total += prog.testRun({ data: data(i) }).durationNs;
    return { ns: total / packets, how: "per-call" };
  };
  const repeated = (prog: Prog, data: Uint8Array): CaseResult => ({
    ns: prog.testRun({ data, repeat: packets }).durationNs,
    how: "repeat",
  });

  // every SYN is built before the timing starts (building one between two calls would evict the
  // program's code and maps from the caches and be charged to the next call); each object gets
  // its own 5-tuples, so every SYN opens a new flow
  const syns = lbs.map((_, k) => Array.from({ length: packets }, (_, i) => syn(k * packets + i + 1)));
  // warm-up (page in the code paths and map buckets)
  for (let i = 0; i < 1000; i++) noop.testRun({ data: miss });
  // case by case, the objects back to back, so that a drift of the machine hits them alike
  const res: InnerResult = {};
  const put = (k: number, c: string, r: CaseResult) => {
    res[objects[k]!] ??= {};
    res[objects[k]!]![c] = r;
  };
  const each = (c: string, f: (lb: Prog, k: number) => CaseResult) => {
    for (const [k, lb] of lbs.entries()) put(k, c, f(lb, k));
  };
  // per-call cases run the objects interleaved, 1,000 calls at a time: the SYNs fill the shared
  // CT map, and the object run second would otherwise pay all the LRU evictions
  const eachCall = (c: string, data: (k: number, i: number) => Uint8Array) => {
    const total = lbs.map(() => 0);
    for (let i0 = 0; i0 < packets; i0 += 1000)
      for (const [k, lb] of lbs.entries())
        for (let i = i0; i < Math.min(i0 + 1000, packets); i++)
          total[k]! += lb.testRun({ data: data(k, i) }).durationNs;
    for (const k of lbs.keys()) put(k, c, { ns: total[k]! / packets, how: "per-call" });
  };
  const noopR = repeated(noop, miss);
  each("missRepeat", (lb) => repeated(lb, miss));
  each("estRepeat", (lb) => repeated(lb, ppAck));
  const noopC = perCall(noop, () => miss);
  eachCall("missCall", () => miss);
  eachCall("synNew", (k, i) => syns[k]![i]!);
  eachCall("ackEstablished", () => ack);
  // XDP, per call; the frames are built before timing
  const xdpFlows = Math.min(packets, XDP_NEW_FLOWS_MAX);
  const xdpSyns = Array.from({ length: xdpFlows }, (_, i) => xdpSyn(i + 1));
  const xdpPerCall = (prog: Prog, n: number, data: (i: number) => Uint8Array): CaseResult => {
    let total = 0;
    for (let i = 0; i < n; i++) total += xdpRun(prog, data(i)).durationNs;
    return { ns: total / n, how: "per-call" };
  };
  const xdpNoopC = xdpPerCall(xdpNoop, packets, () => miss);
  const xdpMissC = xdpPerCall(xdp, packets, () => miss);
  const xdpSynC = xdpPerCall(xdp, xdpFlows, (i) => xdpSyns[i]!);
  const xdpAckC = xdpPerCall(xdp, packets, () => xdpAck);
  for (const k of lbs.keys()) {
    put(k, "noopRepeat", noopR);
    put(k, "noopCall", noopC);
    put(k, "xdpNoopCall", xdpNoopC);
    put(k, "xdpMissCall", xdpMissC);
    put(k, "xdpSynNew", xdpSynC);
    put(k, "xdpAckEstablished", xdpAckC);
  }
  for (const o of tcObjs) o.close();
  xdpObj.close();
  probeObj.close();
  console.log(JSON.stringify(res));
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      services: { type: "string", default: "1,10000" },
      endpoints: { type: "string", default: "10" },
      packets: { type: "string", default: "100000" },
      object: { type: "string", default: join(REPO, ".build/bpf/tc.bpf.o") },
      baseline: { type: "string" },
      xdp: { type: "string", default: join(REPO, ".build/bpf/xdp.bpf.o") },
      dev: { type: "string" },
      kpr: { type: "string", default: KPR },
      inner: { type: "boolean", default: false },
      config: { type: "string" },
    },
  });
  const packets = Number(values.packets);
  // the measured objects, baseline first
  const objects = [...(values.baseline ? [values.baseline] : []), values.object];
  if (values.inner) return inner(values.config!, packets, objects, values.xdp, values.dev!);
  const kpr = values.kpr;

  const sizes = values.services.split(",").map(Number);
  const E = Number(values.endpoints);
  if (sizes.some((n) => !Number.isInteger(n) || n < 1) || !Number.isInteger(E) || E < 1 || !(packets >= 1)) {
    console.error(
      "bench/datapath: --services wants a list of positive integers, --endpoints/--packets integers",
    );
    process.exit(2);
  }
  const { cleanup, prefix, tmp } = startBench("datapath", {
    tools: ["ip", "nsenter"],
    files: [kpr, ...objects, values.xdp, join(REPO, ".build/bpf/probe.bpf.o")],
  });

  const results: { services: number; frontends: string; r: InnerResult }[] = [];
  for (const [i, n] of sizes.entries()) {
    const ns = createNetns(cleanup, `${prefix}-s${i}`);
    vethInNs(ns, `${prefix}${i}a`, `${prefix}${i}b`, `${NODE_ADDR}/24`);
    // the pod CIDR is behind a gateway with a known MAC: remote backends resolve in the FIB
    runSync([
      "ip",
      "-n",
      ns,
      "neigh",
      "add",
      GW.addr,
      "lladdr",
      GW.mac,
      "dev",
      `${prefix}${i}a`,
      "nud",
      "permanent",
    ]);
    runSync(["ip", "-n", ns, "route", "add", CLUSTER_CIDR, "via", GW.addr, "dev", `${prefix}${i}a`]);
    runSync(["sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"], { ns });
    const bpfRoot = `/sys/fs/bpf/${prefix}s${i}`;
    const set = makeServiceSet({ services: n, endpoints: E, nodeName: NODE });
    // service 0 is the measured NodePort; all its backends run on this node (DNAT only)
    const s0 = set[0]!;
    set[0] = {
      ...s0,
      protocol: "TCP",
      port: 80,
      targetPort: 8080,
      portName: "http",
      nodePort: NODEPORT,
      endpoints: s0.endpoints.map((e) => ({ ...e, nodeName: NODE })),
    };
    // one more NodePort whose backends all run on other nodes: the XDP forwarding cases
    set.push({
      namespace: "bench-xdp",
      name: "remote",
      portName: "http",
      clusterIP: "10.111.255.254",
      port: 80,
      targetPort: 8080,
      protocol: "TCP",
      nodePort: REMOTE_NODEPORT,
      endpoints: Array.from({ length: E }, (_, j) => ({ ip: `10.255.0.${j + 1}`, nodeName: "peer-remote" })),
    });
    const dir = join(tmp, `m${i}`);
    writeManifests(dir, set, { format: "json", nodeName: NODE, nodeAddress: NODE_ADDR });
    const frontends = set.length + 3 * set.filter((s) => s.nodePort).length;
    let lbMapMax = 65536;
    while (lbMapMax < frontends * (E + 1) * 1.2) lbMapMax *= 2;
    const cfgDir = join(tmp, `c${i}`);
    mkdirSync(cfgDir);
    const cfgPath = writeKprConfig(cfgDir, {
      bpf: { root: bpfRoot, lbMapMax },
      socketLB: { enabled: false },
      devices: [`${prefix}${i}a`],
      nodeName: NODE,
    });
    cleanupKprRoot(cleanup, ns, cfgPath, bpfRoot);
    console.log(`datapath: ${n} services (${frontends} frontends): kpr apply …`);
    await run([kpr, "apply", "-f", dir, "--config", cfgPath], { ns, env: { KPR_LOG_LEVEL: "warn" } });
    console.log(`datapath: ${n} services: ${packets} packets per case …`);
    const r = await run(
      [
        process.execPath,
        join(REPO, "bench", "datapath.ts"),
        "--inner",
        "--config",
        cfgPath,
        "--packets",
        String(packets),
        "--object",
        values.object,
        "--xdp",
        values.xdp,
        "--dev",
        `${prefix}${i}a`,
        ...(values.baseline ? ["--baseline", values.baseline] : []),
      ],
      {
        ns,
      },
    );
    results.push({
      services: n,
      frontends: String(frontends),
      r: JSON.parse(r.stdout.trim().split("\n").pop()!),
    });
  }

  const cases: [string, string][] = [
    ["noopRepeat", `no-op tc program (repeat=${packets})`],
    ["missRepeat", `kpr: packet to no service (repeat=${packets})`],
    ["estRepeat", `kpr: established flow, DNAT ping-pong (repeat=${packets})`],
    ["noopCall", "no-op tc program (one packet per call)"],
    ["missCall", "kpr: packet to no service (per call)"],
    ["synNew", "kpr: NodePort SYN, new flow, local backend (per call)"],
    ["ackEstablished", "kpr: NodePort ACK, established flow (per call)"],
    ["xdpNoopCall", "no-op XDP program (one packet per call)"],
    ["xdpMissCall", "kpr XDP: packet to no service (per call)"],
    ["xdpSynNew", "kpr XDP: NodePort SYN, new flow, remote backend, SNAT (per call)"],
    ["xdpAckEstablished", "kpr XDP: NodePort ACK, established flow, remote backend, SNAT (per call)"],
  ];
  // columns: each service count × each object; then, for the largest count, each object's cost
  // above the no-op of the same mode, and after/before when a baseline was measured
  const label = (o: string) => (objects.length > 1 ? (o === values.baseline ? " before" : " after") : "");
  const headers = ["case (ns/packet)"];
  for (const x of results) for (const o of objects) headers.push(`${x.services} svc${label(o)}`);
  for (const o of objects) headers.push(`minus no-op${label(o)}`);
  if (objects.length > 1) headers.push("after/before (minus no-op)");
  const last = results.at(-1)!.r;
  const above = (o: string, k: string): number | undefined => {
    const c = last[o]?.[k];
    if (!c || k.startsWith("noop") || k === "xdpNoopCall") return undefined;
    const noopKey = k.startsWith("xdp") ? "xdpNoopCall" : c.how === "repeat" ? "noopRepeat" : "noopCall";
    return c.ns - (last[o]?.[noopKey]?.ns ?? 0);
  };
  console.log("");
  printTable(
    headers,
    cases.map(([k, text]) => {
      const row = [text];
      for (const x of results) for (const o of objects) row.push(x.r[o]?.[k]?.ns.toFixed(1) ?? "—");
      for (const o of objects) row.push(above(o, k)?.toFixed(1) ?? "");
      if (objects.length > 1)
        row.push(k.startsWith("noop") ? "" : fmtRatio(above(values.object, k), above(values.baseline!, k)));
      return row;
    }),
  );
  // XDP next to Katran's XDP balancer, both net of a no-op XDP program, one packet per call
  const KATRAN: [string, string, [number, number]][] = [
    ["xdpSynNew", "new flow (Katran: IPIP encap + LRU insert; kpr: SNAT)", [173, 176]],
    ["xdpAckEstablished", "established flow", [76, 83]],
    ["xdpMissCall", "packet to no service / VIP", [27, 29]],
  ];
  const net = (r: InnerResult, k: string) => {
    const o = r[values.object];
    const c = o?.[k];
    const n = o?.xdpNoopCall;
    return c && n ? c.ns - n.ns : undefined;
  };
  console.log("");
  printTable(
    [
      "XDP, net of no-op XDP (ns/packet)",
      ...results.map((x) => `kpr ${x.services} svc`),
      "Katran",
      "kpr / Katran",
    ],
    KATRAN.map(([k, text, [lo, hi]]) => [
      text,
      ...results.map((x) => net(x.r, k)?.toFixed(1) ?? "—"),
      `${lo}–${hi}`,
      fmtRatio(net(last, k), hi),
    ]),
  );
  console.log("");
  console.log(
    "Katran: Facebook's XDP load balancer measured on this machine's kernel with the same one-call-per-packet " +
      "method (CONVENTIONS.md field notes), flat from 1 to 10,000 VIPs. kpr / Katran uses the largest service count " +
      "and Katran's upper figure.",
  );
  console.log("");
  console.log(
    "repeat rows: one call, the program run N times on one skb (warm caches); per-call rows: one call " +
      "per packet, each including test_run's fixed cost of one run (two clock reads, bh disable) and " +
      "cold caches after the syscall; compare each with the no-op of its mode. 'minus no-op' uses the " +
      `largest service count${objects.length > 1 ? `; before = ${values.baseline}, after = ${values.object}` : ""}.`,
  );
}

try {
  await main();
} catch (e) {
  console.error(`bench/datapath: ${(e as Error).message}`);
  process.exitCode = 1;
}
