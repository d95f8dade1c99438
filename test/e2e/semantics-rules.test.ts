/**
 * kube-proxy's translation rules end to end on the namespace cluster (see _cluster.ts): dist/kpr
 * applies the manifests below on node-1, then real clients check what answers. Each test is named
 * after the kube-proxy behaviour it mirrors (kubernetes/kubernetes pkg/proxy).
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { needs } from "../harness/env.ts";
import type { ExecResult } from "../harness/netns.ts";
import { useTopology } from "../harness/netns.ts";
import { httpGet } from "../harness/servers.ts";
import { ADDR, buildCluster, HTTP_PORT, kprOk, NS, POD_NAMES, spread, writeManifests } from "./_cluster.ts";

setDefaultTimeout(120_000);

const ZONE = "zone-a";
const PROXY_NAME = "service.kubernetes.io/service-proxy-name";

interface SliceEndpoint {
  ip: string;
  nodeName: string;
  /** hints.forNodes names (forZones is this node's zone whenever forNodes is given) */
  forNodes?: string[];
}

/** A NodePort Service with one port http 80 → HTTP_PORT. */
function svc(name: string, clusterIP: string, nodePort: number, more: Record<string, unknown> = {}): object {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: "default" },
    spec: {
      type: "NodePort",
      clusterIP,
      clusterIPs: [clusterIP],
      ipFamilies: ["IPv4"],
      selector: { app: name },
      ports: [{ name: "http", port: 80, targetPort: HTTP_PORT, protocol: "TCP", nodePort }],
      ...more,
    },
  };
}

/** An EndpointSlice of service (ports: the slice's, default http → HTTP_PORT). */
function slice(
  name: string,
  service: string,
  endpoints: SliceEndpoint[],
  opts: { labels?: Record<string, string>; ports?: object[] } = {},
): object {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name,
      namespace: "default",
      labels: { "kubernetes.io/service-name": service, ...opts.labels },
    },
    addressType: "IPv4",
    endpoints: endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: e.nodeName,
      zone: ZONE,
      ...(e.forNodes
        ? { hints: { forZones: [{ name: ZONE }], forNodes: e.forNodes.map((name) => ({ name })) } }
        : {}),
    })),
    ports: opts.ports ?? [{ name: "http", port: HTTP_PORT, protocol: "TCP" }],
  };
}

const MANIFESTS = [
  {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name: "node-1",
      labels: { "kubernetes.io/hostname": "node-1", "topology.kubernetes.io/zone": ZONE },
    },
    status: { addresses: [{ type: "InternalIP", address: ADDR.node1 }] },
  },
  // nftables/proxier_test.go TestBadIPs: stored before the API refused leading zeros.
  svc("bad-ips", "10.96.0.081", 30081, { externalIPs: ["203.000.113.010"] }),
  slice("bad-ips-e2e", "bad-ips", [{ ip: "10.244.001.010", nodeName: "node-1" }]),
  // PreferSameNode: the hints the EndpointSlice controller writes (each endpoint for its own node;
  // both in this node's zone, so zone hints alone would keep both).
  svc("near", "10.96.0.82", 30082, { trafficDistribution: "PreferSameNode" }),
  slice("near-e2e", "near", [
    { ip: ADDR.podA, nodeName: "node-1", forNodes: ["node-1"] },
    { ip: ADDR.podR, nodeName: "node-2", forNodes: ["node-2"] },
  ]),
  svc("near-unhinted", "10.96.0.83", 30083),
  slice("near-unhinted-e2e", "near-unhinted", [
    { ip: ADDR.podA, nodeName: "node-1" },
    { ip: ADDR.podR, nodeName: "node-2" },
  ]),
  // A slice port without a number.
  svc("no-port", "10.96.0.84", 30084),
  slice("no-port-e2e", "no-port", [{ ip: ADDR.podA, nodeName: "node-1" }], {
    ports: [{ name: "http", protocol: "TCP" }],
  }),
  // One slice of the service is handed to another proxy.
  svc("mirror", "10.96.0.85", 30085),
  slice("mirror-own", "mirror", [{ ip: ADDR.podB, nodeName: "node-1" }]),
  slice("mirror-other", "mirror", [{ ip: ADDR.podR, nodeName: "node-2" }], {
    labels: { [PROXY_NAME]: "other" },
  }),
  svc("other-only", "10.96.0.86", 30086),
  slice("other-only-e2e", "other-only", [{ ip: ADDR.podR, nodeName: "node-2" }], {
    labels: { [PROXY_NAME]: "other" },
  }),
];

