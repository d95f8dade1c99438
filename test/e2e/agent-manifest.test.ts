/**
 * End-to-end: `kpr run --manifest DIR` on node-1 of the namespace cluster (see _cluster.ts). The
 * daemon follows a directory of manifests: services appear in `kpr service list` and in traffic
 * (NodePort from the client namespace, ClusterIP from a process in node-1's cgroup), an edit is
 * programmed within a second of the write, a broken edit is rejected with file:line and the last
 * good state keeps serving, and an emptied or vanished directory removes nothing.
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { needs } from "../harness/env.ts";
import { pollUntil, useTopology } from "../harness/netns.ts";
import {
  type Agent,
  agentMissing,
  agentStatus,
  answers,
  frontends,
  pollFrontends,
  pollTraffic,
  serviceList,
  showFrontends,
  startAgent,
} from "./_agent.ts";
import { ADDR, buildCluster, httpPort, NS, POD_NAMES } from "./_cluster.ts";
import { type EndpointSpec, node, service } from "./_manifests.ts";

const A: EndpointSpec = { ip: ADDR.podA, nodeName: "node-1" };
const B: EndpointSpec = { ip: ADDR.podB, nodeName: "node-1" };
const R: EndpointSpec = { ip: ADDR.podR, nodeName: "node-2" };
const WEB_IP = "10.96.0.80";
const API_IP = "10.96.0.81";
const WEB_NP = 30080;
const API_NP = 30081;
const webNodePort = `http://${ADDR.node1}:${WEB_NP}/`;
const webClusterIP = `http://${WEB_IP}:80/`;
const apiNodePort = `http://${ADDR.node1}:${API_NP}/`;

const web = (eps: EndpointSpec[]) =>
  service({ name: "web", type: "NodePort", clusterIP: WEB_IP, ports: [httpPort(WEB_NP)], endpoints: eps });
const api = (eps: EndpointSpec[]) =>
  service({ name: "api", type: "NodePort", clusterIP: API_IP, ports: [httpPort(API_NP)], endpoints: eps });

const skip =
  needs(
    { root: true, built: true, tools: ["ip", "nsenter", "curl", "python3", "bpftool"] },
    "e2e agent (manifest mode)",
  ) ?? agentMissing("e2e agent (manifest mode)");

describe.skipIf(!!skip)("e2e: kpr run --manifest DIR on node-1", () => {
  let dir = "";
  const write = (file: string, objects: object[]) =>
    writeFileSync(join(dir, file), objects.map((o) => stringify(o)).join("---\n"));
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      dir = join(t.tmpDir, "manifests");
      mkdirSync(dir);
    },
  });
  let agent: Agent;

  test("services in the directory appear in service list and in traffic (NodePort, ClusterIP)", async () => {
    write("node.yaml", [node("node-1", ADDR.node1)]);
    write("web.yaml", web([A]));
    write("api.yaml", api([R]));
    agent = await startAgent(topo(), NS.node1, ["--manifest", dir]);
    await agent.waitReady();
    const f = frontends(await serviceList(topo(), NS.node1));
    expect(
      {
        web: f.get(`${WEB_IP}:80/TCP`),
        webNodePort: f.get(`${ADDR.node1}:${WEB_NP}/TCP`),
        api: f.get(`${API_IP}:80/TCP`),
      },
      `frontends after READY=1: ${showFrontends(f)}\n${agent.tail()}`,
    ).toEqual({
      web: [`${ADDR.podA}:8080`],
      webNodePort: [`${ADDR.podA}:8080`],
      api: [`${ADDR.podR}:8080`],
    });
    expect(await answers(topo(), NS.client, webNodePort, 4), "web NodePort from the client").toEqual({
      [POD_NAMES.podA]: 4,
    });
    expect(
      await answers(topo(), NS.node1, webClusterIP, 4, { cgroup: true }),
      "web ClusterIP from node-1's cgroup",
    ).toEqual({ [POD_NAMES.podA]: 4 });
    expect(await answers(topo(), NS.client, apiNodePort, 2), "api NodePort (remote backend)").toEqual({
      [POD_NAMES.podR]: 2,
    });
    const st = await agentStatus(topo(), NS.node1);
    expect(
      { running: st?.running, source: st?.source?.includes(dir), ok: st?.lastSync?.ok },
      `kpr status of the daemon: ${JSON.stringify(st)}`,
    ).toEqual({ running: true, source: true, ok: true });
  });

  test("an added endpoint is programmed within a second of the write and reached by traffic", async () => {
    const t0 = Date.now();
    write("web.yaml", web([A, B]));
    // Each check reads the maps with a `kpr service list` started before the deadline.
    let checkStarted = 0;
    await pollUntil(
      "web's ClusterIP has pod-a and pod-b in a service list started within 1 s of the write",
      async () => {
        checkStarted = Date.now();
        return frontends(await serviceList(topo(), NS.node1)).get(`${WEB_IP}:80/TCP`)?.length === 2;
      },
      1000,
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n${agent.tail()}`);
    });
    const programmedMs = checkStarted - t0;
    await pollTraffic(topo(), NS.client, webNodePort, [POD_NAMES.podA, POD_NAMES.podB]);
    await pollTraffic(topo(), NS.node1, webClusterIP, [POD_NAMES.podA, POD_NAMES.podB], { cgroup: true });
    const said = [...agent.log().matchAll(/event → last map write ([\d.]+) ms/g)].at(-1)?.[1];
    console.log(
      `manifest edit: in the maps for a service list started ${programmedMs} ms after the write; the daemon says event → last map write ${said ?? "?"} ms`,
    );
  });

  test("a removed service file removes the service: frontends gone, its NodePort stops answering", async () => {
    rmSync(join(dir, "api.yaml"));
    await pollFrontends(
      topo(),
      NS.node1,
      "api's frontends are gone within 1 s of the removal",
      (f) => ![...f.keys()].some((k) => k.startsWith(`${API_IP}:`) || k.endsWith(`:${API_NP}/TCP`)),
      1000,
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n${agent.tail()}`);
    });
    await pollTraffic(topo(), NS.client, apiNodePort, [], { what: "api's NodePort stops answering" });
    const still = await answers(topo(), NS.client, webNodePort, 4);
    expect(
      Object.keys(still).every((k) => k === POD_NAMES.podA || k === POD_NAMES.podB),
      `web still answers after api's removal: ${JSON.stringify(still)}`,
    ).toBe(true);
  });

  test("a broken edit is rejected with file:line, logged, and the last good state keeps serving", async () => {
    const before = frontends(await serviceList(topo(), NS.node1));
    const logBefore = agent.log().length;
    // web with its endpoints removed AND a bad port: the whole edit must be rejected.
    const broken = web([]) as { spec: { ports: { port: unknown }[] } }[];
    broken[0]!.spec.ports[0]!.port = "eighty";
    write("web.yaml", broken);
    const m = await agent.waitLog(/web\.yaml:(\d+)[^\n]*spec\.ports\[0\]\.port/, 3000);
    expect(agent.log().length > logBefore, "the rejection was logged after the write").toBe(true);
    expect(Number(m[1]), `line number in "${m[0]}"`).toBeGreaterThan(0);
    expect(agent.running(), "the daemon keeps running after a broken edit").toBe(true);
    const after = frontends(await serviceList(topo(), NS.node1));
    expect(showFrontends(after), "service list unchanged by the broken edit").toBe(showFrontends(before));
    const got = await answers(topo(), NS.client, webNodePort, 6);
    expect(
      Object.keys(got).every((k) => k === POD_NAMES.podA || k === POD_NAMES.podB),
      `web NodePort keeps answering from the last good state: ${JSON.stringify(got)}`,
    ).toBe(true);
    const rejected = await agentStatus(topo(), NS.node1);

    write("web.yaml", web([B]));
    await pollFrontends(
      topo(),
      NS.node1,
      "the fixed edit is programmed (web → pod-b only)",
      (f) => f.get(`${WEB_IP}:80/TCP`)?.join() === `${ADDR.podB}:8080`,
      3000,
    );
    await pollTraffic(topo(), NS.client, webNodePort, [POD_NAMES.podB]);
    const fixed = await agentStatus(topo(), NS.node1);
    expect(fixed?.lastSync?.ok, `kpr status after the fix: ${JSON.stringify(fixed)}`).toBe(true);
    expect(
      JSON.stringify(rejected),
      `kpr status (agent section) named the rejected edit's file:line while it was rejected\n${agent.tail(15)}`,
    ).toMatch(/web\.yaml:\d+/);
  });

  test("an emptied, then vanished, directory removes nothing (guard)", async () => {
    const before = showFrontends(frontends(await serviceList(topo(), NS.node1)));
    let from = agent.log().length;
    for (const f of ["web.yaml", "node.yaml"]) rmSync(join(dir, f));
    const emptied = await agent.waitLog(/^.*\S.*$/m, 3000, from);
    expect(agent.running(), "the daemon keeps running with an empty directory").toBe(true);
    expect(
      showFrontends(frontends(await serviceList(topo(), NS.node1))),
      `service list unchanged after emptying the directory (daemon said: ${emptied[0]})`,
    ).toBe(before);
    expect(await answers(topo(), NS.client, webNodePort, 3), "web NodePort still answers (emptied)").toEqual({
      [POD_NAMES.podB]: 3,
    });

    from = agent.log().length;
    rmSync(dir, { recursive: true });
    const vanished = await agent.waitLog(/^.*\S.*$/m, 3000, from);
    expect(agent.running(), "the daemon keeps running without its directory").toBe(true);
    expect(
      showFrontends(frontends(await serviceList(topo(), NS.node1))),
      `service list unchanged after the directory vanished (daemon said: ${vanished[0]})`,
    ).toBe(before);
    expect(
      await answers(topo(), NS.node1, webClusterIP, 3, { cgroup: true }),
      "web ClusterIP still answers (vanished)",
    ).toEqual({ [POD_NAMES.podB]: 3 });

    mkdirSync(dir);
    write("node.yaml", [node("node-1", ADDR.node1)]);
    write("web.yaml", web([A]));
    await pollFrontends(
      topo(),
      NS.node1,
      "the recreated directory is followed again (web → pod-a)",
      (f) => f.get(`${WEB_IP}:80/TCP`)?.join() === `${ADDR.podA}:8080`,
      3000,
    );
  });

  test("SIGTERM stops the daemon cleanly and leaves the datapath serving", async () => {
    const before = showFrontends(frontends(await serviceList(topo(), NS.node1)));
    expect(await agent.stop(), `exit code after SIGTERM\n${agent.tail()}`).toBe(0);
    expect(showFrontends(frontends(await serviceList(topo(), NS.node1))), "service list after SIGTERM").toBe(
      before,
    );
    expect(await answers(topo(), NS.client, webNodePort, 3), "web NodePort with no daemon").toEqual({
      [POD_NAMES.podA]: 3,
    });
    const st = await agentStatus(topo(), NS.node1);
    expect(st?.running ?? false, `kpr status after the daemon stopped: ${JSON.stringify(st)}`).toBe(false);
  });
});
