import { afterAll, afterEach, describe, expect, it } from "bun:test";
import { mkdirSync, rmSync } from "node:fs";
import { PROGRAMMING_BUCKETS, SYNC_BUCKETS } from "../../src/agent/metrics.ts";
import { type AgentServices, startAgentServices } from "../../src/agent/services.ts";
import { defaultConfig } from "../../src/config/config.ts";
import { BpfMap, MapType, possibleCpus } from "../../src/datapath/bpf.ts";
import { REASON_NAMES } from "../../src/datapath/lbmaps.ts";
import type { LbModel } from "../../src/lb/model.ts";
import { log } from "../../src/log.ts";
import { needs } from "../harness/env.ts";

const quiet = log.withTag("test");
quiet.level = 1;

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition: TYPE per family and every sample. */
function parseExposition(text: string): { types: Map<string, string>; samples: Sample[] } {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) types.set(t[1]!, t[2]!);
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`bad exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return { types, samples };
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    ?.value;
}

const web: LbModel = {
  node: { name: "n1", addresses: ["10.0.0.2"], labels: {} },
  frontends: [
    {
      id: 7,
      frontend: { address: "10.96.0.10", port: 80, protocol: "TCP" },
      type: "ClusterIP",
      service: "default/web",
      portName: "http",
      backends: [
        { id: 7, address: "10.1.0.5", port: 8080, protocol: "TCP", state: "active", local: true },
        { id: 9, address: "10.1.0.6", port: 8080, protocol: "TCP", state: "active", local: false },
      ],
      scope: "Cluster",
    },
    {
      id: 8,
      frontend: { address: "0.0.0.0", port: 30080, protocol: "TCP" },
      type: "NodePort",
      service: "default/local",
      portName: "",
      backends: [],
      scope: "Local",
      dropNoLocal: true,
    },
  ],
};

describe("/metrics without datapath state", () => {
  let svc: AgentServices | undefined;
  afterEach(async () => {
    await svc?.stop();
    svc = undefined;
  });

  it("exposes kube-proxy's sync metrics with kube-proxy's types and buckets", async () => {
    const cfg = defaultConfig();
    cfg.bpf.root = `/tmp/kpr-metrics-none-${process.pid}`;
    cfg.kubeProxyReplacementHealthzBindAddr = "127.0.0.1:0";
    cfg.prometheus.serveAddr = "127.0.0.1:0";
    svc = await startAgentServices(cfg, { log: quiet });
    svc.queuedUpdate();
    const firstEventAt = performance.now();
    svc.onSync({
      ok: true,
      at: new Date(1_800_000_000_000),
      durationMs: 3,
      model: web,
      serviceChanges: 2,
      endpointChanges: 5,
      firstEventAt,
    });
    svc.onSync({
      ok: false,
      at: new Date(),
      durationMs: 1,
      error: "x",
      serviceChanges: 1,
      endpointChanges: 0,
    });
    await fetch(`http://${svc.healthzAddress}/healthz`);
    const res = await fetch(`http://${svc.metricsAddress}/metrics`);
    expect(res.headers.get("content-type"), "exposition content type").toStartWith(
      "text/plain; version=0.0.4",
    );
    const { types, samples } = parseExposition(await res.text());
    expect(
      Object.fromEntries(
        [
          "kubeproxy_sync_proxy_rules_duration_seconds",
          "kubeproxy_network_programming_duration_seconds",
          "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
          "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
          "kubeproxy_sync_proxy_rules_endpoint_changes_total",
          "kubeproxy_sync_proxy_rules_service_changes_total",
          "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
          "kubeproxy_proxy_healthz_total",
          "kpr_sync_failures_total",
          "process_resident_memory_bytes",
        ].map((n) => [n, types.get(n)]),
      ),
      "types",
    ).toEqual({
      kubeproxy_sync_proxy_rules_duration_seconds: "histogram",
      kubeproxy_network_programming_duration_seconds: "histogram",
      kubeproxy_sync_proxy_rules_last_timestamp_seconds: "gauge",
      kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds: "gauge",
      kubeproxy_sync_proxy_rules_endpoint_changes_total: "counter",
      kubeproxy_sync_proxy_rules_service_changes_total: "counter",
      kubeproxy_sync_proxy_rules_no_local_endpoints_total: "gauge",
      kubeproxy_proxy_healthz_total: "counter",
      kpr_sync_failures_total: "counter",
      process_resident_memory_bytes: "gauge",
    });
    const les = (name: string) =>
      samples
        .filter((s) => s.name === `${name}_bucket`)
        .map((s) => (s.labels.le === "+Inf" ? Infinity : Number(s.labels.le)));
    expect(les("kubeproxy_sync_proxy_rules_duration_seconds"), "sync buckets: 1 ms × 2^0..14").toEqual([
      ...Array.from({ length: 15 }, (_, i) => 0.001 * 2 ** i),
      Infinity,
    ]);
    expect(SYNC_BUCKETS.length, "15 sync buckets").toBe(15);
    expect(les("kubeproxy_network_programming_duration_seconds"), "programming buckets").toEqual([
      ...PROGRAMMING_BUCKETS,
      Infinity,
    ]);
    expect(PROGRAMMING_BUCKETS.slice(0, 5), "0, 0.25, 0.5, 1, 2 …").toEqual([0, 0.25, 0.5, 1, 2]);
    expect(PROGRAMMING_BUCKETS.at(-1), "… up to 5 min").toBe(300);
    expect(value(samples, "kubeproxy_sync_proxy_rules_duration_seconds_count"), "one ok sync observed").toBe(
      1,
    );
    expect(value(samples, "kubeproxy_sync_proxy_rules_duration_seconds_sum"), "its duration").toBeCloseTo(
      0.003,
      6,
    );
    expect(
      value(samples, "kubeproxy_sync_proxy_rules_duration_seconds_bucket", { le: "0.004" }),
      "3 ms ≤ 4 ms",
    ).toBe(1);
    expect(
      value(samples, "kubeproxy_sync_proxy_rules_duration_seconds_bucket", { le: "0.002" }),
      "3 ms > 2 ms",
    ).toBe(0);
    expect(
      value(samples, "kubeproxy_network_programming_duration_seconds_count"),
      "programming observed",
    ).toBe(1);
    expect(value(samples, "kubeproxy_sync_proxy_rules_last_timestamp_seconds"), "last ok sync time").toBe(
      1_800_000_000,
    );
    expect(
      value(samples, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds")! > 1.7e9,
      "queued time set",
    ).toBe(true);
    expect(value(samples, "kubeproxy_sync_proxy_rules_endpoint_changes_total"), "endpoint changes").toBe(5);
    expect(
      value(samples, "kubeproxy_sync_proxy_rules_service_changes_total"),
      "service changes, failed sync too",
    ).toBe(3);
    expect(value(samples, "kpr_sync_failures_total"), "one failure").toBe(1);
    expect(value(samples, "kubeproxy_proxy_healthz_total", { code: "503" }), "healthz answer counted").toBe(
      1,
    );
    expect(
      [
        value(samples, "kubeproxy_sync_proxy_rules_no_local_endpoints_total", { traffic_policy: "external" }),
        value(samples, "kubeproxy_sync_proxy_rules_no_local_endpoints_total", { traffic_policy: "internal" }),
      ],
      "eTP=Local service without local endpoints",
    ).toEqual([1, 0]);
    expect(
      samples.filter((s) => s.name.startsWith("kpr_service_")),
      "no datapath state: no traffic samples",
    ).toEqual([]);
    expect((await fetch(`http://${svc.metricsAddress}/other`)).status, "404 elsewhere").toBe(404);
  });
});

