/**
 * End-to-end traffic through kpr on node-1 of the namespace cluster (see _cluster.ts): the
 * compiled dist/kpr programs the manifests below, then real clients (curl, Bun scripts) talk to
 * ClusterIP (socket LB, from a process in the node's cgroup), NodePort and ExternalIP (tc on the
 * node's device, from the client namespace), over TCP and UDP, to local and remote backends.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { needs } from "../harness/env.ts";
import { useTopology } from "../harness/netns.ts";
import { BUN, httpGet, parseEcho, udpRequest } from "../harness/servers.ts";
import {
  ADDR,
  buildCluster,
  dnsPort,
  httpPort,
  kprOk,
  LOCAL_ENDPOINTS,
  NS,
  REMOTE_ENDPOINT,
  spread,
  writeManifests,
} from "./_cluster.ts";
import { node, service } from "./_manifests.ts";

const BIN = join(import.meta.dir, "bin");
const LOCAL = LOCAL_ENDPOINTS;
const REMOTE = [REMOTE_ENDPOINT];

const MANIFESTS = [
  node("node-1", ADDR.node1),
  ...service({
    name: "web",
    type: "NodePort",
    clusterIP: "10.96.0.80",
    ports: [httpPort(30080)],
    externalIPs: [ADDR.externalIP],
    endpoints: LOCAL,
  }),
  ...service({
    name: "dns",
    type: "NodePort",
    clusterIP: "10.96.0.53",
    ports: [dnsPort(30053)],
    endpoints: LOCAL,
  }),
  ...service({
    name: "remote",
    type: "NodePort",
    clusterIP: "10.96.0.90",
    ports: [httpPort(30090)],
    endpoints: REMOTE,
  }),
  ...service({
    name: "mixed",
    type: "NodePort",
    clusterIP: "10.96.0.91",
    ports: [httpPort(30091)],
    endpoints: [LOCAL[0]!, ...REMOTE],
  }),
  ...service({
    name: "sticky",
    type: "NodePort",
    clusterIP: "10.96.0.93",
    ports: [httpPort(30093)],
    affinitySeconds: 600,
    endpoints: LOCAL,
  }),
  ...service({
    name: "remote-dns",
    type: "NodePort",
    clusterIP: "10.96.0.92",
    ports: [dnsPort(30092)],
    endpoints: REMOTE,
  }),
];

const skip = needs({ root: true, built: true, tools: ["ip", "nsenter", "curl", "sysctl"] }, "e2e traffic");

describe.skipIf(!!skip)("e2e: traffic through kpr on node-1", () => {
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      const file = await writeManifests(t, "services.yaml", MANIFESTS);
      await kprOk(t, ["apply", "-f", file]);
    },
  });

  /** Name of the pod that answered an HTTP GET from ns, or the failure. */
  const get =
    (ns: string, url: string, cgroup = false) =>
    async () => {
      const r = await httpGet(topo(), ns, url, { cgroup, timeoutMs: 3000 });
      return (
        r.echo?.name ?? { error: `curl ${url}: exit ${r.curlCode} status ${r.status} ${r.stderr.trim()}` }
      );
    };

  test("the applied frontends are programmed (service list)", async () => {
    const r = await kprOk(topo(), ["service", "list", "-o", "json"]);
    const got = (JSON.parse(r.stdout) as { frontend: { address: string; port: number; protocol: string } }[])
      .map((e) => `${e.frontend.address}:${e.frontend.port}/${e.frontend.protocol}`)
      .sort();
    for (const want of [
      "10.96.0.80:80/TCP",
      `${ADDR.node1}:30080/TCP`,
      `${ADDR.externalIP}:80/TCP`,
      "10.96.0.53:53/UDP",
      `${ADDR.node1}:30053/UDP`,
      `${ADDR.node1}:30090/TCP`,
    ]) {
      expect(got.includes(want), `service list has frontend ${want}; got ${got.join(" ")}`).toBe(true);
    }
  });

  test("NodePort from the client reaches both local backends, which see the client's address", async () => {
    const url = `http://${ADDR.node1}:30080/`;
    const clients = new Set<string>();
    const { counts, errors } = await spread(async () => {
      const r = await httpGet(topo(), NS.client, url, { timeoutMs: 3000 });
      if (r.echo) clients.add(r.echo.client);
      return r.echo?.name ?? { error: `exit ${r.curlCode} ${r.stderr.trim()}` };
    }, ["pod-a", "pod-b"]);
    expect(errors, `NodePort ${url}: failed requests`).toEqual([]);
    expect(Object.keys(counts).sort(), `NodePort ${url}: backends that answered`).toEqual(["pod-a", "pod-b"]);
    expect([...clients], "client address seen by local backends (preserved, no SNAT)").toEqual([ADDR.client]);
  });

  test("ExternalIP from the client reaches both backends", async () => {
    const url = `http://${ADDR.externalIP}:80/`;
    const { counts, errors } = await spread(get(NS.client, url), ["pod-a", "pod-b"]);
    expect(errors, `ExternalIP ${url}: failed requests`).toEqual([]);
    expect(Object.keys(counts).sort(), `ExternalIP ${url}: backends that answered`).toEqual([
      "pod-a",
      "pod-b",
    ]);
  });

  test("ClusterIP from a process in node-1's cgroup reaches both backends (socket LB)", async () => {
    const url = "http://10.96.0.80:80/";
    const { counts, errors } = await spread(get(NS.node1, url, true), ["pod-a", "pod-b"]);
    expect(errors, `ClusterIP ${url} from the cgroup: failed requests`).toEqual([]);
    expect(Object.keys(counts).sort(), `ClusterIP ${url}: backends that answered`).toEqual([
      "pod-a",
      "pod-b",
    ]);
  });

  test("ClusterIP from a process outside the cgroup is not load-balanced (hooks are scoped)", async () => {
    const r = await httpGet(topo(), NS.node1, "http://10.96.0.80:80/", { timeoutMs: 1000 });
    expect(r.ok, `ClusterIP from outside the cgroup must fail (no route), got: ${r.body}`).toBe(false);
  });

  test("ClusterIP with a remote backend from the cgroup (socket LB, routed to node-2)", async () => {
    const r = await httpGet(topo(), NS.node1, "http://10.96.0.90:80/", { cgroup: true, timeoutMs: 3000 });
    expect(r.echo?.name, `ClusterIP 10.96.0.90 answer: ${r.body} ${r.stderr}`).toBe("pod-r");
  });

  test("NodePort via 127.0.0.1 on node-1 (in the cgroup) reaches both backends", async () => {
    const url = "http://127.0.0.1:30080/";
    const { counts, errors } = await spread(get(NS.node1, url, true), ["pod-a", "pod-b"]);
    expect(errors, `NodePort ${url}: failed requests`).toEqual([]);
    expect(Object.keys(counts).sort(), `NodePort ${url}: backends that answered`).toEqual(["pod-a", "pod-b"]);
  });

  test("NodePort on the node's own address from the cgroup reaches both backends", async () => {
    const url = `http://${ADDR.node1}:30080/`;
    const { counts, errors } = await spread(get(NS.node1, url, true), ["pod-a", "pod-b"]);
    expect(errors, `NodePort ${url} from node-1: failed requests`).toEqual([]);
    expect(Object.keys(counts).sort(), `NodePort ${url}: backends that answered`).toEqual(["pod-a", "pod-b"]);
  });

  test("getpeername on a socket connected to the ClusterIP returns the service address", async () => {
    const r = await topo().runInCgroup(NS.node1, [BUN, join(BIN, "peer.ts"), "10.96.0.80", "80"]);
    expect(r.code, `peer.ts exit: ${r.stderr}`).toBe(0);
    expect(r.stdout, "getpeername shows the ClusterIP, not the backend").toContain("peer 10.96.0.80:80\n");
    expect(r.stdout, "the connection itself went to a backend").toMatch(/^body pod-[ab] /m);
  });

  test("UDP ClusterIP from the cgroup, connected socket: both backends answer", async () => {
    const { counts, errors } = await spread(async () => {
      const r = await udpRequest(topo(), NS.node1, "10.96.0.53", 53, "hello", { cgroup: true });
      return r.echo?.rest === "hello"
        ? r.echo.name
        : { error: `reply ${JSON.stringify(r.reply)} ${r.stderr}` };
    }, ["pod-a", "pod-b"]);
    expect(errors, "UDP ClusterIP 10.96.0.53:53: failed requests").toEqual([]);
    expect(Object.keys(counts).sort(), "UDP ClusterIP: backends that answered").toEqual(["pod-a", "pod-b"]);
  });

  test("UDP ClusterIP from the cgroup, unconnected socket: the reply comes from the service address", async () => {
    const r = await topo().runInCgroup(NS.node1, [BUN, join(BIN, "udp-from.ts"), "10.96.0.53", "53", "hi"]);
    expect(r.code, `udp-from.ts exit: ${r.stderr}`).toBe(0);
    expect(r.stdout, "recvfrom source is the ClusterIP (recvmsg hook)").toMatch(
      /^from 10\.96\.0\.53:53 pod-[ab] /,
    );
  });

  test("UDP NodePort from the client (tc): both backends answer and see the client's address", async () => {
    const clients = new Set<string>();
    const { counts, errors } = await spread(async () => {
      // A connected socket: the reply must come back from the NodePort address or it is dropped.
      const r = await udpRequest(topo(), NS.client, ADDR.node1, 30053, "hello");
      if (r.echo) clients.add(r.echo.client);
      return r.echo?.rest === "hello"
        ? r.echo.name
        : { error: `reply ${JSON.stringify(r.reply)} ${r.stderr}` };
    }, ["pod-a", "pod-b"]);
    expect(errors, `UDP NodePort ${ADDR.node1}:30053: failed requests`).toEqual([]);
    expect(Object.keys(counts).sort(), "UDP NodePort: backends that answered").toEqual(["pod-a", "pod-b"]);
    expect([...clients], "client address seen by local UDP backends").toEqual([ADDR.client]);
  });

  test("NodePort to a remote backend (SNAT): answered by pod-r, which sees node-1's address", async () => {
    const r = await httpGet(topo(), NS.client, `http://${ADDR.node1}:30090/`, { timeoutMs: 3000 });
    expect(r.echo?.name, `remote NodePort answer: ${r.body} ${r.stderr}`).toBe("pod-r");
    expect(r.echo?.client, "source address seen by the remote backend (SNAT to node-1)").toBe(ADDR.node1);
  });

  test("NodePort with a local and a remote backend: both answer, each seeing the expected source", async () => {
    const seen: Record<string, Set<string>> = {};
    const { counts, errors } = await spread(async () => {
      const r = await httpGet(topo(), NS.client, `http://${ADDR.node1}:30091/`, { timeoutMs: 3000 });
      if (r.echo) {
        seen[r.echo.name] ??= new Set();
        seen[r.echo.name]!.add(r.echo.client);
      }
      return r.echo?.name ?? { error: `exit ${r.curlCode} ${r.stderr.trim()}` };
    }, ["pod-a", "pod-r"]);
    expect(errors, "mixed NodePort: failed requests").toEqual([]);
    expect(Object.keys(counts).sort(), "mixed NodePort: backends that answered").toEqual(["pod-a", "pod-r"]);
    expect([...(seen["pod-a"] ?? [])], "local backend sees the client").toEqual([ADDR.client]);
    expect([...(seen["pod-r"] ?? [])], "remote backend sees node-1 (SNAT)").toEqual([ADDR.node1]);
  });

  test("UDP NodePort to a remote backend (SNAT)", async () => {
    const r = await udpRequest(topo(), NS.client, ADDR.node1, 30092, "far");
    const echo = r.ok ? parseEcho(r.reply) : undefined;
    expect(echo?.name, `remote UDP NodePort reply: ${JSON.stringify(r.reply)} ${r.stderr}`).toBe("pod-r");
    expect(echo?.client, "source seen by the remote UDP backend (SNAT to node-1)").toBe(ADDR.node1);
    expect(echo?.rest, "payload echoed").toBe("far");
  });

  test.each([
    ["NodePort from the client (tc)", NS.client, `http://${ADDR.node1}:30093/`, false],
    ["ClusterIP from the cgroup (socket LB)", NS.node1, "http://10.96.0.93:80/", true],
  ])("ClientIP session affinity: %s keeps one backend", async (what, ns, url, cgroup) => {
    const counts: Record<string, number> = {};
    for (let i = 0; i < 16; i++) {
      const r = await httpGet(topo(), ns, url, { cgroup, timeoutMs: 3000 });
      const k = r.echo?.name ?? `error(${r.curlCode})`;
      counts[k] = (counts[k] ?? 0) + 1;
    }
    expect(Object.keys(counts).length, `${what}: backends over 16 requests ${JSON.stringify(counts)}`).toBe(
      1,
    );
    expect(Object.keys(counts)[0], `${what}: the sticky backend is a pod`).toMatch(/^pod-[ab]$/);
  });
});
