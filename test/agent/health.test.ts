import { afterEach, describe, expect, it } from "bun:test";
import {
  goTimeJson,
  type HttpServer,
  ProxierHealth,
  parseBindAddr,
  startHealthServer,
} from "../../src/agent/health.ts";
import { type AgentServices, startAgentServices } from "../../src/agent/services.ts";
import { defaultConfig } from "../../src/config/config.ts";
import { log } from "../../src/log.ts";

const quiet = log.withTag("test");
quiet.level = 1;

/** A clock the test moves by hand (ms since the epoch). */
function fakeClock(start = Date.UTC(2026, 11, 2, 5, 0, 0, 250)) {
  let t = start;
  return {
    now: () => t,
    advance: (ms: number) => {
      t += ms;
    },
  };
}

async function get(base: string, path: string) {
  const res = await fetch(`http://${base}${path}`);
  return { status: res.status, headers: res.headers, text: await res.text() };
}

describe("goTimeJson", () => {
  it.each([
    [undefined, "0001-01-01T00:00:00Z"],
    [Date.UTC(2026, 11, 2, 5, 0, 0), "2026-12-02T05:00:00Z"],
    [Date.UTC(2026, 11, 2, 5, 0, 0, 250), "2026-12-02T05:00:00.25Z"],
    [Date.UTC(2026, 11, 2, 5, 0, 0, 1) + 0.5, "2026-12-02T05:00:00.0015Z"],
  ])("%p → %s (Go's RFC 3339 with nanoseconds, trailing zeros trimmed)", (ms, want) => {
    expect(goTimeJson(ms)).toBe(want);
  });
});

describe("parseBindAddr", () => {
  it.each([
    ["0.0.0.0:10256", { hostname: "0.0.0.0", port: 10256 }],
    [":10256", { hostname: "0.0.0.0", port: 10256 }],
    ["[::1]:10249", { hostname: "::1", port: 10249 }],
    ["127.0.0.1:0", { hostname: "127.0.0.1", port: 0 }],
  ])("%s", (addr, want) => {
    expect(parseBindAddr(addr)).toEqual(want);
  });
  it("rejects an address without a port", () => {
    expect(() => parseBindAddr("localhost")).toThrow('listen on "localhost": not "host:port"');
  });
});

