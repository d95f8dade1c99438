/**
 * Agent benchmark: `kpr run --manifest DIR` following N services × E endpoints (one manifest file
 * per service), timed for one-endpoint changes — from the event the agent receives to its last
 * map write, and from the file's replacement (rename, as an editor saves) to that write — next to
 * kube-proxy nftables' incremental transaction for the same changes (`nft -f` of the one-service
 * update that bench/apply.ts also times), plus the agent's steady-state resident memory. Each
 * size runs in network namespaces this script creates and removes.
 *
 *   bun bench/agent.ts [--services 1000,10000] [--endpoints 10] [--changes 100] [--skip nft]
 *
 * Needs root, dist/kpr (bun build.ts), nft, nsenter. Removes everything it created (netns, bpffs
 * dir, cgroup, temp dir, the agent process) at the end, on failure and on Ctrl-C.
 */
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
} from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  type BenchService,
  cleanupKprRoot,
  createCgroup,
  createNetns,
  fmtMs,
  fmtRatio,
  KPR,
  makeServiceSet,
  median,
  nftFull,
  nftOneServiceUpdate,
  printTable,
  run,
  startBench,
  vethInNs,
  withOneEndpointChanged,
  writeKprConfig,
  writeManifests,
} from "./_lib.ts";

const NODE = "bench-node";
const NODE_ADDR = "192.168.77.1";

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** Epoch milliseconds with sub-millisecond precision (comparable across processes). */
function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

interface Timing {
  firstEventEpochMs: number;
  lastWriteEpochMs: number;
  eventToLastWriteMs: number;
  /** CPU time of the sync (process.cpuUsage, to the end of the sync's bookkeeping) */
  syncCpuMs: number;
  writes: number;
  incremental: boolean;
}

/** The agent's log, read as it grows: its "sync timing" lines and first-sync line. */
class AgentLog {
  private offset = 0;
  private buf = "";
  readonly timings: Timing[] = [];
  firstSync = false;
  errors: string[] = [];
  constructor(private readonly path: string) {}
  poll(): void {
    if (!existsSync(this.path)) return;
    const size = statSync(this.path).size;
    if (size <= this.offset) return;
    const chunk = Buffer.alloc(size - this.offset);
    const fd = openSync(this.path, "r");
    try {
      readSync(fd, chunk, 0, chunk.length, this.offset);
    } finally {
      closeSync(fd);
    }
    this.buf += chunk.toString("utf8");
    this.offset = size;
    let nl = this.buf.indexOf("\n");
    while (nl >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      nl = this.buf.indexOf("\n");
      let msg = line;
      let level = "";
      try {
        const j = JSON.parse(line) as { msg: string; level: string };
        msg = j.msg;
        level = j.level;
      } catch {}
      if (msg.startsWith("sync timing ")) this.timings.push(JSON.parse(msg.slice(12)) as Timing);
      else if (msg.startsWith("first sync:")) this.firstSync = true;
      if (level === "error") this.errors.push(msg);
    }
  }
  async until<T>(what: string, f: () => T | undefined, ms: number): Promise<T> {
    const end = performance.now() + ms;
    for (;;) {
      this.poll();
      const v = f();
      if (v !== undefined) return v;
      if (this.errors.length > 0) throw new Error(`agent: ${this.errors.join("; ")}`);
      if (performance.now() > end) {
        const tail = readFileSync(this.path, "utf8").trimEnd().split("\n").slice(-8).join("\n");
        throw new Error(`timed out waiting for ${what}; the agent's last log lines:\n${tail}`);
      }
      await Bun.sleep(2);
    }
  }
}

interface SizeResult {
  services: number;
  endpoints: number;
  frontends: number;
  eventToWrite: number[];
  fileToWrite: number[];
  cpu: number[];
  writes: number[];
  rssMb: number;
  peakRssMb: number;
  firstSyncMs: number;
  nft: number[];
}

function rssOf(pid: number): { rss: number; hwm: number } {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? Number.NaN);
  return { rss: kb("VmRSS") / 1024, hwm: kb("VmHWM") / 1024 };
}

