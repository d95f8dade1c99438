#!/usr/bin/env bun
/**
 * Maglev (loadBalancer.algorithm=maglev), two parts, each side by side in one run:
 *
 * - compute (default, no root): src/lb/maglev.ts alone, N north-south frontends × E backends at
 *   table size M: every table from scratch (first apply), again with nothing changed (the
 *   per-frontend cache; across one-shot applies kpr_lb4_mgsig plays that role), and with one
 *   frontend's backends changed. Wall and CPU time (the machine is shared: wall time includes
 *   waiting for a CPU).
 * - --apply (root, dist/kpr): the whole `kpr apply` of N services × E endpoints, each with one
 *   ExternalIP (a north-south frontend that gets a table), on a fresh node with `random` and
 *   with `maglev`, each in its own netns/bpffs root/cgroup: first apply, re-apply with nothing
 *   changed, re-apply with one service's endpoint changed; the maglev step's own time is read
 *   from kpr's debug log.
 *
 * Usage: bun bench/maglev.ts [frontends=10000] [backends=10] [M=16381]
 *        bun bench/maglev.ts --apply [services=10000] [endpoints=10]
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DEFAULT_HASH_SEED, MaglevTables, parseHashSeed } from "../src/lb/maglev.ts";
import {
  cleanupKprRoot,
  createCgroup,
  createNetns,
  fmtMs,
  fmtRatio,
  KPR,
  printTable,
  run,
  startBench,
  vethInNs,
  writeKprConfig,
} from "./_lib.ts";

const args = process.argv.slice(2);
const applyMode = args[0] === "--apply";
const nums = (applyMode ? args.slice(1) : args).map(Number);
const n = nums[0] ?? 10_000;
const e = nums[1] ?? 10;
const m = nums[2] ?? 16381;
if (![n, e, m].every((x) => Number.isInteger(x) && x > 0)) {
  console.error("bench/maglev: frontends, backends and M must be positive integers");
  process.exit(2);
}
const ip4 = (v: number) => `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
const POD_BASE = ((10 << 24) | (128 << 16)) >>> 0;

function compute(): void {
  const seed = parseHashSeed(DEFAULT_HASH_SEED);
  const sets = Array.from({ length: n }, (_, i) =>
    Array.from({ length: e }, (_, j) => `${ip4(POD_BASE + i * e + j + 1)}:8080`),
  );
  const tables = new MaglevTables(m, seed);
  const time = (f: () => void) => {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    f();
    const c = process.cpuUsage(c0);
    return { wall: performance.now() - t0, cpu: (c.user + c.system) / 1000 };
  };
  const all = () => {
    for (const [i, s] of sets.entries()) tables.table(`fe-${i}`, s);
  };
  const first = time(all);
  const firstComputed = tables.computed;
  const again = time(all);
  sets[n >> 1] = sets[n >> 1]!.slice(1);
  const before = tables.computed;
  const one = time(all);
  printTable(
    ["run", "tables computed", "wall ms", "CPU ms", "CPU ms per table"],
    [
      [
        "first apply (every table)",
        String(firstComputed),
        first.wall.toFixed(0),
        first.cpu.toFixed(0),
        (first.cpu / firstComputed).toFixed(3),
      ],
      ["nothing changed", "0", again.wall.toFixed(1), again.cpu.toFixed(1), "—"],
      [
        "one frontend's backends changed",
        String(tables.computed - before),
        one.wall.toFixed(1),
        one.cpu.toFixed(1),
        "—",
      ],
    ],
  );
  console.log(`\n${n} frontends × ${e} backends, M = ${m}; one process, one core.`);
}

/** N services × E endpoints, each with one ExternalIP, as JSON Lists of 1,000 services. */
function writeSet(dir: string, node: string, changed?: number): void {
  mkdirSync(dir, { recursive: true });
  const nodeObj = {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: node, labels: { "kubernetes.io/hostname": node } },
    status: { addresses: [{ type: "InternalIP", address: "192.168.77.1" }] },
  };
  writeFileSync(join(dir, "node.json"), JSON.stringify({ apiVersion: "v1", kind: "List", items: [nodeObj] }));
  for (let lo = 0; lo < n; lo += 1000) {
    const items: unknown[] = [];
    for (let i = lo; i < Math.min(n, lo + 1000); i++) {
      const name = `svc-${i}`;
      const namespace = `bench${i % 10}`;
      items.push({
        apiVersion: "v1",
        kind: "Service",
        metadata: { name, namespace },
        spec: {
          type: "ClusterIP",
          clusterIP: ip4(((10 << 24) | (96 << 16)) + i + 1),
          externalIPs: [ip4(((172 << 24) | (20 << 16)) + i + 1)],
          selector: { app: name },
          ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }],
        },
      });
      items.push({
        apiVersion: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        metadata: { name: `${name}-abcde`, namespace, labels: { "kubernetes.io/service-name": name } },
        addressType: "IPv4",
        ports: [{ name: "http", port: 8080, protocol: "TCP" }],
        endpoints: Array.from({ length: e }, (_, j) => ({
          addresses: [ip4(POD_BASE + i * e + j + 1 + (i === changed && j === 0 ? 1 << 22 : 0))],
          conditions: { ready: true, serving: true, terminating: false },
          nodeName: j % 3 === 0 ? node : `peer-${j % 2}`,
        })),
      });
    }
    writeFileSync(
      join(dir, `services-${lo / 1000}.json`),
      JSON.stringify({ apiVersion: "v1", kind: "List", items }),
    );
  }
}

