/**
 * Health check node ports (kube-proxy's pkg/proxy/healthcheck/service_health.go): for every
 * Service with `externalTrafficPolicy: Local` and a `healthCheckNodePort`, an HTTP server on that
 * port telling a cloud load balancer whether this node has ready endpoints of the service. Servers
 * open and close as services come and go; a port that cannot be bound is logged and retried on the
 * next update, never fatal.
 */
import type { ConsolaInstance } from "consola";
import type { LbModel } from "../lb/model.ts";
import { type HttpServer, serveHttp } from "./health.ts";

/** One health-checked service: its port and how many of its ready endpoints run on this node. */
export interface HcService {
  port: number;
  localEndpoints: number;
}

/**
 * The health-checked services of a model, by "ns/name". localEndpoints counts distinct
 * address:port of ready (not terminating) backends on this node over all the service's frontends,
 * as kube-proxy's LocalReadyEndpoints() does.
 */
export function hcServicesFromModel(model: LbModel): Map<string, HcService> {
  const ports = new Map<string, number>();
  const local = new Map<string, Set<string>>();
  for (const fe of model.frontends) {
    if (fe.healthCheckNodePort) ports.set(fe.service, fe.healthCheckNodePort);
    for (const be of fe.backends) {
      if (!be.local || be.state !== "active") continue;
      const set = local.get(fe.service) ?? new Set<string>();
      set.add(`${be.address}|${be.port}`);
      local.set(fe.service, set);
    }
  }
  const out = new Map<string, HcService>();
  for (const [svc, port] of [...ports].sort((a, b) => (a[0] < b[0] ? -1 : 1)))
    out.set(svc, { port, localEndpoints: local.get(svc)?.size ?? 0 });
  return out;
}

/** kube-proxy's body, byte for byte (tab-indented, no trailing newline). */
export function hcBody(service: string, localEndpoints: number, proxyHealthy: boolean): string {
  const slash = service.indexOf("/");
  const [namespace, name] = [service.slice(0, slash), service.slice(slash + 1)];
  return [
    "{",
    '\t"service": {',
    `\t\t"namespace": ${JSON.stringify(namespace)},`,
    `\t\t"name": ${JSON.stringify(name)}`,
    "\t},",
    `\t"localEndpoints": ${localEndpoints},`,
    `\t"serviceProxyHealthy": ${proxyHealthy}`,
    "}",
  ].join("\n");
}

interface Instance {
  port: number;
  server: HttpServer;
}

/** The set of health check node port servers, kept in step with the programmed model. */
export class HealthCheckNodePorts {
  private readonly instances = new Map<string, Instance>();
  private counts = new Map<string, HcService>();
  private readonly failing = new Map<string, string>();

  /**
   * `host`: the address the servers bind ("0.0.0.0": every node address, as kube-proxy without
   * nodePortAddresses); `proxyHealthy`: the proxier's health (serviceProxyHealthy).
   */
  constructor(private readonly opts: { host: string; log: ConsolaInstance; proxyHealthy: () => boolean }) {}

  /** Opens, keeps or closes servers to match the model's health-checked services. */
  async update(model: LbModel): Promise<void> {
    const want = hcServicesFromModel(model);
    this.counts = want;
    const closing: Promise<void>[] = [];
    for (const [svc, inst] of this.instances) {
      if (want.get(svc)?.port === inst.port) continue;
      this.opts.log.info(`health check node port: closing ${svc} on port ${inst.port}`);
      this.instances.delete(svc);
      closing.push(inst.server.stop());
    }
    await Promise.all(closing);
    for (const svc of [...this.failing.keys()]) if (!want.has(svc)) this.failing.delete(svc);
    for (const [svc, { port }] of want) {
      if (this.instances.has(svc)) continue;
      try {
        const server = this.listen(svc, port);
        this.instances.set(svc, { port, server });
        this.failing.delete(svc);
        this.opts.log.info(`health check node port: serving ${svc} on ${server.address}`);
      } catch (e) {
        const msg = (e as Error).message;
        if (this.failing.get(svc) !== msg) this.opts.log.error(`${msg}; retrying at the next sync`);
        this.failing.set(svc, msg);
      }
    }
  }

  /** Services and ports currently served. */
  serving(): Map<string, number> {
    return new Map([...this.instances].map(([svc, i]) => [svc, i.server.port]));
  }

  /** Closes every server. */
  async close(): Promise<void> {
    const all = [...this.instances.values()];
    this.instances.clear();
    await Promise.all(all.map((i) => i.server.stop()));
  }

  private listen(svc: string, port: number): HttpServer {
    const host = this.opts.host.includes(":") ? `[${this.opts.host}]` : this.opts.host;
    return serveHttp(`health check node port of Service ${svc}`, `${host}:${port}`, () => {
      const count = this.counts.get(svc)?.localEndpoints ?? 0;
      const healthy = this.opts.proxyHealthy();
      return new Response(hcBody(svc, count, healthy), {
        status: count > 0 && healthy ? 200 : 503,
        headers: {
          "Content-Type": "application/json",
          "X-Content-Type-Options": "nosniff",
          "X-Load-Balancing-Endpoint-Weight": String(count),
        },
      });
    });
  }
}
