import { afterEach, describe, expect, it } from "bun:test";
import { HealthCheckNodePorts, hcBody, hcServicesFromModel } from "../../src/agent/hcnodeports.ts";
import { type AgentServices, startAgentServices } from "../../src/agent/services.ts";
import { defaultConfig } from "../../src/config/config.ts";
import type { Backend, BackendState, Frontend, LbModel } from "../../src/lb/model.ts";
import { log } from "../../src/log.ts";

/** A logger that records messages instead of printing them. */
function recordingLog() {
  const lines: string[] = [];
  const l = log.create({
    level: 5,
    reporters: [{ log: (o) => lines.push(`${o.type} ${o.args.join(" ")}`) }],
  });
  return { log: l, lines };
}

let nextBackendId = 1;
function be(address: string, local: boolean, state: BackendState = "active", port = 8080): Backend {
  return { id: nextBackendId++, address, port, protocol: "TCP", state, local };
}

function fe(id: number, service: string, backends: Backend[], hcnp?: number, port = 30080): Frontend {
  return {
    id,
    frontend: { address: "0.0.0.0", port, protocol: "TCP" },
    type: "NodePort",
    service,
    portName: "",
    backends,
    scope: "Local",
    ...(hcnp ? { healthCheckNodePort: hcnp } : {}),
  };
}

function model(frontends: Frontend[]): LbModel {
  return { node: { name: "n1", addresses: ["127.0.0.1"], labels: {} }, frontends };
}

/** A TCP port free on loopback right now (bound and released). */
function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

async function probe(port: number) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    return { status: res.status, headers: res.headers, text: await res.text() };
  } catch (e) {
    return {
      status: 0,
      error: (e as Error & { code?: string }).code ?? String(e),
      headers: new Headers(),
      text: "",
    };
  }
}

describe("hcServicesFromModel", () => {
  it("counts distinct ready local endpoints over all frontends of a service", () => {
    const a = be("10.1.0.1", true);
    const m = model([
      fe(
        1,
        "default/web",
        [a, be("10.1.0.2", true), be("10.2.0.1", false), be("10.1.0.3", true, "terminating")],
        31000,
      ),
      fe(2, "default/web", [{ ...a }], 31000, 30081),
      fe(3, "default/web", [be("10.1.0.1", true, "active", 9090)], 31000, 30082),
      fe(4, "default/plain", [be("10.1.0.9", true)]),
      fe(5, "kube-system/dns", [be("10.2.0.2", false)], 31001),
    ]);
    expect(hcServicesFromModel(m)).toEqual(
      new Map([
        ["default/web", { port: 31000, localEndpoints: 3 }],
        ["kube-system/dns", { port: 31001, localEndpoints: 0 }],
      ]),
    );
  });
});

describe("health check node ports over HTTP", () => {
  let hc: HealthCheckNodePorts | undefined;
  let svc: AgentServices | undefined;
  afterEach(async () => {
    await hc?.close();
    await svc?.stop();
    hc = svc = undefined;
  });

  it("flips 200 → 503 when the last local endpoint goes and closes when the service goes", async () => {
    const cfg = defaultConfig();
    cfg.kubeProxyReplacementHealthzBindAddr = "";
    cfg.prometheus.serveAddr = "";
    const { log: l } = recordingLog();
    svc = await startAgentServices(cfg, { log: l, hcBindHost: "127.0.0.1" });
    const port = freePort();
    const sync = (m: LbModel) =>
      svc!.onSync({
        ok: true,
        at: new Date(),
        durationMs: 1,
        model: m,
        serviceChanges: 1,
        endpointChanges: 1,
      });

    sync(model([fe(1, "default/web", [be("10.1.0.1", true), be("10.2.0.1", false)], port)]));
    await svc.settled();
    expect(svc.hcNodePorts(), "served").toEqual(new Map([["default/web", port]]));
    let r = await probe(port);
    expect(r.status, "one local endpoint: 200").toBe(200);
    expect(r.headers.get("content-type"), "content type").toBe("application/json");
    expect(r.headers.get("x-content-type-options"), "nosniff").toBe("nosniff");
    expect(r.headers.get("x-load-balancing-endpoint-weight"), "weight header").toBe("1");
    expect(r.text, "kube-proxy's body byte for byte").toBe(
      '{\n\t"service": {\n\t\t"namespace": "default",\n\t\t"name": "web"\n\t},\n\t"localEndpoints": 1,\n\t"serviceProxyHealthy": true\n}',
    );

    sync(model([fe(1, "default/web", [be("10.1.0.1", true, "terminating"), be("10.2.0.1", false)], port)]));
    await svc.settled();
    r = await probe(port);
    expect(r.status, "only a terminating local endpoint: 503").toBe(503);
    expect(JSON.parse(r.text), "body").toEqual({
      service: { namespace: "default", name: "web" },
      localEndpoints: 0,
      serviceProxyHealthy: true,
    });

    sync(model([fe(1, "default/web", [be("10.1.0.4", true)], port)]));
    await svc.settled();
    expect((await probe(port)).status, "a local endpoint again: 200").toBe(200);
    svc.onSync({
      ok: false,
      at: new Date(),
      durationMs: 1,
      error: "x",
      serviceChanges: 0,
      endpointChanges: 0,
    });
    r = await probe(port);
    expect([r.status, JSON.parse(r.text).serviceProxyHealthy], "proxier unhealthy: 503").toEqual([
      503,
      false,
    ]);

    sync(model([fe(2, "default/other", [be("10.1.0.5", true)])]));
    await svc.settled();
    expect(svc.hcNodePorts(), "nothing served").toEqual(new Map());
    expect((await probe(port)).error, "service gone: port closed").toBe("ECONNREFUSED");
  });

  it("logs a port it cannot bind, naming the service, serves the others, and retries", async () => {
    const { log: l, lines } = recordingLog();
    hc = new HealthCheckNodePorts({ host: "127.0.0.1", log: l, proxyHealthy: () => true });
    const blocker = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const busy = blocker.port;
    const free = freePort();
    const m = model([
      fe(1, "default/blocked", [be("10.1.0.1", true)], busy),
      fe(2, "default/web", [be("10.1.0.2", true)], free, 30081),
    ]);
    try {
      await hc.update(m);
      expect(hc.serving(), "the free one is served").toEqual(new Map([["default/web", free]]));
      expect(
        lines.filter((x) => x.startsWith("error")),
        "one error naming the service and port",
      ).toEqual([
        `error listen health check node port of Service default/blocked on 127.0.0.1:${busy}: EADDRINUSE (another process listens there); retrying at the next sync`,
      ]);
      await hc.update(m);
      expect(lines.filter((x) => x.startsWith("error")).length, "same failure not logged again").toBe(1);
    } finally {
      blocker.stop(true);
    }
    await hc.update(m);
    expect(hc.serving(), "retried once the port is free").toEqual(
      new Map([
        ["default/blocked", busy],
        ["default/web", free],
      ]),
    );
    expect((await probe(busy)).status, "now answering").toBe(200);
  });

  it("hcBody quotes names as Go's %q does for Kubernetes names", () => {
    expect(hcBody("ns-1/a.b", 2, false)).toContain('"namespace": "ns-1",\n\t\t"name": "a.b"');
  });
});
