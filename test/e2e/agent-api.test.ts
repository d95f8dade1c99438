/**
 * End-to-end: `kpr run --kubeconfig K` on node-1 of the namespace cluster (see _cluster.ts),
 * following the test API server (test/harness/apiserver.ts: TLS, bearer token, list/watch,
 * bookmarks, 410 Gone, dropped connections). The server listens on the test process's loopback;
 * a relay makes it reachable on node-1's loopback under the same URL. Services and endpoints
 * appear, change and disappear in `kpr service list` and in traffic; a dropped watch and a 410
 * converge; an outage changes nothing in the datapath and recovery converges; a daemon started
 * while the API is unreachable wipes nothing.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { needs } from "../harness/env.ts";
import { useTopology } from "../harness/netns.ts";
import {
  type Agent,
  agentMissing,
  agentStatus,
  answers,
  datapathSnapshot,
  frontends,
  type LoopbackRelay,
  pollFrontends,
  pollTraffic,
  relayLoopback,
  serviceList,
  showFrontends,
  startAgent,
} from "./_agent.ts";
import { ADDR, buildCluster, httpPort, kprOk, NS, POD_NAMES, writeManifests } from "./_cluster.ts";
import { type EndpointSpec, node, service } from "./_manifests.ts";

const A: EndpointSpec = { ip: ADDR.podA, nodeName: "node-1" };
const B: EndpointSpec = { ip: ADDR.podB, nodeName: "node-1" };
const R: EndpointSpec = { ip: ADDR.podR, nodeName: "node-2" };
const WEB_IP = "10.96.0.80";
const WEB_NP = 30080;
const API_IP = "10.96.0.81";
const API_NP = 30081;
const PRE_IP = "10.96.0.82";

type Obj = { kind: string; metadata: { name: string; namespace?: string } };
const web = (eps: EndpointSpec[]) =>
  service({
    name: "web",
    type: "NodePort",
    clusterIP: WEB_IP,
    ports: [httpPort(WEB_NP)],
    endpoints: eps,
  }) as Obj[];
const apiSvc = (eps: EndpointSpec[]) =>
  service({
    name: "api",
    type: "NodePort",
    clusterIP: API_IP,
    ports: [httpPort(API_NP)],
    endpoints: eps,
  }) as Obj[];
const has = (f: Map<string, string[]>, frontend: string, backends: string[]) =>
  f.get(frontend)?.join() ===
  backends
    .map((b) => `${b}:8080`)
    .sort()
    .join();
const gone = (f: Map<string, string[]>, ip: string, np?: number) =>
  ![...f.keys()].some((k) => k.startsWith(`${ip}:`) || (np !== undefined && k.endsWith(`:${np}/TCP`)));

const skip =
  needs(
    {
      root: true,
      built: true,
      tools: ["ip", "nsenter", "curl", "python3", "bpftool", "socat", "ss", "openssl"],
    },
    "e2e agent (API mode)",
  ) ?? agentMissing("e2e agent (API mode)");

describe.skipIf(!!skip)("e2e: kpr run --kubeconfig against a live API server", () => {
  const topo = useTopology({ setup: buildCluster });
  // Imported here: the module needs openssl at start, which `skip` checked.
  let api: import("../harness/apiserver.ts").ApiServer;
  let relay: LoopbackRelay;
  let agent: Agent;
  const apply = (objs: Obj[]) => {
    for (const o of objs) api.apply(o);
  };
  const remove = (objs: Obj[]) => {
    for (const o of objs) api.delete(o);
  };
  const frontendsNow = async () => frontends(await serviceList(topo(), NS.node1));
  const converge = (what: string, cond: (f: Map<string, string[]>) => boolean, timeoutMs = 5000) =>
    pollFrontends(topo(), NS.node1, what, cond, timeoutMs).catch((e: Error) => {
      throw new Error(`${e.message}\n${agent.tail()}`);
    });

  beforeAll(async () => {
    const { startApiServer } = await import("../harness/apiserver.ts");
    api = await startApiServer({ bookmarkIntervalMs: 500 });
    relay = await relayLoopback(topo(), NS.node1, Number(new URL(api.url).port));
  });
  afterAll(async () => {
    await relay?.stop();
    await api?.stop();
  });

  test("services and endpoints appear, change and disappear in service list and in traffic", async () => {
    api.apply(node("node-1", ADDR.node1) as Obj);
    apply(web([A]));
    agent = await startAgent(topo(), NS.node1, ["--kubeconfig", api.kubeconfigPath]);
    await agent.waitReady();
    expect(
      has(await frontendsNow(), `${WEB_IP}:80/TCP`, [ADDR.podA]),
      "web ClusterIP → pod-a after READY=1",
    ).toBe(true);
    expect(await answers(topo(), NS.client, `http://${ADDR.node1}:${WEB_NP}/`, 3), "web NodePort").toEqual({
      [POD_NAMES.podA]: 3,
    });
    expect(
      await answers(topo(), NS.node1, `http://${WEB_IP}/`, 3, { cgroup: true }),
      "web ClusterIP",
    ).toEqual({
      [POD_NAMES.podA]: 3,
    });
    const svcList = api.requests.filter((r) => r.startsWith("GET /api/v1/services"));
    expect(
      svcList.some((r) => decodeURIComponent(r).includes("!service.kubernetes.io/service-proxy-name")),
      `services are listed with kube-proxy's label selector: ${svcList.slice(0, 2).join(" | ")}`,
    ).toBe(true);
    const pods = api.requests.filter((r) => r.startsWith("GET /api/v1/pods"));
    expect(
      pods.length > 0 && pods.every((r) => decodeURIComponent(r).includes("spec.nodeName=node-1")),
      `pods are listed and watched for this node only: ${pods.slice(0, 2).join(" | ")}`,
    ).toBe(true);

    const t0 = Date.now();
    apply(web([A, B]));
    await converge("web gets pod-b", (f) => has(f, `${WEB_IP}:80/TCP`, [ADDR.podA, ADDR.podB]));
    console.log(`API endpoint change → service list shows it: ${Date.now() - t0} ms`);
    await pollTraffic(topo(), NS.client, `http://${ADDR.node1}:${WEB_NP}/`, [POD_NAMES.podA, POD_NAMES.podB]);
    await pollTraffic(topo(), NS.node1, `http://${WEB_IP}/`, [POD_NAMES.podA, POD_NAMES.podB], {
      cgroup: true,
    });

    apply(apiSvc([R]));
    await converge("api appears", (f) => has(f, `${ADDR.node1}:${API_NP}/TCP`, [ADDR.podR]));
    await pollTraffic(topo(), NS.client, `http://${ADDR.node1}:${API_NP}/`, [POD_NAMES.podR]);

    remove(web([]));
    await converge("web disappears", (f) => gone(f, WEB_IP, WEB_NP) && f.has(`${API_IP}:80/TCP`));
    await pollTraffic(topo(), NS.client, `http://${ADDR.node1}:${WEB_NP}/`, [], {
      what: "web NodePort stops",
    });
  });

  test("a dropped watch (closed or reset) converges", async () => {
    for (const how of ["end", "reset"] as const) {
      const watches = api.watchCount;
      expect(watches, "the daemon holds open watches").toBeGreaterThan(0);
      api.dropWatches(how);
      apply(apiSvc(how === "end" ? [A] : [B]));
      await converge(`api's endpoint change after a dropped watch (${how})`, (f) =>
        has(f, `${API_IP}:80/TCP`, [how === "end" ? ADDR.podA : ADDR.podB]),
      );
      await converge(`watches re-opened after ${how}`, () => api.watchCount >= watches);
    }
    await pollTraffic(topo(), NS.client, `http://${ADDR.node1}:${API_NP}/`, [POD_NAMES.podB]);
  });

  test("a 410 Gone converges: objects deleted during the gap disappear, created ones appear", async () => {
    const lists = () =>
      api.requests.filter((r) => r.startsWith("GET /api/v1/services") && !/[?&]watch=(true|1)/.test(r))
        .length;
    await api.setDown(true, "refuse");
    remove(apiSvc([]));
    apply(web([B]));
    api.compact();
    const listsBefore = lists();
    await api.setDown(false);
    await converge(
      "after the 410 relist: api gone, web → pod-b",
      (f) => gone(f, API_IP, API_NP) && has(f, `${WEB_IP}:80/TCP`, [ADDR.podB]),
    );
    await pollTraffic(topo(), NS.client, `http://${ADDR.node1}:${API_NP}/`, [], {
      what: "api NodePort stops",
    });
    await pollTraffic(topo(), NS.client, `http://${ADDR.node1}:${WEB_NP}/`, [POD_NAMES.podB]);
    expect(
      lists(),
      "services were listed again after the 410 (a relist, not a resumed watch)",
    ).toBeGreaterThan(listsBefore);

    apply(apiSvc([R]));
    await converge("api created again", (f) => has(f, `${API_IP}:80/TCP`, [ADDR.podR]));
    api.dropWatches("expire");
    apply(web([A]));
    await converge("after an ERROR 410 Expired on the watch: web → pod-a", (f) =>
      has(f, `${WEB_IP}:80/TCP`, [ADDR.podA]),
    );
  });

  test("an API outage changes nothing in the datapath; recovery converges within seconds", async () => {
    const before = datapathSnapshot(topo());
    const list = showFrontends(await frontendsNow());
    const tried = relay.connections;
    await api.setDown(true, "reset");
    await converge(
      "the daemon tried the API at least twice during the outage",
      () => relay.connections >= tried + 2,
      20_000,
    );
    expect(agent.running(), "the daemon keeps running while the API is away").toBe(true);
    const st = await agentStatus(topo(), NS.node1);
    expect(
      {
        running: st?.running,
        sourceError: typeof st?.sourceError,
      },
      `kpr status names the API problem during the outage: ${JSON.stringify(st)}`,
    ).toEqual({ running: true, sourceError: "string" });
    expect(datapathSnapshot(topo()), "maps and links byte-identical during the outage").toEqual(before);
    expect(showFrontends(await frontendsNow()), "service list during the outage").toBe(list);
    expect(
      await answers(topo(), NS.client, `http://${ADDR.node1}:${WEB_NP}/`, 3),
      "web during the outage",
    ).toEqual({
      [POD_NAMES.podA]: 3,
    });

    apply(web([B]));
    remove(apiSvc([]));
    const t0 = Date.now();
    await api.setDown(false);
    await converge(
      "converged after the outage",
      (f) => has(f, `${WEB_IP}:80/TCP`, [ADDR.podB]) && gone(f, API_IP, API_NP),
    );
    console.log(`API back → converged: ${Date.now() - t0} ms`);
    await pollTraffic(topo(), NS.client, `http://${ADDR.node1}:${WEB_NP}/`, [POD_NAMES.podB]);
  });

  test("a daemon started while the API is unreachable wipes nothing, then converges", async () => {
    expect(await agent.stop(), `exit code after SIGTERM\n${agent.tail()}`).toBe(0);
    const pre = service({
      name: "pre",
      type: "ClusterIP",
      clusterIP: PRE_IP,
      ports: [httpPort()],
      endpoints: [A],
    });
    const file = await writeManifests(topo(), "pre.yaml", [node("node-1", ADDR.node1), ...web([B]), ...pre]);
    await kprOk(topo(), ["apply", "-f", file]);
    const before = datapathSnapshot(topo());
    const list = showFrontends(await frontendsNow());
    expect(list, "kpr apply programmed pre").toContain(`${PRE_IP}:80/TCP`);

    await api.setDown(true, "refuse");
    const tried = relay.connections;
    agent = await startAgent(topo(), NS.node1, ["--kubeconfig", api.kubeconfigPath], {
      name: "started-offline",
    });
    await converge(
      "the offline daemon tried the API at least twice",
      () => relay.connections >= tried + 2,
      20_000,
    );
    expect(agent.running(), "the daemon keeps running while the API is unreachable").toBe(true);
    const offline = await agentStatus(topo(), NS.node1);
    expect(datapathSnapshot(topo()), "maps and links untouched by a daemon that cannot list").toEqual(before);
    expect(
      await answers(topo(), NS.node1, `http://${PRE_IP}/`, 3, { cgroup: true }),
      "pre keeps answering",
    ).toEqual({
      [POD_NAMES.podA]: 3,
    });
    expect(
      agent.notify?.assignments().some((a) => a.key === "READY"),
      "no READY=1 before the first complete sync",
    ).toBe(false);

    await api.setDown(false);
    await agent.waitReady();
    await converge(
      "converged to the API's state once it is reachable (pre removed)",
      (f) => gone(f, PRE_IP) && has(f, `${WEB_IP}:80/TCP`, [ADDR.podB]),
    );
    await pollTraffic(topo(), NS.node1, `http://${PRE_IP}/`, [], {
      cgroup: true,
      what: "pre stops answering",
    });
    expect(
      {
        running: offline?.running,
        lastSync: offline?.lastSync,
        sourceError: typeof offline?.sourceError,
      },
      `kpr status of a daemon that never reached the API: ${JSON.stringify(offline)}`,
    ).toEqual({ running: true, lastSync: undefined, sourceError: "string" });
    expect(await agent.stop(), `exit code after SIGTERM\n${agent.tail()}`).toBe(0);
  });
});
