#!/usr/bin/env bun
/**
 * Translation speed: 10,000 Services × 10 endpoints (one EndpointSlice each), ClusterIP plus every
 * tenth a NodePort. Prints a table of timings side by side; the target is well under a second.
 * Usage: bun bench/translate.ts [services] [endpointsPerService]
 */
import { defaultConfig } from "../src/config/config.ts";
import { manifestsFromText } from "../src/k8s/manifest.ts";
import type { ClusterState, EndpointSlice, Service } from "../src/k8s/types.ts";
import { l4Key } from "../src/lb/ip.ts";
import type { PreviousIds } from "../src/lb/model.ts";
import { translate } from "../src/lb/translate.ts";

const nSvc = Number(process.argv[2] ?? 10_000);
const nEp = Number(process.argv[3] ?? 10);

function generate(): ClusterState {
  const services: Service[] = [];
  const endpointSlices: EndpointSlice[] = [];
  for (let i = 0; i < nSvc; i++) {
    const name = `svc-${i}`;
    const nodePort = i % 10 === 0 ? { nodePort: 30000 + ((i / 10) % 2700) } : {};
    services.push({
      kind: "Service",
      metadata: { name, namespace: "default" },
      spec: {
        type: i % 10 === 0 ? "NodePort" : "ClusterIP",
        clusterIP: `10.96.${(i >> 8) & 255}.${i & 255}`,
        ports: [{ name: "http", port: 80, targetPort: "http", ...nodePort }],
      },
    });
    endpointSlices.push({
      kind: "EndpointSlice",
      metadata: {
        name: `${name}-abcde`,
        namespace: "default",
        labels: { "kubernetes.io/service-name": name },
      },
      addressType: "IPv4",
      ports: [{ name: "http", port: 8080 }],
      endpoints: Array.from({ length: nEp }, (_, j) => {
        const n = i * nEp + j;
        return {
          addresses: [`10.${64 + ((n >> 16) & 63)}.${(n >> 8) & 255}.${n & 255}`],
          conditions: { ready: j % 7 !== 6 },
          nodeName: `node-${j % 3}`,
        };
      }),
    });
  }
  return { services, endpointSlices, endpoints: [], pods: [], nodes: [] };
}

/** Runs fn; returns its result, wall-clock ms and CPU ms (user+system; less sensitive to a busy machine). */
function time<T>(fn: () => T): [T, number, number] {
  const c = process.cpuUsage();
  const t = performance.now();
  const r = fn();
  const wall = performance.now() - t;
  const cpu = process.cpuUsage(c);
  return [r, wall, (cpu.user + cpu.system) / 1000];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const cfg = defaultConfig();
cfg.nodeName = "node-0";
cfg.nodePort.range = [30000, 32767];
cfg.bpf.lbMapMax = 1 << 20;
const state = generate();

const opts = { nodeAddresses: ["192.168.50.2"] };
const [model, coldWall, coldCpu] = time(() => translate(state, cfg, opts));
const warm = Array.from({ length: 5 }, () => time(() => translate(state, cfg, opts)));
const previous: PreviousIds = {
  frontends: new Map(model.frontends.map((f) => [l4Key(f.frontend), f.id])),
  backends: new Map(model.frontends.flatMap((f) => f.backends.map((b) => [l4Key(b), b.id]))),
};
const withPrev = Array.from({ length: 5 }, () => time(() => translate(state, cfg, { ...opts, previous })));
const text = [...state.services, ...state.endpointSlices]
  .map((o) => JSON.stringify({ apiVersion: o.kind === "Service" ? "v1" : "discovery.k8s.io/v1", ...o }))
  .join("\n---\n");
const [parsed, parseWall, parseCpu] = time(() => manifestsFromText(text, "bench.yaml"));
if (parsed.services.length !== nSvc) throw new Error("bench: parse lost services");

const backends = new Set(model.frontends.flatMap((f) => f.backends.map((b) => b.id))).size;
console.log(
  `${nSvc} services × ${nEp} endpoints → ${model.frontends.length} frontends, ${backends} backends`,
);
const rows: [string, number, number][] = [
  ["translate (cold)", coldWall, coldCpu],
  ["translate (warm, median of 5)", median(warm.map((r) => r[1])), median(warm.map((r) => r[2]))],
  [
    "translate with previous ids (median of 5)",
    median(withPrev.map((r) => r[1])),
    median(withPrev.map((r) => r[2])),
  ],
  [`parse manifests (${(text.length / 1e6).toFixed(1)} MB, ${nSvc * 2} documents)`, parseWall, parseCpu],
];
const w = Math.max(...rows.map(([n]) => n.length));
console.log(
  `${"step".padEnd(w)}   ${"wall ms".padStart(8)}   ${"cpu ms".padStart(8)}   ${"wall / 1 s".padStart(10)}`,
);
for (const [n, wall, cpu] of rows) {
  console.log(
    `${n.padEnd(w)}   ${wall.toFixed(1).padStart(8)}   ${cpu.toFixed(1).padStart(8)}   ${(wall / 1000).toFixed(3).padStart(10)}`,
  );
}
