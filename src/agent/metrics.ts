/**
 * The agent's Prometheus metrics (prom-client) on `prometheus.serveAddr`: kube-proxy's names, types
 * and buckets where they apply (pkg/proxy/metrics), and kpr's own datapath counters, read from the
 * pinned maps at scrape time through datapath/counters.ts.
 */
import type { ConsolaInstance } from "consola";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { Config } from "../config/config.ts";
import { readCounters, readMapFill } from "../datapath/counters.ts";
import type { LbModel } from "../lb/model.ts";
import { type HttpServer, notFound, serveHttp } from "./health.ts";
import type { SyncReport } from "./services.ts";

/** Prometheus' ExponentialBuckets(start, factor, count). */
function exponentialBuckets(start: number, factor: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start * factor ** i);
}

/** Prometheus' LinearBuckets(start, width, count). */
function linearBuckets(start: number, width: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start + width * i);
}

/** kube-proxy's sync_proxy_rules_duration_seconds buckets: 1 ms doubling 15 times. */
export const SYNC_BUCKETS = exponentialBuckets(0.001, 2, 15);

/** kube-proxy's network_programming_duration_seconds buckets (MergeBuckets starts with 0). */
export const PROGRAMMING_BUCKETS = [
  0,
  ...linearBuckets(0.25, 0.25, 2),
  ...linearBuckets(1, 1, 59),
  ...linearBuckets(60, 5, 12),
  ...linearBuckets(120, 30, 7),
];

interface Labels {
  frontends: Map<number, { service: string; frontend: string; type: string }>;
  backends: Map<number, { service: string; backend: string; protocol: string }>;
}

function addrPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Frontend and backend id → metric labels, from the programmed model. */
export function labelsFromModel(model: LbModel): Labels {
  const frontends: Labels["frontends"] = new Map();
  const beServices = new Map<number, { set: Set<string>; backend: string; protocol: string }>();
  for (const fe of model.frontends) {
    const f = fe.frontend;
    frontends.set(fe.id, {
      service: fe.service,
      frontend: `${addrPort(f.address, f.port)}/${f.protocol}`,
      type: fe.type,
    });
    for (const be of fe.internalBackends ? [...fe.backends, ...fe.internalBackends] : fe.backends) {
      let e = beServices.get(be.id);
      if (!e) {
        e = { set: new Set(), backend: addrPort(be.address, be.port), protocol: be.protocol };
        beServices.set(be.id, e);
      }
      e.set.add(fe.service);
    }
  }
  const backends: Labels["backends"] = new Map();
  for (const [id, e] of beServices)
    backends.set(id, { service: [...e.set].sort().join(","), backend: e.backend, protocol: e.protocol });
  return { frontends, backends };
}

/** Every metric of the agent, in a registry of its own. */
export class AgentMetrics {
  readonly registry = new Registry();
  private labels: Labels = { frontends: new Map(), backends: new Map() };
  private readonly syncDuration: Histogram;
  private readonly programming: Histogram;
  private readonly lastTimestamp: Gauge;
  private readonly lastQueued: Gauge;
  private readonly endpointChanges: Counter;
  private readonly serviceChanges: Counter;
  private readonly syncFailures: Counter;
  private readonly noLocal: Gauge;
  private readonly healthz: Counter;
  private readonly livez: Counter;