describe("/healthz and /livez over HTTP (kube-proxy's bodies and codes)", () => {
  let server: HttpServer | undefined;
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  it("answers fresh, pending, stale, failed and recovered states", async () => {
    const clock = fakeClock();
    const health = new ProxierHealth(60_000, clock.now);
    let eligible = true;
    const answers: string[] = [];
    server = startHealthServer("127.0.0.1:0", health, {
      nodeEligible: () => eligible,
      onAnswer: (p, c) => answers.push(`${p} ${c}`),
    });
    const base = server.address;
    const t0 = goTimeJson(clock.now());

    // Before the sync loop started: healthy, kube-proxy's zero lastUpdated is replaced by now.
    let r = await get(base, "/healthz");
    expect(r.status, "fresh process: 200").toBe(200);
    expect(r.headers.get("content-type"), "content type").toBe("application/json");
    expect(r.headers.get("x-content-type-options"), "nosniff").toBe("nosniff");
    expect(JSON.parse(r.text), "fresh body").toEqual({
      lastUpdated: t0,
      currentTime: t0,
      nodeEligible: true,
      healthy: true,
    });

    health.started();
    clock.advance(1000);
    const t1 = goTimeJson(clock.now());
    r = await get(base, "/healthz");
    expect(JSON.parse(r.text), "healthy: lastUpdated is the current time").toEqual({
      lastUpdated: t1,
      currentTime: t1,
      nodeEligible: true,
      healthy: true,
      status: { IPv4: { lastUpdated: t0, healthy: true } },
    });
    expect(r.text.startsWith('{"lastUpdated":'), "Go's field order").toBe(true);

    health.queuedUpdate();
    clock.advance(59_999);
    expect((await get(base, "/healthz")).status, "a change pending for < 60 s: still 200").toBe(200);
    clock.advance(1);
    const t2 = goTimeJson(clock.now());
    r = await get(base, "/healthz");
    expect(r.status, "a change pending for 60 s: 503").toBe(503);
    expect(JSON.parse(r.text), "stale body keeps the last update").toEqual({
      lastUpdated: t0,
      currentTime: t2,
      nodeEligible: true,
      healthy: false,
      status: { IPv4: { lastUpdated: t0, healthy: false } },
    });
    r = await get(base, "/livez");
    expect(r.status, "livez stale: 503").toBe(503);
    expect(JSON.parse(r.text), "livez has no nodeEligible").toEqual({
      lastUpdated: t0,
      currentTime: t2,
      healthy: false,
      status: { IPv4: { lastUpdated: t0, healthy: false } },
    });

    health.updated();
    expect((await get(base, "/healthz")).status, "synced again: 200").toBe(200);
    health.failed("update kpr_lb4_services: ENOSPC");
    expect((await get(base, "/healthz")).status, "failed sync: 503 at once").toBe(503);
    expect(health.lastError, "failure kept").toBe("update kpr_lb4_services: ENOSPC");
    health.updated();
    expect((await get(base, "/livez")).status, "recovered: 200").toBe(200);

    eligible = false;
    r = await get(base, "/healthz");
    expect([r.status, JSON.parse(r.text).nodeEligible], "node not eligible: healthz 503").toEqual([
      503,
      false,
    ]);
    expect(JSON.parse(r.text).healthy, "the proxier itself is healthy").toBe(true);
    expect((await get(base, "/livez")).status, "livez ignores node eligibility").toBe(200);

    r = await get(base, "/metrics");
    expect([r.status, r.text], "unknown path: Go's 404").toEqual([404, "404 page not found\n"]);
    expect(answers, "every answer reported for metrics").toEqual([
      "/healthz 200",
      "/healthz 200",
      "/healthz 200",
      "/healthz 503",
      "/livez 503",
      "/healthz 200",
      "/healthz 503",
      "/livez 200",
      "/healthz 503",
      "/livez 200",
    ]);
  });

  it("refuses a bind address in use with a KprError naming it", async () => {
    server = startHealthServer("127.0.0.1:0", new ProxierHealth());
    expect(() => startHealthServer(server!.address, new ProxierHealth())).toThrow(
      new RegExp(`listen healthz on ${server.address.replace(/[.]/g, "\\.")}: EADDRINUSE`),
    );
  });
});

describe("startAgentServices: healthz driven by sync reports", () => {
  let svc: AgentServices | undefined;
  afterEach(async () => {
    await svc?.stop();
    svc = undefined;
  });

  it("turns 503 when a queued change outlives the timeout, 200 after a sync, 503 on a failed sync", async () => {
    const cfg = defaultConfig();
    cfg.kubeProxyReplacementHealthzBindAddr = "127.0.0.1:0";
    cfg.prometheus.serveAddr = "";
    svc = await startAgentServices(cfg, { log: quiet, healthTimeoutMs: 200 });
    expect(svc.metricsAddress, "metrics off").toBeUndefined();
    const base = svc.healthzAddress!;
    expect((await get(base, "/healthz")).status, "started: 200").toBe(200);
    svc.queuedUpdate();
    const deadline = Date.now() + 5000;
    let status = 200;
    while (status === 200 && Date.now() < deadline) status = (await get(base, "/healthz")).status;
    expect(status, "pending beyond 200 ms: 503").toBe(503);
    svc.onSync({ ok: true, at: new Date(), durationMs: 3, serviceChanges: 1, endpointChanges: 1 });
    expect((await get(base, "/healthz")).status, "synced: 200").toBe(200);
    svc.onSync({
      ok: false,
      at: new Date(),
      durationMs: 3,
      error: "boom",
      serviceChanges: 0,
      endpointChanges: 1,
    });
    expect((await get(base, "/healthz")).status, "failed sync: 503").toBe(503);
  });
});
