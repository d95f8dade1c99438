/**
 * kube-proxy's proxier health (pkg/proxy/healthcheck/proxy_health.go) and its /healthz and /livez
 * server on `kubeProxyReplacementHealthzBindAddr`. Healthy while no change is pending or the oldest
 * pending change is younger than the health timeout (kube-proxy: 2 × syncPeriod = 60 s); kpr also
 * reports unhealthy from a failed sync until the next one succeeds, since it then knows the
 * datapath is behind. /healthz is also unhealthy when the node is not eligible (deleted, or tainted
 * ToBeDeletedByClusterAutoscaler).
 */
import { KprError } from "../errors.ts";

/** kube-proxy's health timeout: twice its default syncPeriod (30 s). */
export const DEFAULT_HEALTH_TIMEOUT_MS = 60_000;

/** The body kube-proxy marshals (ProxyHealth), times as Go's RFC 3339 with nanoseconds. */
export interface ProxyHealthJson {
  lastUpdated: string;
  currentTime: string;
  nodeEligible?: boolean;
  healthy: boolean;
  status?: Record<string, { lastUpdated: string; healthy: boolean }>;
}

/** Wall-clock milliseconds with sub-millisecond precision. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Go's time.Time JSON form: RFC 3339, fraction up to 9 digits without trailing zeros; 0 → Go's zero time. */
export function goTimeJson(ms: number | undefined): string {
  if (ms === undefined) return "0001-01-01T00:00:00Z";
  const whole = Math.floor(ms);
  const iso = new Date(whole).toISOString().slice(0, 19);
  const nanos = Math.min(999_999, Math.round((ms - whole) * 1e6)) + (whole % 1000) * 1e6;
  const frac = nanos === 0 ? "" : `.${String(nanos).padStart(9, "0").replace(/0+$/, "")}`;
  return `${iso}${frac}Z`;
}

/** The proxier's health state; the HTTP server, health check node ports and metrics read it. */
export class ProxierHealth {
  private lastUpdated: number | undefined;
  private oldestPending: number | undefined;
  private failure: string | undefined;

  constructor(
    readonly timeoutMs = DEFAULT_HEALTH_TIMEOUT_MS,
    private readonly now: () => number = nowMs,
  ) {}

  /** Marks the start of the sync loop (kube-proxy's SyncLoop calls Updated() once up front). */
  started(): void {
    this.lastUpdated = this.now();
  }

  /** A change was received and is not yet programmed (kube-proxy's QueuedUpdate). */
  queuedUpdate(at = this.now()): void {
    if (this.oldestPending === undefined) this.oldestPending = at;
  }

  /** A sync succeeded: nothing pending, lastUpdated = at. */
  updated(at = this.now()): void {
    this.oldestPending = undefined;
    this.failure = undefined;
    this.lastUpdated = at;
  }

  /** A sync failed: unhealthy until the next success; the changes stay pending. */
  failed(error: string, pendingSince = this.now()): void {
    this.failure = error;
    this.queuedUpdate(pendingSince);
  }

  /** The last failure's message, while unhealthy from it. */
  get lastError(): string | undefined {
    return this.failure;
  }

  /** True unless a sync failed or a change has been pending longer than the timeout. */
  healthy(at = this.now()): boolean {
    if (this.failure !== undefined) return false;
    return this.oldestPending === undefined || at - this.oldestPending < this.timeoutMs;
  }

  /**
   * kube-proxy's response body. When healthy, lastUpdated is the current time (kube-proxy keeps
   * that compatibility with its older releases); otherwise the last successful update.
   */
  body(nodeEligible?: boolean): { healthy: boolean; json: ProxyHealthJson } {
    const at = this.now();
    const healthy = this.healthy(at);
    const last = goTimeJson(this.lastUpdated);
    const json: ProxyHealthJson = {
      lastUpdated: healthy ? goTimeJson(at) : last,
      currentTime: goTimeJson(at),
      ...(nodeEligible === undefined ? {} : { nodeEligible }),
      healthy,
      ...(this.lastUpdated === undefined ? {} : { status: { IPv4: { lastUpdated: last, healthy } } }),
    };
    return { healthy: healthy && nodeEligible !== false, json };
  }
}

/** Parses "host:port", "[v6]:port" or ":port" into Bun.serve's hostname and port. */
export function parseBindAddr(addr: string): { hostname: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(addr);
  if (!m) throw new KprError(`listen on ${JSON.stringify(addr)}: not "host:port"`);
  return { hostname: m[1] ?? (m[2] || "0.0.0.0"), port: Number(m[3]) };
}

/** A started HTTP server: its bound address and a stop that closes open connections too. */
export interface HttpServer {
  /** "host:port" actually bound (the port resolved when 0 was asked). */
  readonly address: string;
  readonly port: number;
  stop(): Promise<void>;
}

/** Starts Bun's HTTP server on addr; a bind failure is a KprError naming what and where. */
export function serveHttp(
  what: string,
  addr: string,
  fetch: (req: Request) => Response | Promise<Response>,
): HttpServer {
  const { hostname, port } = parseBindAddr(addr);
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({ hostname, port, fetch, idleTimeout: 30 });
  } catch (e) {
    const err = e as Error & { code?: string };
    const hint = err.code === "EADDRINUSE" ? "another process listens there" : err.message;
    throw new KprError(`listen ${what} on ${addr}: ${err.code ?? "failed"} (${hint})`);
  }
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  return {
    address: `${host}:${server.port}`,
    port: server.port ?? port,
    stop: async () => {
      await server.stop(true);
    },
  };
}

const JSON_HEADERS = { "Content-Type": "application/json", "X-Content-Type-Options": "nosniff" };

/** Go's ServeMux answer for an unknown path. */
export function notFound(): Response {
  return new Response("404 page not found\n", {
    status: 404,
    headers: { "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff" },
  });
}

/** Serves /healthz and /livez as kube-proxy does; `onAnswer` sees each (path, code) for metrics. */
export function startHealthServer(
  addr: string,
  health: ProxierHealth,
  opts: { nodeEligible?: () => boolean; onAnswer?: (path: "/healthz" | "/livez", code: number) => void } = {},
): HttpServer {
  return serveHttp("healthz", addr, (req) => {
    const path = new URL(req.url).pathname;
    if (path !== "/healthz" && path !== "/livez") return notFound();
    const { healthy, json } = health.body(path === "/healthz" ? (opts.nodeEligible?.() ?? true) : undefined);
    const status = healthy ? 200 : 503;
    opts.onAnswer?.(path, status);
    return new Response(JSON.stringify(json), { status, headers: JSON_HEADERS });
  });
}