async function benchSize(
  N: number,
  E: number,
  changes: number,
  skipNft: boolean,
  ctx: ReturnType<typeof startBench>,
): Promise<SizeResult> {
  const { cleanup, prefix, tmp } = ctx;
  const tag = `${prefix}${N >= 1000 ? `${N / 1000}k` : N}`.slice(0, 12);
  const set = makeServiceSet({ services: N, endpoints: E, nodeName: NODE });
  const nNodePort = set.filter((s) => s.nodePort).length;
  const frontends = N + 3 * nNodePort;
  const dir = join(tmp, `${tag}-manifests`);
  const scratch = join(tmp, `${tag}-scratch`);
  writeManifests(dir, set, { format: "json", nodeName: NODE, nodeAddress: NODE_ADDR, perFile: 1 });
  const fileOf = (i: number) => join(dir, `services-${String(i).padStart(4, "0")}.json`);
  if (!existsSync(fileOf(N - 1))) throw new Error(`bench/agent: expected ${fileOf(N - 1)}`);
  // the changed services, spread over the set; each changes once (one endpoint moves)
  const order = Array.from({ length: changes }, (_, k) => (k * 7919 + 13) % N);
  const distinct = new Set(order).size === order.length;
  if (!distinct) throw new Error("bench/agent: --changes must not exceed --services");

  const ns = createNetns(cleanup, `${tag}-a`);
  vethInNs(ns, `${tag}a`, `${tag}b`, `${NODE_ADDR}/24`);
  const cgroupDir = createCgroup(cleanup, tag);
  const bpfRoot = `/sys/fs/bpf/${tag}`;
  mkdirSync(join(tmp, tag), { recursive: true });
  const lbMapMax = Math.max(65536, nextPow2(Math.ceil(frontends * (E + 1) * 1.2)));
  const cfgPath = writeKprConfig(join(tmp, tag), {
    bpf: { root: bpfRoot, lbMapMax },
    cgroup: { root: cgroupDir },
    devices: [`${tag}a`],
    nodeName: NODE,
    prometheus: { serveAddr: "" },
  });
  cleanupKprRoot(cleanup, ns, cfgPath, bpfRoot);
  const logPath = join(tmp, `${tag}-agent.log`);
  const t0 = performance.now();
  const proc = Bun.spawn(
    ["nsenter", `--net=/run/netns/${ns}`, "--", KPR, "run", "--config", cfgPath, "--manifest", dir],
    {
      stdin: "ignore",
      stdout: Bun.file(logPath),
      stderr: Bun.file(logPath),
      env: {
        ...process.env,
        KPR_LOG_LEVEL: "debug",
        KPR_LOG_FORMAT: "json",
        KPR_RUN_DIR: join(tmp, `${tag}-run`),
      },
    },
  );
  cleanup.add(`stop the agent (pid ${proc.pid})`, () => proc.kill("SIGKILL"));
  const log = new AgentLog(logPath);
  await log.until("the first sync", () => (log.firstSync ? true : undefined), 600_000);
  const firstSyncMs = performance.now() - t0;
  // let the start-up garbage go before measuring
  await Bun.sleep(2000);

  const eventToWrite: number[] = [];
  const fileToWrite: number[] = [];
  const writes: number[] = [];
  const cpu: number[] = [];
  for (const i of order) {
    const next = withOneEndpointChanged(set, i)[i]!;
    rmSync(scratch, { recursive: true, force: true });
    writeManifests(scratch, [next], { format: "json", nodeName: NODE, nodeAddress: NODE_ADDR, perFile: 1 });
    log.poll();
    const seen = log.timings.length;
    const at = epochMs();
    renameSync(join(scratch, "services-0000.json"), fileOf(i));
    const t = await log.until(
      `the sync of service ${i}`,
      () => (log.timings.length > seen ? log.timings[log.timings.length - 1] : undefined),
      30_000,
    );
    if (!t.incremental) throw new Error(`bench/agent: the change of service ${i} made a full sync`);
    eventToWrite.push(t.eventToLastWriteMs);
    fileToWrite.push(t.lastWriteEpochMs - at);
    writes.push(t.writes);
    cpu.push(t.syncCpuMs);
    await Bun.sleep(20);
  }
  if (process.env.KPR_BENCH_SAMPLES)
    console.log(`event → last write per change (ms): ${eventToWrite.map((x) => x.toFixed(1)).join(" ")}`);
  await Bun.sleep(1500);
  const mem = rssOf(proc.pid);
  proc.kill("SIGTERM");
  const code = await proc.exited;
  if (code !== 0) throw new Error(`bench/agent: kpr run exited ${code} on SIGTERM (log ${logPath})`);

  const nft: number[] = [];
  if (!skipNft) {
    const nns = createNetns(cleanup, `${tag}-n`);
    await run(["nft", "-f", "-"], { ns: nns, input: nftFull(set) });
    for (const i of order) {
      const next: BenchService = withOneEndpointChanged(set, i)[i]!;
      const r = await run(["nft", "-f", "-"], { ns: nns, input: nftOneServiceUpdate(set[i]!, next) });
      nft.push(r.ms);
    }
  }
  return {
    services: N,
    endpoints: E,
    frontends,
    eventToWrite,
    fileToWrite,
    cpu,
    writes,
    rssMb: mem.rss,
    peakRssMb: mem.hwm,
    firstSyncMs,
    nft,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      services: { type: "string", default: "1000,10000" },
      endpoints: { type: "string", default: "10" },
      changes: { type: "string", default: "100" },
      skip: { type: "string", default: "" },
    },
  });
  const sizes = values.services.split(",").map(Number);
  const E = Number(values.endpoints);
  const changes = Number(values.changes);
  if (sizes.some((n) => !Number.isInteger(n) || n < 1) || !Number.isInteger(E) || E < 1 || changes < 1) {
    console.error("bench/agent: --services (a comma list), --endpoints and --changes want positive integers");
    process.exit(2);
  }
  const skipNft = values.skip.split(",").includes("nft");
  const ctx = startBench("agent", { tools: ["ip", "nsenter", ...(skipNft ? [] : ["nft"])], files: [KPR] });
  const results: SizeResult[] = [];
  for (const n of sizes) {
    console.log(
      `bench/agent: ${n} services × ${E} endpoints, ${Math.min(changes, n)} one-endpoint changes …`,
    );
    results.push(await benchSize(n, E, Math.min(changes, n), skipNft, ctx));
  }
  const rows = results.map((r) => {
    const kMed = median(r.eventToWrite);
    const nMed = r.nft.length > 0 ? median(r.nft) : undefined;
    return [
      `${r.services} × ${r.endpoints} (${r.frontends} frontends)`,
      `${fmtMs(kMed)} / ${fmtMs(percentile(r.eventToWrite, 99))}`,
      `${fmtMs(median(r.fileToWrite))} / ${fmtMs(percentile(r.fileToWrite, 99))}`,
      `${fmtMs(median(r.cpu))} / ${fmtMs(percentile(r.cpu, 99))}`,
      `${median(r.writes)}`,
      r.nft.length > 0 ? `${fmtMs(nMed)} / ${fmtMs(percentile(r.nft, 99))}` : "—",
      fmtRatio(nMed, kMed),
      `${r.rssMb.toFixed(0)} MB (peak ${r.peakRssMb.toFixed(0)} MB)`,
      fmtMs(r.firstSyncMs),
    ];
  });
  printTable(
    [
      "services × endpoints",
      "kpr event → last write (median / p99)",
      "kpr file rename → last write",
      "kpr CPU per sync",
      "map writes",
      "nft -f one-service update",
      "nft/kpr",
      "kpr run RSS (steady)",
      "start → first sync",
    ],
    rows,
  );
  console.log(
    "\nkpr: `kpr run --manifest` with one file per service; the event is the agent's receipt of the change " +
      "(the manifest source's onChange), the last write its last map write of that sync (from its debug log). " +
      "nft: kube-proxy nftables' incremental transaction for the same change, `nft -f` process included as in bench/apply.ts. " +
      "aim: median ≤ 5 ms, p99 ≤ 20 ms, RSS ≤ 150 MB at 10000 × 10.",
  );
  ctx.cleanup.runAll();
}

await main();
