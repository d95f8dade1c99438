/**
 * Datapath benchmark: ns per packet of kpr's tc ingress program under BPF_PROG_TEST_RUN, with 1
 * and with 10,000 services programmed by `kpr apply`, next to a no-op tc program, in one run.
 *
 *   bun bench/datapath.ts [--services 1,10000] [--endpoints 10] [--packets 100000]
 *
 * Cases per service count:
 *   - no-op tc program (bpf/probe.bpf.c's probe_tc): the cost of BPF_PROG_TEST_RUN itself;
 *   - packet to no service (lookup miss, passed);
 *   - TCP SYN of a new flow to a NodePort frontend whose backends are all local (selection,
 *     CT insert, DNAT, checksums);
 *   - TCP ACK of an established flow (CT hit, DNAT).
 * A rewriting program is run once per packet (repeat=1, fresh packet, new 5-tuple per SYN) and
 * averaged over --packets calls, because test_run's repeat loop runs on the same skb, which the
 * first run has already rewritten. The no-op and the miss, which do not rewrite, are also run
 * with repeat=--packets in one call. Each service count gets its own netns and bpf root; the
 * programs are loaded by this script on kpr's pinned maps, inside that netns.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  Cleanup,
  cleanupKprRoot,
  createNetns,
  ensureBpffs,
  fmtRatio,
  have,
  KPR,
  makeServiceSet,
  printTable,
  REPO,
  run,
  uniquePrefix,
  vethInNs,
  writeKprConfig,
  writeManifests,
} from "./_lib.ts";

const NODE = "bench-node";
const NODE_ADDR = "192.168.77.1";
const NODEPORT = 30000;

interface CaseResult {
  /** mean kernel-measured ns per run */
  ns: number;
  /** how it was run */
  how: "per-call" | "repeat";
}

type InnerResult = Record<string, CaseResult>;

// ---------------------------------------------------------------------------------------------
// inner mode: inside the netns, load the programs on the pinned maps and run them