const skip = needs({ root: true }, "metrics from pinned maps");

describe.skipIf(!!skip)("/metrics reads the datapath's pinned counters at scrape time", () => {
  const root = `/sys/fs/bpf/kt${Math.random().toString(36).slice(2, 8).padEnd(6, "0")}`;
  let svc: AgentServices | undefined;
  afterAll(async () => {
    await svc?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it("labels per-service and per-backend packets/bytes, verdict reasons and map fill", async () => {
    mkdirSync(`${root}/maps`, { recursive: true });
    const ncpu = possibleCpus();
    const u32 = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);
    const perCpu = (packets: bigint, bytes: bigint) => {
      const b = new Uint8Array(16 * ncpu);
      const dv = new DataView(b.buffer);
      dv.setBigUint64(0, packets, true);
      dv.setBigUint64(8, bytes, true);
      if (ncpu > 1) {
        dv.setBigUint64(16, 1n, true);
        dv.setBigUint64(24, 100n, true);
      }
      return b;
    };
    const extra = ncpu > 1 ? [1n, 100n] : [0n, 0n];
    const maps: BpfMap[] = [];
    for (const name of ["kpr_svc_stats", "kpr_be_stats"]) {
      const m = BpfMap.create({ name, type: MapType.PERCPU_HASH, keySize: 4, valueSize: 16, maxEntries: 64 });
      maps.push(m);
      m.pin(`${root}/maps/${name}`);
    }
    const [svcStats, beStats] = maps as [BpfMap, BpfMap];
    svcStats.update(u32(7), perCpu(10n, 1000n));
    svcStats.update(u32(99), perCpu(4n, 40n));
    beStats.update(u32(7), perCpu(6n, 600n));
    beStats.update(u32(9), perCpu(4n, 400n));
    {
      using r = BpfMap.create({
        name: "kpr_reasons",
        type: MapType.PERCPU_ARRAY,
        keySize: 4,
        valueSize: 8,
        maxEntries: 32,
      });
      const v = new Uint8Array(8 * ncpu);
      new DataView(v.buffer).setBigUint64(0, 3n, true);
      r.update(u32(REASON_NAMES.indexOf("drop-no-backend")), v);
      r.pin(`${root}/maps/kpr_reasons`);
    }
    const cfg = defaultConfig();
    cfg.bpf.root = root;
    cfg.kubeProxyReplacementHealthzBindAddr = "";
    cfg.prometheus.serveAddr = "127.0.0.1:0";
    svc = await startAgentServices(cfg, { log: quiet });
    svc.onSync({
      ok: true,
      at: new Date(),
      durationMs: 1,
      model: web,
      serviceChanges: 1,
      endpointChanges: 2,
    });
    const scrape = async () =>
      parseExposition(await (await fetch(`http://${svc!.metricsAddress}/metrics`)).text());
    let { types, samples } = await scrape();
    expect(
      [
        "kpr_service_packets_total",
        "kpr_service_bytes_total",
        "kpr_backend_packets_total",
        "kpr_backend_bytes_total",
        "kpr_datapath_verdicts_total",
        "kpr_map_entries",
        "kpr_map_max_entries",
      ].map((n) => types.get(n)),
      "types",
    ).toEqual(["counter", "counter", "counter", "counter", "counter", "gauge", "gauge"]);
    const pick = (name: string): Record<string, string | number>[] =>
      samples.filter((s) => s.name === name).map((s) => ({ ...s.labels, value: s.value }));
    expect(pick("kpr_service_packets_total"), "frontend 7 labelled; unknown id 99 left out").toEqual([
      {
        service: "default/web",
        frontend: "10.96.0.10:80/TCP",
        type: "ClusterIP",
        value: Number(10n + extra[0]!),
      },
    ]);
    expect(pick("kpr_service_bytes_total"), "bytes").toEqual([
      {
        service: "default/web",
        frontend: "10.96.0.10:80/TCP",
        type: "ClusterIP",
        value: Number(1000n + extra[1]!),
      },
    ]);
    expect(pick("kpr_backend_packets_total"), "per backend").toEqual([
      { service: "default/web", backend: "10.1.0.5:8080", protocol: "TCP", value: Number(6n + extra[0]!) },
      { service: "default/web", backend: "10.1.0.6:8080", protocol: "TCP", value: Number(4n + extra[0]!) },
    ]);
    expect(value(samples, "kpr_datapath_verdicts_total", { reason: "drop-no-backend" }), "reason").toBe(3);
    expect(pick("kpr_datapath_verdicts_total").length, "every reason").toBe(REASON_NAMES.length);
    expect(
      [
        value(samples, "kpr_map_entries", { map: "kpr_svc_stats" }),
        value(samples, "kpr_map_max_entries", { map: "kpr_svc_stats" }),
      ],
      "fill of kpr_svc_stats",
    ).toEqual([2, 64]);

    svcStats.update(u32(7), perCpu(25n, 2500n));
    ({ samples } = await scrape());
    expect(
      value(samples, "kpr_service_packets_total", { frontend: "10.96.0.10:80/TCP" }),
      "read again at the next scrape",
    ).toBe(Number(25n + extra[0]!));
    for (const m of maps) m[Symbol.dispose]();
  });
});
