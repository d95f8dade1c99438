/**
 * End-to-end: what systemd and a cluster's monitoring see of `kpr run` (manifest mode) on node-1
 * of the namespace cluster (see _cluster.ts), over the real binary: the notify protocol on a
 * NOTIFY_SOCKET the test binds (READY=1 after the first sync, STATUS= lines, WATCHDOG=1 pings,
 * STOPPING=1), `/healthz` and `/livez` with kube-proxy's bodies, a health check node port that
 * flips 200 → 503 when the last local endpoint goes and closes with its service, and `/metrics`
 * (kube-proxy's names, a per-service packet counter that moves with traffic).
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { needs } from "../harness/env.ts";
import { pollUntil, useTopology } from "../harness/netns.ts";
import { httpGet } from "../harness/servers.ts";
import { type Agent, agentMissing, answers, pollFrontends, startAgent } from "./_agent.ts";
import { ADDR, buildCluster, DEVICE, httpPort, NS, POD_NAMES } from "./_cluster.ts";
import { type EndpointSpec, node, service } from "./_manifests.ts";

const A: EndpointSpec = { ip: ADDR.podA, nodeName: "node-1" };
const R: EndpointSpec = { ip: ADDR.podR, nodeName: "node-2" };
const WEB_IP = "10.96.0.80";
const WEB_NP = 30080;
const LOCAL_IP = "10.96.0.85";
const LOCAL_NP = 30085;
const HC_PORT = 32085;
const HEALTHZ = "127.0.0.1:10256";
const METRICS = "127.0.0.1:10249";
const WATCHDOG_USEC = 400_000;

/** A service with externalTrafficPolicy: Local and a healthCheckNodePort. */
function localService(eps: EndpointSpec[]): object[] {
  const [svc, slice] = service({
    name: "local",
    type: "NodePort",
    clusterIP: LOCAL_IP,
    ports: [httpPort(LOCAL_NP)],
    externalTrafficPolicy: "Local",
    endpoints: eps,
  }) as [{ spec: Record<string, unknown> }, object];
  svc.spec.type = "LoadBalancer";
  svc.spec.healthCheckNodePort = HC_PORT;
  return [svc, slice];
}

const skip =
  needs(
    { root: true, built: true, tools: ["ip", "nsenter", "curl", "python3"] },
    "e2e agent (systemd, health, metrics)",
  ) ?? agentMissing("e2e agent (systemd, health, metrics)");

