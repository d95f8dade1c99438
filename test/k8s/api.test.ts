/**
 * The live API source against the test API server: initial sync, changes in snapshot() and
 * takeChanges(), kube-proxy's selectors, dropped watches, 410 relists, outages.
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createConsola } from "consola";
import { ApiSource, serviceLabelSelector, toEndpointSlice, toService } from "../../src/k8s/api.ts";
import type { ClusterState } from "../../src/k8s/types.ts";
import { type ApiServer, type KubeObject, startApiServer } from "../harness/apiserver.ts";
import { needs } from "../harness/env.ts";

setDefaultTimeout(60_000);

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await Bun.sleep(10);
  }
}

const quiet = createConsola({ level: -999 });

const svc = (ns: string, name: string, labels: Record<string, string> = {}, port = 80): KubeObject => ({
  kind: "Service",
  metadata: {
    namespace: ns,
    name,
    labels,
    annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{}" },
  },
  spec: {
    type: "NodePort",
    clusterIP: "10.96.0.10",
    clusterIPs: ["10.96.0.10"],
    ports: [{ name: "http", port, protocol: "TCP", targetPort: "http", nodePort: 30080 }],
    selector: { app: name },
    sessionAffinity: "None",
    externalTrafficPolicy: "Cluster",
  },
  status: { loadBalancer: {} },
});
const slice = (
  ns: string,
  name: string,
  service: string,
  ips: string[],
  labels: Record<string, string> = {},
) => ({
  kind: "EndpointSlice",
  metadata: { namespace: ns, name, labels: { "kubernetes.io/service-name": service, ...labels } },
  addressType: "IPv4",
  endpoints: ips.map((ip) => ({
    addresses: [ip],
    conditions: { ready: true, serving: true, terminating: false },
    nodeName: "node-1",
    zone: "z1",
    hints: { forZones: [{ name: "z1" }] },
  })),
  ports: [{ name: "http", port: 8080, protocol: "TCP" }],
});
const pod = (name: string, nodeName: string) => ({
  kind: "Pod",
  metadata: { namespace: "default", name },
  spec: {
    nodeName,
    containers: [{ name: "c", ports: [{ containerPort: 80, hostPort: 8080, protocol: "TCP" }] }],
  },
  status: { phase: "Running", podIP: "10.1.0.5", podIPs: [{ ip: "10.1.0.5" }] },
});
const node = (name: string, zone = "z1") => ({
  kind: "Node",
  metadata: { name, labels: { "topology.kubernetes.io/zone": zone } },
  status: { addresses: [{ type: "InternalIP", address: "192.168.0.1" }] },
});

const names = (objs: { metadata: { namespace?: string; name?: string } }[]) =>
  objs.map((o) => `${o.metadata.namespace ?? ""}/${o.metadata.name}`).sort();
const summary = (s: ClusterState) => ({
  services: names(s.services),
  endpointSlices: names(s.endpointSlices),
  pods: names(s.pods),
  nodes: names(s.nodes),
});

test("kube-proxy's label selector", () => {
  expect(serviceLabelSelector(), "default").toBe(
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless",
  );
  expect(serviceLabelSelector("kpr"), "with k8s.serviceProxyName").toBe(
    "service.kubernetes.io/service-proxy-name=kpr",
  );
});

test("conversion keeps what translate reads, drops the rest, sets kind", () => {
  const raw = {
    ...svc("default", "web"),
    apiVersion: "v1",
    metadata: {
      ...svc("default", "web").metadata,
      uid: "u",
      managedFields: [{ manager: "kubectl" }],
      resourceVersion: "7",
    },
  };
  expect(toService(raw), "service").toEqual({
    kind: "Service",
    metadata: { namespace: "default", name: "web", labels: {}, annotations: {}, resourceVersion: "7" },
    spec: {
      type: "NodePort",
      clusterIP: "10.96.0.10",
      clusterIPs: ["10.96.0.10"],
      ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: "http", nodePort: 30080 }],
      selector: { app: "web" },
      sessionAffinity: "None",
      externalTrafficPolicy: "Cluster",
    },
    status: undefined,
  } as unknown as ReturnType<typeof toService>);
  const es = toEndpointSlice({ ...slice("default", "web-1", "web", ["10.0.0.1"]), endpoints: null });
  expect(es, "a slice with endpoints: null").toEqual({
    kind: "EndpointSlice",
    metadata: { namespace: "default", name: "web-1", labels: { "kubernetes.io/service-name": "web" } },
    addressType: "IPv4",
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  });
});

const noOpenssl = needs({ tools: ["openssl"] }, "API source against the test API server");
describe.skipIf(!!noOpenssl)("ApiSource", () => {
  let api: ApiServer | undefined;
  let src: ApiSource | undefined;
  let calls = 0;
  let syncedLog: boolean[] = [];
  afterEach(async () => {
    await src?.stop();
    await api?.stop();
    src = undefined;
    api = undefined;
  });
  const start = async (
    objects: KubeObject[],
    opts: { serviceProxyName?: string; pageSize?: number } = {},
  ) => {
    api = await startApiServer({ objects, bookmarkIntervalMs: 200 });
    src = new ApiSource({
      kubeconfig: api.kubeconfigPath,
      nodeName: "node-1",
      log: quiet,
      initialBackoffMs: 20,
      maxBackoffMs: 200,
      ...opts,
    });
    calls = 0;
    syncedLog = [];
    const s = src;
    await s.start(() => {
      calls++;
      syncedLog.push(s.synced);
    });
    return { api, src };
  };

  test("initial sync: every informer lists, snapshot in kpr's shapes, everything changed", async () => {
    const { api, src } = await start(
      [
        svc("default", "web"),
        slice("default", "web-1", "web", ["10.0.0.1"]),
        slice("default", "web-2", "web", ["10.0.0.2"]),
        pod("p1", "node-1"),
        pod("p2", "node-2"),
        node("node-1"),
        node("node-2"),
      ],
      { pageSize: 1 },
    );
    expect(src.description, "description").toBe(`api ${api.url} (kubeconfig ${api.kubeconfigPath})`);
    await until("synced and watching", () => src.synced && api.watchCount === 4);
    expect(src.lastError, "healthy").toBeUndefined();
    expect(calls, "onChange called").toBeGreaterThan(0);
    const snap = src.snapshot();
    expect(summary(snap), "objects").toEqual({
      services: ["default/web"],
      endpointSlices: ["default/web-1", "default/web-2"],
      pods: ["default/p1"],
      nodes: ["/node-1"],
    });
    expect(snap.nodes[0], "node converted").toEqual({
      kind: "Node",
      metadata: {
        name: "node-1",
        labels: { "topology.kubernetes.io/zone": "z1" },
        resourceVersion: expect.any(String),
      },
      status: { addresses: [{ type: "InternalIP", address: "192.168.0.1" }] },
    } as never);
    expect(snap.pods[0]?.spec?.containers?.[0]?.ports, "hostPort kept").toEqual([
      { containerPort: 80, hostPort: 8080, protocol: "TCP" },
    ]);
    expect(
      snap.endpointSlices.find((e) => e.metadata.name === "web-1")?.endpoints,
      "endpoints converted",
    ).toEqual([
      {
        addresses: ["10.0.0.1"],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: "node-1",
        zone: "z1",
        hints: { forZones: [{ name: "z1" }] },
      },
    ]);
    expect(snap.endpoints, "legacy Endpoints are not watched").toEqual([]);
    const ch = src.takeChanges();
    expect(ch.all, "initial sync retranslates all").toBe(true);
    expect([...ch.services], "services touched").toEqual(["default/web"]);
    expect(src.takeChanges(), "changes reset").toEqual({ all: false, services: new Set(), pods: false });
    const pages = api.requests.filter((r) => r.includes("continue="));
    expect(pages.length, "the two slices listed in two pages").toBe(1);
    expect(pages[0], "second page of endpointslices").toStartWith(
      "GET /apis/discovery.k8s.io/v1/endpointslices?",
    );
    const watches = api.requests.filter((r) => r.includes("watch=true"));
    expect(watches.length, "four watches").toBe(4);
    for (const w of watches) expect(w, "bookmarks requested").toContain("allowWatchBookmarks=true");
  });

  test("add, modify, delete of Services and EndpointSlices: snapshot and precise changes", async () => {
    const { api, src } = await start([svc("default", "web"), slice("default", "web-1", "web", ["10.0.0.1"])]);
    await until("synced", () => src.synced);
    src.takeChanges();

    api.create(svc("default", "api"));
    await until("new service", () => src.snapshot().services.length === 2);
    expect(src.takeChanges(), "add").toEqual({ all: false, services: new Set(["default/api"]), pods: false });

    api.create(slice("default", "api-1", "api", ["10.0.1.1"]));
    api.update(slice("default", "web-1", "web", ["10.0.0.9"]));
    await until("slice changes", () => {
      const o = src.serviceObjects("default/web").endpointSlices[0]?.endpoints?.[0]?.addresses?.[0];
      return o === "10.0.0.9" && src.serviceObjects("default/api").endpointSlices.length === 1;
    });
    expect(src.takeChanges(), "slice add + update map to their services").toEqual({
      all: false,
      services: new Set(["default/api", "default/web"]),
      pods: false,
    });
    const web = src.serviceObjects("default/web");
    expect(
      { s: names(web.services), es: names(web.endpointSlices), ep: web.endpoints },
      "serviceObjects(default/web)",
    ).toEqual({ s: ["default/web"], es: ["default/web-1"], ep: [] });

    api.update(svc("default", "web", {}, 81));
    await until(
      "modified port",
      () => src.serviceObjects("default/web").services[0]?.spec?.ports?.[0]?.port === 81,
    );
    expect([...src.takeChanges().services], "modify").toEqual(["default/web"]);

    api.delete(slice("default", "web-1", "web", []));
    api.delete(svc("default", "api"));
    await until(
      "deletes",
      () => src.snapshot().services.length === 1 && src.snapshot().endpointSlices.length === 1,
    );
    expect(src.takeChanges(), "deletes").toEqual({
      all: false,
      services: new Set(["default/web", "default/api"]),
      pods: false,
    });
    expect(src.serviceObjects("default/web").endpointSlices, "no slices left for web").toEqual([]);
    expect(src.serviceObjects("default/api").services, "api gone").toEqual([]);
  });

  test("label selectors: proxy-name and headless are filtered server-side, also when labels change", async () => {
    const { api, src } = await start([
      svc("default", "web"),
      svc("default", "headless", { "service.kubernetes.io/headless": "" }),
      svc("default", "other", { "service.kubernetes.io/service-proxy-name": "other" }),
      slice("default", "web-1", "web", ["10.0.0.1"]),
      slice("default", "headless-1", "headless", ["10.0.0.2"], { "service.kubernetes.io/headless": "" }),
      slice("default", "other-1", "other", ["10.0.0.3"], {
        "service.kubernetes.io/service-proxy-name": "other",
      }),
    ]);
    await until("synced", () => src.synced);
    expect(summary(src.snapshot()), "kube-proxy's selection").toMatchObject({
      services: ["default/web"],
      endpointSlices: ["default/web-1"],
    });
    src.takeChanges();
    api.update(svc("default", "web", { "service.kubernetes.io/service-proxy-name": "other" }));
    await until("web leaves the selection", () => src.snapshot().services.length === 0);
    expect([...src.takeChanges().services], "leaving is a change").toEqual(["default/web"]);
    const q = api.requests.find((r) => r.startsWith("GET /api/v1/services?") && !r.includes("watch"));
    expect(decodeURIComponent(q ?? ""), "selector sent to the server").toContain(
      "labelSelector=!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless",
    );
  });

  test("k8s.serviceProxyName: only Services labelled with it", async () => {
    const { src } = await start(
      [
        svc("default", "web"),
        svc("default", "mine", { "service.kubernetes.io/service-proxy-name": "kpr" }),
        svc("default", "other", { "service.kubernetes.io/service-proxy-name": "other" }),
      ],
      { serviceProxyName: "kpr" },
    );
    await until("synced", () => src.synced);
    expect(names(src.snapshot().services), "selected").toEqual(["default/mine"]);
  });

  test("field selectors: Pods of this node only, this node's Node; pod change → pods, node change → all", async () => {
    const { api, src } = await start([
      pod("p1", "node-1"),
      pod("p2", "node-2"),
      node("node-1"),
      node("node-2"),
    ]);
    await until("synced", () => src.synced);
    src.takeChanges();
    api.create(pod("p3", "node-2"));
    api.create(pod("p4", "node-1"));
    await until("pod of this node", () => src.snapshot().pods.length === 2);
    expect(names(src.snapshot().pods), "pods").toEqual(["default/p1", "default/p4"]);
    expect(src.takeChanges(), "pod change").toEqual({ all: false, services: new Set(), pods: true });
    api.update(node("node-2", "z9"));
    api.update(node("node-1", "z2"));
    await until(
      "node label change",
      () => src.snapshot().nodes[0]?.metadata.labels?.["topology.kubernetes.io/zone"] === "z2",
    );
    expect(names(src.snapshot().nodes), "only this node").toEqual(["/node-1"]);
    expect(src.takeChanges().all, "node change → all").toBe(true);
    for (const r of api.requests.filter((r) => r.includes("/api/v1/pods")))
      expect(decodeURIComponent(r), "pods requests select the node").toContain(
        "fieldSelector=spec.nodeName=node-1",
      );
    for (const r of api.requests.filter((r) => r.includes("/api/v1/nodes")))
      expect(decodeURIComponent(r), "node requests select by name").toContain(
        "fieldSelector=metadata.name=node-1",
      );
  });

  test.each(["end", "reset"] as const)("dropped watch (%s) → reconnect and converge", async (how) => {
    const { api, src } = await start([svc("default", "web")]);
    await until("synced", () => src.synced && api.watchCount === 4);
    const lists = api.requests.filter((r) => !r.includes("watch=")).length;
    api.dropWatches(how);
    api.create(svc("default", "during"));
    await until("converged", () => src.snapshot().services.length === 2 && api.watchCount === 4);
    await until("healthy", () => src.lastError === undefined);
    expect(src.synced, "still synced").toBe(true);
    expect(
      api.requests.filter((r) => !r.includes("watch=")).length,
      "resumed from its version: no relist",
    ).toBe(lists);
  });

  test("410 on re-watch: relist converges, deletes what vanished, synced again", async () => {
    const { api, src } = await start([svc("default", "web"), svc("default", "gone"), node("node-1")]);
    await until("synced", () => src.synced);
    src.takeChanges();
    await api.setDown(true);
    await until("error reported", () => src.lastError !== undefined);
    expect(names(src.snapshot().services), "snapshot kept while away").toEqual([
      "default/gone",
      "default/web",
    ]);
    api.delete(svc("default", "gone"));
    api.create(svc("default", "new"));
    api.compact();
    await api.setDown(false);
    await until(
      "converged",
      () => src.synced && src.lastError === undefined && src.snapshot().services.length === 2,
    );
    expect(names(src.snapshot().services), "after relist").toEqual(["default/new", "default/web"]);
    const ch = src.takeChanges();
    expect(ch.all, "resync → all").toBe(true);
    expect([...ch.services].sort(), "gone and new among the changes").toEqual(
      expect.arrayContaining(["default/gone", "default/new"]),
    );
  });

  test("410 as an ERROR event on an open watch: synced drops, relist, synced again", async () => {
    const { api, src } = await start([svc("default", "web")]);
    await until("synced", () => src.synced && api.watchCount === 4);
    syncedLog = [];
    const lists = api.requests.filter((r) => !r.includes("watch=")).length;
    api.dropWatches("expire");
    await until("relisted", () => api.requests.filter((r) => !r.includes("watch=")).length === lists + 4);
    await until("synced again", () => src.synced && api.watchCount === 4);
    expect(syncedLog, "synced went false, then true again").toContain(false);
    expect(syncedLog.at(-1), "synced at the end").toBe(true);
    expect(names(src.snapshot().services), "same objects").toEqual(["default/web"]);
    expect(src.takeChanges().all, "resync → all").toBe(true);
  });

  test("server down (refused, then reset) then up: lastError while away, snapshot kept, converges", async () => {
    const { api, src } = await start([svc("default", "web"), slice("default", "web-1", "web", ["10.0.0.1"])]);
    await until("synced", () => src.synced);
    for (const how of ["refuse", "reset"] as const) {
      await api.setDown(true, how);
      await until(`error while ${how}`, () => src.lastError !== undefined);
      expect(src.lastError, `lastError names the server (${how})`).toContain(api.url);
      const snap = summary(src.snapshot());
      api.update(slice("default", "web-1", "web", [`10.0.0.${how === "refuse" ? 2 : 3}`]));
      const retries = calls;
      await until(`every informer retried while ${how}`, () => calls >= retries + 8);
      expect(summary(src.snapshot()), `snapshot unchanged while away (${how})`).toEqual(snap);
      await api.setDown(false);
      const want = `10.0.0.${how === "refuse" ? 2 : 3}`;
      await until(
        `converged after ${how}`,
        () =>
          src.lastError === undefined &&
          src.serviceObjects("default/web").endpointSlices[0]?.endpoints?.[0]?.addresses?.[0] === want,
      );
    }
  });

  test("silent API (a partition: connections open, nothing answered): timeouts, lastError, then converges", async () => {
    api = await startApiServer({ objects: [svc("default", "web")], bookmarkIntervalMs: 60_000 });
    src = new ApiSource({
      kubeconfig: api.kubeconfigPath,
      nodeName: "node-1",
      log: quiet,
      initialBackoffMs: 20,
      maxBackoffMs: 200,
      watchTimeoutSeconds: [1, 1],
      watchGraceMs: 300,
      requestTimeoutMs: 500,
    });
    const [a, s] = [api, src];
    await a.setDown(true, "hang");
    await s.start(() => {});
    await until("hung list detected", () => (s.lastError ?? "").includes("list: no response"), 15_000);
    expect(s.synced, "not synced while the list hangs").toBe(false);
    await a.setDown(false);
    await until("synced", () => s.synced && s.lastError === undefined && a.watchCount === 4, 15_000);
    await a.setDown(true, "hang");
    a.create(svc("default", "held"));
    await until("stalled watch detected", () => (s.lastError ?? "").includes("stream silent"), 15_000);
    await until("hung re-watch detected", () => (s.lastError ?? "").includes("watch: no response"), 15_000);
    expect(names(s.snapshot().services), "snapshot kept").toEqual(["default/web"]);
    await a.setDown(false);
    await until("converged", () => s.lastError === undefined && s.snapshot().services.length === 2, 15_000);
    expect(s.synced, "synced").toBe(true);
  });

  test("a server that ends every watch at once: re-watches go through the backoff, not a tight loop", async () => {
    api = await startApiServer({ objects: [svc("default", "web")], maxWatchMs: 0 });
    src = new ApiSource({
      kubeconfig: api.kubeconfigPath,
      nodeName: "node-1",
      log: quiet,
      initialBackoffMs: 100,
      maxBackoffMs: 400,
    });
    const [a, s] = [api, src];
    await s.start(() => {});
    await until("synced", () => s.synced);
    await until("reported", () => (s.lastError ?? "").includes("closed by the server as soon as it opened"));
    const watchTimes = (path: string) =>
      a.requests.flatMap((r, i) =>
        r.startsWith(`GET ${path}?`) && r.includes("watch=true") ? [a.requestTimes[i]!] : [],
      );
    await until("several re-watches of services", () => watchTimes("/api/v1/services").length >= 5);
    const t = watchTimes("/api/v1/services");
    const gaps = t.slice(1).map((x, i) => x - t[i]!);
    expect(Math.min(...gaps), "no re-watch sooner than half the first backoff").toBeGreaterThanOrEqual(50);
    expect(names(s.snapshot().services), "snapshot intact").toEqual(["default/web"]);
  });

  test("unreachable at start: not synced, error reported, nothing listed; syncs once the API is up", async () => {
    api = await startApiServer({ objects: [svc("default", "web")] });
    await api.setDown(true);
    src = new ApiSource({
      kubeconfig: api.kubeconfigPath,
      nodeName: "node-1",
      log: quiet,
      initialBackoffMs: 20,
      maxBackoffMs: 200,
    });
    const s = src;
    await s.start(() => {});
    await until("error", () => s.lastError !== undefined);
    expect(s.synced, "not synced").toBe(false);
    expect(summary(s.snapshot()), "empty").toEqual({ services: [], endpointSlices: [], pods: [], nodes: [] });
    await api.setDown(false);
    await until("synced", () => s.synced && s.lastError === undefined);
    expect(names(s.snapshot().services), "listed").toEqual(["default/web"]);
  });

  test("client-certificate kubeconfig (k3s's kind): lists and watches", async () => {
    api = await startApiServer({ objects: [svc("default", "web")], kubeconfigAuth: "client-cert" });
    src = new ApiSource({ kubeconfig: api.kubeconfigPath, nodeName: "node-1", log: quiet });
    const [a, s] = [api, src];
    await s.start(() => {});
    await until("synced and watching", () => s.synced && a.watchCount === 4);
    a.create(svc("default", "second"));
    await until("watch event", () => s.snapshot().services.length === 2);
    expect(s.lastError, "healthy").toBeUndefined();
  });

  test("bad token: 401 reported as lastError, never synced", async () => {
    api = await startApiServer({ objects: [svc("default", "web")], token: "right" });
    const path = api.kubeconfigPath;
    await Bun.write(path, (await Bun.file(path).text()).replace("token: right", "token: wrong"));
    src = new ApiSource({
      kubeconfig: path,
      nodeName: "node-1",
      log: quiet,
      initialBackoffMs: 20,
      maxBackoffMs: 200,
    });
    const s = src;
    await s.start(() => {});
    await until("error", () => s.lastError !== undefined);
    expect(s.lastError, "401").toContain("HTTP 401");
    expect(s.synced, "not synced").toBe(false);
  });
});