async function inner(cfgPath: string, packets: number): Promise<void> {
  const { loadConfig } = await import("../src/config/load.ts");
  const { openObject, BpfMap } = await import("../src/datapath/bpf.ts");
  const { buildPacket, parsePacket } = await import("../test/harness/packet.ts");
  const cfg = loadConfig(cfgPath);
  const mapsDir = `${cfg.bpf.root}/maps`;

  const tcObj = openObject(new Uint8Array(readFileSync(join(REPO, ".build/bpf/tc.bpf.o"))), "kpr_tc");
  // share kpr's pinned maps: same sizes as the pins, reuse only (no new pins)
  const pinned = tcObj.maps().filter((m) => existsSync(`${mapsDir}/${m}`));
  for (const m of pinned) {
    using pm = BpfMap.openPinned(`${mapsDir}/${m}`);
    tcObj.setMaxEntries(m, pm.maxEntries);
  }
  tcObj.pinMaps(mapsDir, pinned);
  tcObj.load();
  const probeObj = openObject(
    new Uint8Array(readFileSync(join(REPO, ".build/bpf/probe.bpf.o"))),
    "kpr_probe",
  );
  probeObj.load();
  const lb = tcObj.program("kpr_tc_ingress");
  const noop = probeObj.program("probe_tc");

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

  // the path each case takes is checked once before it is timed
  const expectDnat = (what: string, out: Uint8Array, retval: number) => {
    const p = parsePacket(out);
    if (retval !== 0 || !p.ip4?.dst.startsWith("10.128.") || p.tcp?.dport !== 8080)
      throw new Error(
        `${what}: expected TC_ACT_OK and DNAT to a 10.128.x.x:8080 backend, got verdict ${retval}, dst ${p.ip4?.dst}:${p.tcp?.dport}`,
      );
  };
  let r = lb.testRun({ data: ackSyn });
  expectDnat("SYN opening the established flow", r.data, r.retval);
  r = lb.testRun({ data: ack });
  expectDnat("ACK of the established flow", r.data, r.retval);
  r = lb.testRun({ data: miss });
  if (r.retval !== 0 || parsePacket(r.data).ip4?.dst !== "10.200.0.1")
    throw new Error(`packet to no service: expected TC_ACT_OK unchanged, got verdict ${r.retval}`);

  const perCall = (prog: typeof lb, data: (i: number) => Uint8Array): CaseResult => {
    let total = 0;
    for (let i = 0; i < packets; i++) total += prog.testRun({ data: data(i) }).durationNs;
    return { ns: total / packets, how: "per-call" };
  };
  const repeated = (prog: typeof lb, data: Uint8Array): CaseResult => ({
    ns: prog.testRun({ data, repeat: packets }).durationNs,
    how: "repeat",
  });

  // warm-up (page in the code paths and map buckets)
  for (let i = 0; i < 1000; i++) noop.testRun({ data: miss });
  const res: InnerResult = {
    noopRepeat: repeated(noop, miss),
    missRepeat: repeated(lb, miss),
    noopCall: perCall(noop, () => miss),
    missCall: perCall(lb, () => miss),
    synNew: perCall(lb, (i) => syn(i + 1)),
    ackEstablished: perCall(lb, () => ack),
  };
  r = lb.testRun({ data: syn(packets + 7) });
  expectDnat("SYN of a new flow", r.data, r.retval);
  tcObj.close();
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
      inner: { type: "boolean", default: false },
      config: { type: "string" },
    },
  });
  const packets = Number(values.packets);
  if (values.inner) return inner(values.config!, packets);

  const sizes = values.services.split(",").map(Number);
  const E = Number(values.endpoints);
  if (sizes.some((n) => !Number.isInteger(n) || n < 1) || !Number.isInteger(E) || E < 1 || !(packets >= 1)) {
    console.error(
      "bench/datapath: --services wants a list of positive integers, --endpoints/--packets integers",
    );
    process.exit(2);
  }
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push("root");
  for (const t of ["ip", "nsenter"]) if (!have(t)) missing.push(t);
  if (!existsSync(KPR)) missing.push("dist/kpr (run: bun build.ts)");
  for (const o of ["tc", "probe"])
    if (!existsSync(join(REPO, ".build/bpf", `${o}.bpf.o`)))
      missing.push(`.build/bpf/${o}.bpf.o (run: bun build.ts)`);
  if (missing.length > 0) {
    console.error(`bench/datapath: cannot run, missing: ${missing.join(", ")}`);
    process.exit(1);
  }

  const cleanup = new Cleanup();
  const prefix = uniquePrefix("kb");
  const tmp = mkdtempSync(join(tmpdir(), `${prefix}-`));
  cleanup.add(`remove ${tmp}`, () => rmSync(tmp, { recursive: true, force: true }));
  ensureBpffs();

  const results: { services: number; frontends: string; r: InnerResult }[] = [];
  for (const [i, n] of sizes.entries()) {
    const ns = createNetns(cleanup, `${prefix}-s${i}`);
    vethInNs(ns, `${prefix}${i}a`, `${prefix}${i}b`, `${NODE_ADDR}/24`);
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
    await run([KPR, "apply", "-f", dir, "--config", cfgPath], { ns, env: { KPR_LOG_LEVEL: "warn" } });
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
    ["noopCall", "no-op tc program (one packet per call)"],
    ["missCall", "kpr: packet to no service (per call)"],
    ["synNew", "kpr: NodePort SYN, new flow, local backend (per call)"],
    ["ackEstablished", "kpr: NodePort ACK, established flow (per call)"],
  ];
  console.log("");
  const base = results[0]!;
  const headers = ["case (ns/packet)", ...results.map((x) => `${x.services} svc`)];
  if (results.length > 1) headers.push(`${results.at(-1)!.services}/${base.services} svc`);
  headers.push("vs no-op (same mode)", "minus no-op");
  printTable(
    headers,
    cases.map(([k, label]) => {
      const last = results.at(-1)!.r;
      const noopKey = last[k]?.how === "repeat" ? "noopRepeat" : "noopCall";
      const row = [label, ...results.map((x) => (x.r[k] ? x.r[k].ns.toFixed(1) : "—"))];
      if (results.length > 1) row.push(fmtRatio(last[k]?.ns, base.r[k]?.ns));
      row.push(fmtRatio(last[k]?.ns, last[noopKey]?.ns));
      row.push(k.startsWith("noop") ? "" : ((last[k]?.ns ?? 0) - (last[noopKey]?.ns ?? 0)).toFixed(1));
      return row;
    }),
  );
  console.log("");
  console.log(
    "Per-call rows include test_run's fixed cost of one run (timer, bh disable); compare them with the " +
      "per-call no-op. The last two columns use the largest service count.",
  );
}

try {
  await main();
} catch (e) {
  console.error(`bench/datapath: ${(e as Error).message}`);
  process.exitCode = 1;
}