describe.skipIf(!!skip)("e2e: kpr run under systemd's eyes: notify, health, metrics", () => {
  let dir = "";
  const write = (file: string, objects: object[]) =>
    writeFileSync(join(dir, file), objects.map((o) => stringify(o)).join("---\n"));
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      t.writeConfig({
        devices: [DEVICE],
        nodeName: "node-1",
        kubeProxyReplacementHealthzBindAddr: HEALTHZ,
        prometheus: { serveAddr: METRICS },
      });
      dir = join(t.tmpDir, "manifests");
      mkdirSync(dir);
      write("node.yaml", [node("node-1", ADDR.node1)]);
      write(
        "web.yaml",
        service({
          name: "web",
          type: "NodePort",
          clusterIP: WEB_IP,
          ports: [httpPort(WEB_NP)],
          endpoints: [A],
        }),
      );
      write("local.yaml", localService([A]));
    },
  });
  let agent: Agent;
  /** GET from inside node-1 (its loopback). */
  const get = (url: string, headers = false) =>
    httpGet(topo(), NS.node1, url, { timeoutMs: 3000, curlArgs: headers ? ["-i"] : [] });

  test("notify: READY=1 after the first sync, STATUS= lines, WATCHDOG=1 at half of WATCHDOG_USEC", async () => {
    agent = await startAgent(topo(), NS.node1, ["--manifest", dir], {
      env: { WATCHDOG_USEC: String(WATCHDOG_USEC) },
    });
    await agent.waitReady();
    const n = agent.notify!;
    const readyAt = n.assignments().findIndex((a) => a.key === "READY");
    expect(n.assignments()[readyAt]?.value, "READY=1").toBe("1");
    // READY=1 only after the first complete sync: by then the services are programmed.
    await pollFrontends(
      topo(),
      NS.node1,
      "web is programmed when READY=1 arrived",
      (f) => f.has(`${WEB_IP}:80/TCP`),
      1,
    );
    const status = await n.waitFor("STATUS", /\S/);
    expect(status.length, `a STATUS= line (got "${status}")`).toBeGreaterThan(0);
    const pings = () => n.assignments().filter((a) => a.key === "WATCHDOG" && a.value === "1").length;
    const first = pings();
    await pollUntil(
      `three more WATCHDOG=1 pings (WATCHDOG_USEC=${WATCHDOG_USEC})`,
      () => pings() >= first + 3,
      5000,
    );
  });

  test("/healthz and /livez answer with kube-proxy's JSON bodies", async () => {
    const hz = await get(`http://${HEALTHZ}/healthz`);
    expect(hz.status, `/healthz status: ${hz.body}`).toBe(200);
    const h = JSON.parse(hz.body) as Record<string, unknown>;
    expect(
      {
        lastUpdated: typeof h.lastUpdated,
        currentTime: typeof h.currentTime,
        nodeEligible: h.nodeEligible,
      },
      `/healthz body has kube-proxy's fields: ${hz.body}`,
    ).toEqual({ lastUpdated: "string", currentTime: "string", nodeEligible: true });
    for (const k of ["lastUpdated", "currentTime"])
      expect(Number.isNaN(Date.parse(String(h[k]))), `/healthz ${k} is a timestamp: ${h[k]}`).toBe(false);
    expect(
      Math.abs(Date.parse(String(h.currentTime)) - Date.now()),
      `/healthz currentTime is now: ${h.currentTime}`,
    ).toBeLessThan(60_000);
    const lz = await get(`http://${HEALTHZ}/livez`);
    expect(lz.status, `/livez status: ${lz.body}`).toBe(200);
    const l = JSON.parse(lz.body) as Record<string, unknown>;
    expect(
      { lastUpdated: typeof l.lastUpdated, currentTime: typeof l.currentTime, nodeEligible: l.nodeEligible },
      `/livez body has kube-proxy's fields (no nodeEligible): ${lz.body}`,
    ).toEqual({ lastUpdated: "string", currentTime: "string", nodeEligible: undefined });
  });

  test("a health check node port answers 200 with local endpoints, 503 without, and closes with its service", async () => {
    const url = `http://${ADDR.node1}:${HC_PORT}/`;
    const ok = await httpGet(topo(), NS.client, url, { timeoutMs: 3000, curlArgs: ["-i"] });
    expect(ok.body, `health check node port ${url} with pod-a local`).toMatch(/^HTTP\/1\.1 200/);
    const headers = ok.body.slice(0, ok.body.indexOf("\r\n\r\n")).toLowerCase();
    expect(headers, "Content-Type: application/json").toContain("content-type: application/json");
    expect(headers, "X-Content-Type-Options: nosniff").toContain("x-content-type-options: nosniff");
    const body = JSON.parse(ok.body.slice(ok.body.indexOf("\r\n\r\n") + 4));
    expect(body, "health check body with one local endpoint").toEqual({
      service: { namespace: "default", name: "local" },
      localEndpoints: 1,
      serviceProxyHealthy: true,
    });

    write("local.yaml", localService([R]));
    let last = "";
    await pollUntil("health check node port flips to 503 when the last local endpoint goes", async () => {
      const r = await httpGet(topo(), NS.client, url, { timeoutMs: 2000 });
      last = `${r.status} ${r.body}`;
      return r.status === 503;
    }).catch((e: Error) => {
      throw new Error(`${e.message}; last answer: ${last}\n${agent.tail()}`);
    });
    expect(JSON.parse(last.slice(4)), "503 body").toEqual({
      service: { namespace: "default", name: "local" },
      localEndpoints: 0,
      serviceProxyHealthy: true,
    });

    write("local.yaml", []);
    await pollUntil("health check node port closes with its service", async () => {
      const r = await httpGet(topo(), NS.client, url, { timeoutMs: 2000 });
      last = `curl ${r.curlCode} ${r.status}`;
      return r.curlCode === 7;
    }).catch((e: Error) => {
      throw new Error(`${e.message}; last: ${last}\n${agent.tail()}`);
    });
  });

  test("/metrics: kube-proxy's names, and a per-service packet counter that moves with traffic", async () => {
    const scrape = async () => {
      const r = await get(`http://${METRICS}/metrics`);
      expect(r.status, `/metrics status`).toBe(200);
      return r.body;
    };
    const text = await scrape();
    for (const name of [
      "kubeproxy_sync_proxy_rules_duration_seconds",
      "kubeproxy_network_programming_duration_seconds",
      "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
      "kubeproxy_sync_proxy_rules_endpoint_changes_total",
      "kubeproxy_sync_proxy_rules_service_changes_total",
    ]) {
      expect(text.includes(`\n${name}`) || text.startsWith(name), `/metrics has ${name}`).toBe(true);
    }
    const webPackets = (t: string) =>
      t
        .split("\n")
        .filter((l) => l.startsWith("kpr_service_packets_total{") && l.includes('service="default/web"'))
        .filter((l) => l.includes(`${ADDR.node1}:${WEB_NP}`))
        .reduce((s, l) => s + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
    const before = webPackets(text);
    expect(await answers(topo(), NS.client, `http://${ADDR.node1}:${WEB_NP}/`, 5), "traffic to web").toEqual({
      [POD_NAMES.podA]: 5,
    });
    const after = webPackets(await scrape());
    expect(
      after - before,
      `kpr_service_packets_total of web's NodePort moved (${before} → ${after})`,
    ).toBeGreaterThanOrEqual(5);
  });

  test("SIGTERM: STOPPING=1, exit 0, services stay programmed", async () => {
    expect(await agent.stop(), `exit code after SIGTERM\n${agent.tail()}`).toBe(0);
    expect(
      agent.notify?.assignments().some((a) => a.key === "STOPPING" && a.value === "1"),
      `STOPPING=1 sent (got ${JSON.stringify(agent.notify?.datagrams().slice(-3))})`,
    ).toBe(true);
    expect(
      await answers(topo(), NS.client, `http://${ADDR.node1}:${WEB_NP}/`, 2),
      "web with no daemon",
    ).toEqual({
      [POD_NAMES.podA]: 2,
    });
  });
});
