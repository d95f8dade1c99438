/**
 * The agent's HTTP side behind one facade the run loop calls: /healthz and /livez, health check
 * node ports, and /metrics. The loop reports each sync (onSync) and, optionally, each received
 * change (queuedUpdate) so health follows kube-proxy's pending-change rule.
 */
import type { ConsolaInstance } from "consola";
import type { Config } from "../config/config.ts";
import type { LbModel } from "../lb/model.ts";
import { HealthCheckNodePorts } from "./hcnodeports.ts";
import { DEFAULT_HEALTH_TIMEOUT_MS, type HttpServer, ProxierHealth, startHealthServer } from "./health.ts";
import { AgentMetrics, startMetricsServer } from "./metrics.ts";

/** What the run loop reports after each sync. */
export interface SyncReport {
  ok: boolean;
  at: Date;
  durationMs: number;
  error?: string;
  /** present when ok: the model now programmed */
  model?: LbModel;
  serviceChanges: number;
  endpointChanges: number;
  /** performance.now() when the oldest event coalesced into this sync was received */
  firstEventAt?: number;
}

/** The running servers. */
export interface AgentServices {
  /** Records a sync: health, health check node ports (from r.model), metrics. */
  onSync(r: SyncReport): void;
  /**
   * A change was received and is waiting for a sync (kube-proxy's QueuedUpdate): /healthz turns
   * 503 when a change stays pending longer than the health timeout. Cheap; call on every event.
   */
  queuedUpdate(): void;
  /** Addresses actually bound ("host:port"), absent when off. */
  readonly healthzAddress?: string;
  readonly metricsAddress?: string;
  /** The proxier health the servers answer from. */
  readonly health: ProxierHealth;
  /** Health check node ports being served, "ns/name" → port. */
  hcNodePorts(): Map<string, number>;
  /** Waits until health check node ports match the last reported model (they update in the background). */
  settled(): Promise<void>;
  stop(): Promise<void>;
}

/** Options of startAgentServices. */
export interface AgentServicesOptions {
  log: ConsolaInstance;
  /** false when the Node is being deleted or tainted ToBeDeletedByClusterAutoscaler (default: true). */
  nodeEligible?: () => boolean;
  /** Address health check node ports bind (default "0.0.0.0", every node address, as kube-proxy). */
  hcBindHost?: string;
  /** Pending-change age after which /healthz says 503 (default 60 s, kube-proxy's 2 × syncPeriod). */
  healthTimeoutMs?: number;
}

/**
 * Starts healthz/livez (cfg.kubeProxyReplacementHealthzBindAddr, off when ""), health-check node
 * ports, and /metrics (cfg.prometheus.serveAddr, off when ""). Throws KprError on a bind failure
 * of healthz or metrics (a health check node port that cannot be bound is only logged).
 */
export async function startAgentServices(cfg: Config, opts: AgentServicesOptions): Promise<AgentServices> {
  const log = opts.log.withTag("services");
  const health = new ProxierHealth(opts.healthTimeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS);
  health.started();
  const metrics = new AgentMetrics(cfg, log);
  const hc = new HealthCheckNodePorts({
    host: opts.hcBindHost ?? "0.0.0.0",
    log,
    proxyHealthy: () => health.healthy(),
  });
  let healthzServer: HttpServer | undefined;
  let metricsServer: HttpServer | undefined;
  try {
    if (cfg.kubeProxyReplacementHealthzBindAddr !== "") {
      healthzServer = startHealthServer(cfg.kubeProxyReplacementHealthzBindAddr, health, {
        nodeEligible: opts.nodeEligible,
        onAnswer: (path, code) => metrics.healthAnswer(path, code),
      });
      log.info(`healthz: serving /healthz and /livez on ${healthzServer.address}`);
    }
    if (cfg.prometheus.serveAddr !== "") {
      metricsServer = startMetricsServer(cfg.prometheus.serveAddr, metrics);
      log.info(`metrics: serving /metrics on ${metricsServer.address}`);
    }
  } catch (e) {
    await healthzServer?.stop();
    throw e;
  }
  const servers = [healthzServer, metricsServer].filter((s) => s !== undefined);

  // Health check node port updates run one at a time, in report order; the latest model wins.
  let hcChain: Promise<void> = Promise.resolve();
  let stopped = false;
  return {
    health,
    healthzAddress: healthzServer?.address,
    metricsAddress: metricsServer?.address,
    onSync(r) {
      if (r.ok) health.updated(r.at.getTime());
      else health.failed(r.error ?? "sync failed");
      metrics.observeSync(r);
      const model = r.model;
      if (r.ok && model && !stopped) {
        hcChain = hcChain
          .then(() => hc.update(model))
          .catch((e) => log.error(`health check node ports: ${e}`));
      }
    },
    queuedUpdate() {
      health.queuedUpdate();
      metrics.queued();
    },
    hcNodePorts: () => hc.serving(),
    settled: () => hcChain,
    async stop() {
      stopped = true;
      await hcChain;
      await Promise.all([hc.close(), ...servers.map((s) => s.stop())]);
    },
  };
}