async function applyBench(): Promise<void> {
  const { cleanup, prefix, tmp } = startBench("maglev", { tools: ["ip", "nsenter"], files: [KPR] });
  const node = "bench-node";
  const dirA = join(tmp, "a");
  const dirB = join(tmp, "b");
  writeSet(dirA, node);
  writeSet(dirB, node, n >> 1);
  const lbMapMax = Math.max(65536, 2 ** Math.ceil(Math.log2(2 * n * (e + 1) * 1.2)));
  type Row = { first: number; same: number; changed: number; log: string[] };
  const results: Record<string, Row> = {};
  for (const algorithm of ["random", "maglev"] as const) {
    const tag = algorithm === "random" ? "r" : "m";
    const ns = createNetns(cleanup, `${prefix}-${tag}`);
    vethInNs(ns, `${prefix}${tag}a`, `${prefix}${tag}b`, "192.168.77.1/24");
    const cgroupDir = createCgroup(cleanup, `${prefix}${tag}`);
    const bpfRoot = `/sys/fs/bpf/${prefix}${tag}`;
    const dir = join(tmp, tag);
    mkdirSync(dir);
    const cfgPath = writeKprConfig(dir, {
      bpf: { root: bpfRoot, lbMapMax },
      cgroup: { root: cgroupDir },
      devices: [`${prefix}${tag}a`],
      nodeName: node,
      loadBalancer: { algorithm },
    });
    cleanupKprRoot(cleanup, ns, cfgPath, bpfRoot);
    const log: string[] = [];
    const apply = async (from: string) => {
      const r = await run([KPR, "apply", "-f", from, "--config", cfgPath], {
        ns,
        env: { KPR_LOG_LEVEL: "debug" },
        stdoutTo: join(dir, "out"),
      });
      log.push(r.stderr.split("\n").find((l) => l.includes("maglev:")) ?? "maglev: (no table written)");
      return r.ms;
    };
    console.log(`kpr apply, ${algorithm}: first, unchanged, one endpoint changed …`);
    const first = await apply(dirA);
    const same = await apply(dirA);
    const changed = await apply(dirB);
    results[algorithm] = { first, same, changed, log };
  }
  const r = results.random!;
  const g = results.maglev!;
  printTable(
    ["kpr apply", "random", "maglev", "maglev / random"],
    [
      ["first apply (empty node)", fmtMs(r.first), fmtMs(g.first), fmtRatio(g.first, r.first)],
      ["re-apply, nothing changed", fmtMs(r.same), fmtMs(g.same), fmtRatio(g.same, r.same)],
      ["re-apply, one endpoint changed", fmtMs(r.changed), fmtMs(g.changed), fmtRatio(g.changed, r.changed)],
    ],
  );
  console.log(`\nmaglev step (kpr debug log): ${g.log.map((l) => l.replace(/^.*maglev:/, "")).join(" | ")}`);
  console.log(
    `${n} services × ${e} endpoints, one ExternalIP each (${n} tables at M = 16381), lbMapMax ${lbMapMax}; wall time of the whole command.`,
  );
}

if (applyMode) await applyBench();
else compute();