  /** `cfg` locates the pinned maps read at each scrape; `log` reports a failed read (the scrape still answers). */
  constructor(cfg: Config, log: ConsolaInstance) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.syncDuration = new Histogram({
      name: "kubeproxy_sync_proxy_rules_duration_seconds",
      help: "SyncProxyRules latency in seconds",
      buckets: SYNC_BUCKETS,
      registers,
    });
    this.programming = new Histogram({
      name: "kubeproxy_network_programming_duration_seconds",
      help: "In Cluster Network Programming Latency in seconds (kpr: from the first event of a sync to its last map write)",
      buckets: PROGRAMMING_BUCKETS,
      registers,
    });
    this.lastTimestamp = new Gauge({
      name: "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
      help: "The last time proxy rules were successfully synced",
      registers,
    });
    this.lastQueued = new Gauge({
      name: "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
      help: "The last time a sync of proxy rules was queued",
      registers,
    });
    this.endpointChanges = new Counter({
      name: "kubeproxy_sync_proxy_rules_endpoint_changes_total",
      help: "Cumulative proxy rules Endpoint changes",
      registers,
    });
    this.serviceChanges = new Counter({
      name: "kubeproxy_sync_proxy_rules_service_changes_total",
      help: "Cumulative proxy rules Service changes",
      registers,
    });
    this.noLocal = new Gauge({
      name: "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
      help: "Number of services with a Local traffic policy and no endpoints",
      labelNames: ["traffic_policy"],
      registers,
    });
    this.healthz = new Counter({
      name: "kubeproxy_proxy_healthz_total",
      help: "Cumulative proxy healthz HTTP status",
      labelNames: ["code"],
      registers,
    });
    this.livez = new Counter({
      name: "kubeproxy_proxy_livez_total",
      help: "Cumulative proxy livez HTTP status",
      labelNames: ["code"],
      registers,
    });
    this.syncFailures = new Counter({
      name: "kpr_sync_failures_total",
      help: "Syncs that failed to program the datapath",
      registers,
    });
    this.datapathMetrics(cfg, log, registers);
  }

  private datapathMetrics(cfg: Config, log: ConsolaInstance, registers: Registry[]): void {
    let scrape:
      | { counters: ReturnType<typeof readCounters>; fill: ReturnType<typeof readMapFill> }
      | undefined;
    let warned = false;
    // One read of the maps per scrape, shared by every collector below.
    const read = () => {
      if (scrape) return scrape;
      try {
        scrape = { counters: readCounters(cfg), fill: readMapFill(cfg) };
        warned = false;
      } catch (e) {
        if (!warned) log.warn(`metrics: read datapath counters: ${(e as Error).message}`);
        warned = true;
        scrape = { counters: undefined, fill: [] };
      }
      queueMicrotask(() => {
        scrape = undefined;
      });
      return scrape;
    };
    const labels = () => this.labels;
    const traffic = (
      name: string,
      help: string,
      labelNames: string[],
      pick: (
        c: NonNullable<ReturnType<typeof readCounters>>,
      ) => Map<number, { packets: bigint; bytes: bigint }>,
      names: (id: number) => Record<string, string> | undefined,
      field: "packets" | "bytes",
    ) =>
      new Counter({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          const c = read().counters;
          if (!c) return;
          for (const [id, t] of [...pick(c)].sort((a, b) => a[0] - b[0])) {
            const l = names(id);
            if (l) this.inc(l, Number(t[field]));
          }
        },
      });
    const feNames = (id: number) => labels().frontends.get(id);
    const beNames = (id: number) => labels().backends.get(id);
    const feLabels = ["service", "frontend", "type"];
    const beLabels = ["service", "backend", "protocol"];
    traffic(
      "kpr_service_packets_total",
      "Packets (tc) and connections or datagrams (socket LB) balanced by a frontend",
      feLabels,
      (c) => c.frontends,
      feNames,
      "packets",
    );
    traffic(
      "kpr_service_bytes_total",
      "Bytes balanced by a frontend (tc; socket LB counts no bytes)",
      feLabels,
      (c) => c.frontends,
      feNames,
      "bytes",
    );
    traffic(
      "kpr_backend_packets_total",
      "Packets (tc) and connections or datagrams (socket LB) sent to a backend",
      beLabels,
      (c) => c.backends,
      beNames,
      "packets",
    );
    traffic(
      "kpr_backend_bytes_total",
      "Bytes sent to a backend (tc; socket LB counts no bytes)",
      beLabels,
      (c) => c.backends,
      beNames,
      "bytes",
    );
    new Counter({
      name: "kpr_datapath_verdicts_total",
      help: "Datapath verdicts by reason (pass-*, lb-*, snat-*, reject-*, drop-*, sock-*)",
      labelNames: ["reason"],
      registers,
      collect() {
        this.reset();
        for (const r of read().counters?.reasons ?? []) this.inc({ reason: r.reason }, Number(r.count));
      },
    });
    new Gauge({
      name: "kpr_map_entries",
      help: "Entries in a pinned BPF map (array maps count every slot)",
      labelNames: ["map"],
      registers,
      collect() {
        this.reset();
        for (const m of read().fill) this.set({ map: m.name }, m.entries);
      },
    });
    new Gauge({
      name: "kpr_map_max_entries",
      help: "Capacity of a pinned BPF map",
      labelNames: ["map"],
      registers,
      collect() {
        this.reset();
        for (const m of read().fill) this.set({ map: m.name }, m.maxEntries);
      },
    });
  }

  /** Records a sync: durations, change counts, timestamps, and the model's labels when ok. */
  observeSync(r: SyncReport): void {
    this.endpointChanges.inc(r.endpointChanges);
    this.serviceChanges.inc(r.serviceChanges);
    if (!r.ok) {
      this.syncFailures.inc();
      return;
    }
    this.syncDuration.observe(r.durationMs / 1000);
    this.lastTimestamp.set(r.at.getTime() / 1000);
    if (r.firstEventAt !== undefined)
      this.programming.observe(Math.max(0, performance.now() - r.firstEventAt) / 1000);
    if (r.model) this.setModel(r.model);
  }

  /** Takes the id → label maps (and the no-local-endpoint gauge) from a programmed model. */
  setModel(model: LbModel): void {
    this.labels = labelsFromModel(model);
    const noLocal = { internal: new Set<string>(), external: new Set<string>() };
    for (const fe of model.frontends) {
      if (fe.scope !== "Local" || !fe.dropNoLocal) continue;
      (fe.type === "ClusterIP" ? noLocal.internal : noLocal.external).add(fe.service);
    }
    this.noLocal.set({ traffic_policy: "internal" }, noLocal.internal.size);
    this.noLocal.set({ traffic_policy: "external" }, noLocal.external.size);
  }

  /** A change was queued (kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds). */
  queued(atMs = Date.now()): void {
    this.lastQueued.set(atMs / 1000);
  }

  /** Counts a /healthz or /livez answer by status code. */
  healthAnswer(path: "/healthz" | "/livez", code: number): void {
    (path === "/healthz" ? this.healthz : this.livez).inc({ code: String(code) });
  }
}

/** Serves GET /metrics in the Prometheus text format on addr. */
export function startMetricsServer(addr: string, metrics: AgentMetrics): HttpServer {
  return serveHttp("metrics", addr, async (req) => {
    if (new URL(req.url).pathname !== "/metrics") return notFound();
    return new Response(await metrics.registry.metrics(), {
      headers: { "Content-Type": metrics.registry.contentType },
    });
  });
}