interface ListEntry {
  frontend: { address: string; port: number; protocol: string };
  service: string;
  backends: { address: string; port: number }[];
}

const skip = needs(
  { root: true, built: true, tools: ["ip", "nsenter", "curl", "sysctl"] },
  "e2e semantics rules",
);

describe.skipIf(!!skip)("e2e: kube-proxy's translation rules through kpr on node-1", () => {
  let applied: ExecResult | undefined;
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      const file = await writeManifests(t, "semantics.yaml", MANIFESTS);
      applied = await kprOk(t, ["apply", "-f", file]);
    },
  });

  /** Name of the pod that answered, or the failure. */
  const get =
    (ns: string, url: string, cgroup = false) =>
    async () => {
      const r = await httpGet(topo(), ns, url, { cgroup, timeoutMs: 3000 });
      return (
        r.echo?.name ?? { error: `curl ${url}: exit ${r.curlCode} status ${r.status} ${r.stderr.trim()}` }
      );
    };
  /** Backends (address:port) of each programmed frontend "address:port/PROTO". */
  const programmed = async (): Promise<Map<string, string[]>> => {
    const r = await kprOk(topo(), ["service", "list", "-o", "json"]);
    return new Map(
      (JSON.parse(r.stdout) as ListEntry[]).map((e) => [
        `${e.frontend.address}:${e.frontend.port}/${e.frontend.protocol}`,
        e.backends.map((b) => `${b.address}:${b.port}`),
      ]),
    );
  };
  /** The pods that answered 16 requests, and the failures. */
  const only = async (request: () => Promise<string | { error: string }>) => {
    const seen: Record<string, number> = {};
    const errors: string[] = [];
    for (let i = 0; i < 16; i++) {
      const r = await request();
      if (typeof r === "string") seen[r] = (seen[r] ?? 0) + 1;
      else errors.push(r.error);
    }
    return { pods: Object.keys(seen).sort(), errors };
  };

  test("TestBadIPs: a ClusterIP, external IP and endpoint with leading zeros are read as decimal, reachable, and warned about", async () => {
    const stderr = applied?.stderr ?? "";
    expect(stderr, "warning names the Service and its field").toMatch(
      /Service default\/bad-ips: spec\.clusterIPs\[0\]: .*10\.96\.0\.081.* has leading zeros: read as decimal 10\.96\.0\.81/,
    );
    expect(stderr, "warning names the external IP").toMatch(
      /Service default\/bad-ips: spec\.externalIPs\[0\]: .*203\.000\.113\.010.* read as decimal 203\.0\.113\.10/,
    );
    expect(stderr, "warning names the EndpointSlice and its field").toMatch(
      /EndpointSlice default\/bad-ips-e2e: endpoints\[0\]\.addresses\[0\]: .*10\.244\.001\.010.* read as decimal 10\.244\.1\.10/,
    );
    const p = await programmed();
    expect(
      { clusterIP: p.get("10.96.0.81:80/TCP"), externalIP: p.get(`${ADDR.externalIP}:80/TCP`) },
      "programmed in decimal",
    ).toEqual({ clusterIP: [`${ADDR.podA}:${HTTP_PORT}`], externalIP: [`${ADDR.podA}:${HTTP_PORT}`] });
    expect(
      await get(NS.node1, "http://10.96.0.81/", true)(),
      "ClusterIP 10.96.0.81 from node-1's cgroup",
    ).toBe(POD_NAMES.podA);
    expect(
      await get(NS.client, `http://${ADDR.externalIP}/`)(),
      "external IP 203.0.113.10 from the client",
    ).toBe(POD_NAMES.podA);
  });

  test("topology.go PreferSameNode: node-1 sends to the endpoint hinted for node-1 only (ClusterIP and NodePort)", async () => {
    const p = await programmed();
    expect(p.get("10.96.0.82:80/TCP"), "programmed backends of the ClusterIP").toEqual([
      `${ADDR.podA}:${HTTP_PORT}`,
    ]);
    const viaClusterIP = await only(get(NS.node1, "http://10.96.0.82/", true));
    expect(viaClusterIP, "ClusterIP 10.96.0.82 from node-1's cgroup, 16 requests").toEqual({
      pods: [POD_NAMES.podA],
      errors: [],
    });
    const viaNodePort = await only(get(NS.client, `http://${ADDR.node1}:30082/`));
    expect(viaNodePort, "NodePort 30082 on node-1 from the client, 16 requests").toEqual({
      pods: [POD_NAMES.podA],
      errors: [],
    });
  });

  test("topology.go without hints: the same endpoints on both nodes answer node-1 (the control)", async () => {
    const { counts, errors } = await spread(get(NS.node1, "http://10.96.0.83/", true), [
      POD_NAMES.podA,
      POD_NAMES.podR,
    ]);
    expect({ pods: Object.keys(counts).sort(), errors }, "ClusterIP 10.96.0.83 from node-1's cgroup").toEqual(
      {
        pods: [POD_NAMES.podA, POD_NAMES.podR].sort(),
        errors: [],
      },
    );
  });

  test('endpointslicecache.go "Ignoring invalid endpoint port": a slice port without a number gives the service no endpoints', async () => {
    const p = await programmed();
    expect(
      { clusterIP: p.get("10.96.0.84:80/TCP"), nodePort: p.get(`${ADDR.node1}:30084/TCP`) },
      "programmed without backends (not with the targetPort)",
    ).toEqual({ clusterIP: [], nodePort: [] });
    const r = await httpGet(topo(), NS.client, `http://${ADDR.node1}:30084/`, { timeoutMs: 3000 });
    expect(
      { ok: r.ok, curlCode: r.curlCode },
      `NodePort 30084 from the client is refused: ${r.stderr}`,
    ).toEqual({
      ok: false,
      curlCode: 7,
    });
    const c = await httpGet(topo(), NS.node1, "http://10.96.0.84/", { cgroup: true, timeoutMs: 3000 });
    expect(c.ok, `ClusterIP 10.96.0.84 from node-1's cgroup fails: ${c.stderr}`).toBe(false);
  });

  test("informer selector !service.kubernetes.io/service-proxy-name: a slice handed to another proxy gives no backends", async () => {
    const p = await programmed();
    expect(
      { mirror: p.get("10.96.0.85:80/TCP"), otherOnly: p.get("10.96.0.86:80/TCP") },
      "programmed backends: the labelled slices are left out",
    ).toEqual({ mirror: [`${ADDR.podB}:${HTTP_PORT}`], otherOnly: [] });
    const viaNodePort = await only(get(NS.client, `http://${ADDR.node1}:30085/`));
    expect(
      viaNodePort,
      "NodePort 30085 from the client, 16 requests: never the labelled slice's pod-r",
    ).toEqual({
      pods: [POD_NAMES.podB],
      errors: [],
    });
    const r = await httpGet(topo(), NS.client, `http://${ADDR.node1}:30086/`, { timeoutMs: 3000 });
    expect(
      { ok: r.ok, curlCode: r.curlCode },
      `NodePort 30086 (only a labelled slice) is refused: ${r.stderr}`,
    ).toEqual({ ok: false, curlCode: 7 });
  });
});
