/**
 * End-to-end frontends the traffic tests do not cover, each reached where a user reaches it, on
 * node-1 of the namespace cluster (see _cluster.ts): LoadBalancer ingress IPs, Pod hostPorts,
 * externalTrafficPolicy Local, socketLB.hostNamespaceOnly, and the reject of frontends without
 * endpoints (EPERM on connect in the cgroup, TCP RST on the wire).
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { needs, unmet } from "../harness/env.ts";
import { useTopology } from "../harness/netns.ts";
import { httpGet, startHttpEcho } from "../harness/servers.ts";
import {
  ADDR,
  buildCluster,
  DEVICE,
  HTTP_PORT,
  httpPort,
  kprOk,
  LOCAL_ENDPOINTS,
  NS,
  REMOTE_ENDPOINT,
  spread,
  writeManifests,
} from "./_cluster.ts";
import { hostPortPod, node, service } from "./_manifests.ts";

const LB_IP = "203.0.113.20";
const HOST_PORT = 18080;
const EMPTY_NODE_PORT = 30130;
const LOCAL = LOCAL_ENDPOINTS;
const REMOTE = REMOTE_ENDPOINT;

const MANIFESTS = [
  node("node-1", ADDR.node1),
  ...service({
    name: "lb",
    type: "LoadBalancer",
    clusterIP: "10.96.0.100",
    ports: [httpPort(30100)],
    loadBalancerIPs: [LB_IP],
    endpoints: LOCAL,
  }),
  hostPortPod("hp", "node-1", ADDR.podA, [
    { hostPort: HOST_PORT, containerPort: HTTP_PORT, protocol: "TCP" },
  ]),
  ...service({
    name: "etp-remote",
    type: "NodePort",
    clusterIP: "10.96.0.110",
    ports: [httpPort(30110)],
    externalTrafficPolicy: "Local",
    endpoints: [REMOTE],
  }),
  ...service({
    name: "etp-mixed",
    type: "NodePort",
    clusterIP: "10.96.0.111",
    ports: [httpPort(30111)],
    externalTrafficPolicy: "Local",
    endpoints: [LOCAL[0]!, REMOTE],
  }),
  ...service({
    name: "netns",
    type: "ClusterIP",
    clusterIP: "10.96.0.120",
    ports: [httpPort()],
    endpoints: LOCAL,
  }),
  ...service({
    name: "empty",
    type: "NodePort",
    clusterIP: "10.96.0.130",
    ports: [httpPort(EMPTY_NODE_PORT)],
    endpoints: [],
  }),
];

const skip = needs({ root: true, built: true, tools: ["ip", "nsenter", "curl", "sysctl"] }, "e2e frontends");

describe.skipIf(!!skip)("e2e: LoadBalancer, hostPort, trafficPolicy, hostNamespaceOnly, reject", () => {
  let manifests = "";
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      // The LoadBalancer address is announced to the client by a route via node-1 (no BGP/ARP here).
      await t.route(NS.client, `${LB_IP}/32`, { via: ADDR.node1, dev: DEVICE });
      manifests = await writeManifests(t, "frontends.yaml", MANIFESTS);
      await kprOk(t, ["apply", "-f", manifests]);
      await startHttpEcho(t, NS.node1, "node-1", { port: EMPTY_NODE_PORT });
    },
  });

  /** Name of the pod that answered an HTTP GET from ns (optionally in the cgroup), or the failure. */
  const get =
    (ns: string, url: string, cgroup = false) =>
    async () => {
      const r = await httpGet(topo(), ns, url, { cgroup, timeoutMs: 3000 });
      return (
        r.echo?.name ?? { error: `curl ${url}: exit ${r.curlCode} status ${r.status} ${r.stderr.trim()}` }
      );
    };

  /**
   * `curl -v` to url from ns (in the cgroup): its exit code, the connect error it printed
   * ("Operation not permitted", "Connection refused", ...) and the milliseconds it reports for it.
   */
  const tryConnect = async (ns: string, url: string, cgroup: boolean) => {
    const argv = ["curl", "-sSv", "-m", "3", url];
    const r = cgroup ? await topo().runInCgroup(ns, argv) : await topo().exec(ns, argv);
    const cause = r.stderr.match(/^\* (?:Immediate connect fail for \S+|connect to .* failed): (.+)$/m)?.[1];
    const ms = Number(r.stderr.match(/Failed to connect to .* after (\d+) ms/)?.[1] ?? Number.NaN);
    return { code: r.code, cause: cause ?? `none in: ${r.stderr.trim()}`, ms, stdout: r.stdout };
  };

  test("LoadBalancer ingress IP from the client reaches both local backends, which see the client", async () => {
    const url = `http://${LB_IP}:80/`;
    const clients = new Set<string>();
    const { counts, errors } = await spread(async () => {
      const r = await httpGet(topo(), NS.client, url, { timeoutMs: 3000 });
      if (r.echo) clients.add(r.echo.client);
      return r.echo?.name ?? { error: `exit ${r.curlCode} ${r.stderr.trim()}` };
    }, ["pod-a", "pod-b"]);
    expect(errors, `LoadBalancer ${url}: failed requests`).toEqual([]);
    expect(Object.keys(counts).sort(), `LoadBalancer ${url}: backends that answered`).toEqual([
      "pod-a",
      "pod-b",
    ]);
    expect([...clients], "client address seen by the backends of the LoadBalancer IP").toEqual([ADDR.client]);
  });

  test("LoadBalancer service's NodePort from the client reaches both backends", async () => {
    const url = `http://${ADDR.node1}:30100/`;
    const { counts, errors } = await spread(get(NS.client, url), ["pod-a", "pod-b"]);
    expect(errors, `LoadBalancer's NodePort ${url}: failed requests`).toEqual([]);
    expect(Object.keys(counts).sort(), `LoadBalancer's NodePort ${url}: backends that answered`).toEqual([
      "pod-a",
      "pod-b",
    ]);
  });

  test.each([
    ["from the client (tc on the device)", NS.client, false],
    ["from node-1's cgroup (socket LB)", NS.node1, true],
  ])("hostPort %s reaches the pod, port-mapped", async (what, ns, cgroup) => {
    const r = await httpGet(topo(), ns, `http://${ADDR.node1}:${HOST_PORT}/`, { cgroup, timeoutMs: 3000 });
    expect(r.echo?.name, `hostPort ${ADDR.node1}:${HOST_PORT} ${what}: ${r.body} ${r.stderr}`).toBe("pod-a");
    if (ns === NS.client) {
      expect(r.echo?.client, "hostPort backend sees the client's address").toBe(ADDR.client);
    }
  });

  test("externalTrafficPolicy Local without a local endpoint: the NodePort drops (no RST), as kube-proxy", async () => {
    const r = await httpGet(topo(), NS.client, `http://${ADDR.node1}:30110/`, { timeoutMs: 1500 });
    expect(r.ok, `eTP Local NodePort with only remote endpoints must fail, got: ${r.body}`).toBe(false);
    expect(r.echo, "no backend answered through the eTP Local NodePort").toBeUndefined();
    // curl 28 = timed out: the SYN was dropped; 7 would be a refusal (the no-endpoints reject).
    expect(r.curlCode, "dropped, not refused").toBe(28);
  });

  test("externalTrafficPolicy Local leaves the ClusterIP at Cluster scope: node-1's cgroup reaches pod-r", async () => {
    const r = await httpGet(topo(), NS.node1, "http://10.96.0.110:80/", { cgroup: true, timeoutMs: 3000 });
    expect(r.echo?.name, `ClusterIP 10.96.0.110 (iTP Cluster) answer: ${r.body} ${r.stderr}`).toBe("pod-r");
  });

  test("should short-circuit in-cluster traffic to an eTP=Local NodePort to all endpoints (kube-proxy TestExternalTrafficPolicyLocal: pod to NodePort hits both endpoints)", async () => {
    // only a remote endpoint: the client is dropped (test above), node-1's own processes are served
    const r = await httpGet(topo(), NS.node1, `http://${ADDR.node1}:30110/`, {
      cgroup: true,
      timeoutMs: 3000,
    });
    expect(r.echo?.name, `eTP Local NodePort from node-1's cgroup: ${r.body} ${r.stderr}`).toBe("pod-r");
    // a local and a remote endpoint: node-1's processes reach both, the client only the local one
    const { counts, errors } = await spread(get(NS.node1, `http://${ADDR.node1}:30111/`, true), [
      "pod-a",
      "pod-r",
    ]);
    expect(errors, "in-cluster requests to the eTP Local NodePort").toEqual([]);
    expect(Object.keys(counts).sort(), "in-cluster: both endpoints answer").toEqual(["pod-a", "pod-r"]);
    // service list shows the two sets
    const list = await kprOk(topo(), ["service", "list", "-o", "json"]);
    const entries = JSON.parse(list.stdout) as {
      frontend: { address: string; port: number };
      backends: { address: string }[];
      internalBackends?: { address: string }[];
    }[];
    const np = entries.find((e) => e.frontend.address === ADDR.node1 && e.frontend.port === 30111);
    expect(
      {
        backends: np?.backends.map((b) => b.address),
        internal: np?.internalBackends?.map((b) => b.address).sort(),
      },
      "service list -o json of the eTP Local NodePort",
    ).toEqual({ backends: [LOCAL[0]!.ip], internal: [LOCAL[0]!.ip, REMOTE.ip].sort() });
  });

  test("externalTrafficPolicy Local with a local and a remote endpoint: only the local pod answers the client", async () => {
    const counts: Record<string, number> = {};
    const clients = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const r = await httpGet(topo(), NS.client, `http://${ADDR.node1}:30111/`, { timeoutMs: 3000 });
      if (r.echo) clients.add(r.echo.client);
      const k = r.echo?.name ?? `error(${r.curlCode})`;
      counts[k] = (counts[k] ?? 0) + 1;
    }
    expect(counts, "eTP Local NodePort: answers over 12 requests all from the local pod").toEqual({
      "pod-a": 12,
    });
    expect([...clients], "eTP Local: the local backend sees the client's address").toEqual([ADDR.client]);
  });

  test("a ClusterIP without endpoints fails connect at once in the cgroup (EPERM), no timeout", async () => {
    const r = await tryConnect(NS.node1, "http://10.96.0.130:80/", true);
    expect(r.code, "curl to an endpoint-less ClusterIP from node-1's cgroup: exit 7 (couldn't connect)").toBe(
      7,
    );
    expect(r.cause, "the connect error is EPERM from the socket hook").toBe("Operation not permitted");
    // well under the 1 s SYN retransmission timer: refused at once, not after a lost SYN
    expect(r.ms, "time curl reports for the failed connect (ms)").toBeLessThan(1000);
  });

  test("a NodePort without endpoints answers the client's SYN with a RST (connection refused)", async () => {
    // A listener on node-1 at the NodePort shows the refusal is kpr's: the kernel would accept.
    const local = await tryConnect(NS.node1, `http://127.0.0.1:${EMPTY_NODE_PORT}/`, false);
    expect(local.stdout, "control: node-1's own listener on the NodePort answers on loopback").toMatch(
      /^node-1 /,
    );
    const r = await tryConnect(NS.client, `http://${ADDR.node1}:${EMPTY_NODE_PORT}/`, false);
    expect(r.stdout, "node-1's listener did not get the client's connection").toBe("");
    expect(r.code, "curl to an endpoint-less NodePort: exit 7 (couldn't connect)").toBe(7);
    expect(r.cause, "the client's connect was refused (a RST answered the SYN)").toBe("Connection refused");
    // well under the 1 s SYN retransmission timer: the first SYN was answered
    expect(r.ms, "time curl reports for the refused connect (ms)").toBeLessThan(1000);
  });

  // Sequential from here: the last tests re-apply with another config.
  test("default socket LB: a process in pod-a's namespace in the cgroup is translated", async () => {
    const url = "http://10.96.0.120:80/";
    const r = await httpGet(topo(), NS.podA, url, { cgroup: true, timeoutMs: 3000 });
    expect(r.echo?.name, `ClusterIP ${url} from pod-a's netns in the cgroup: ${r.body} ${r.stderr}`).toMatch(
      /^pod-[ab]$/,
    );
  });

  test("socketLB.hostNamespaceOnly: node-1's namespace is translated, pod-a's namespace is not", async () => {
    const t = topo();
    const cfg = parse(readFileSync(t.configPath, "utf8")) as Record<string, unknown>;
    const socketLB = { ...(cfg.socketLB as object), hostNamespaceOnly: true };
    t.writeConfig({ ...cfg, socketLB });
    try {
      if (unmet({ kernel: "5.14" })) {
        // no SO_NETNS_COOKIE: kpr refuses the setting and names the kernel it needs
        const r = await t.kpr(NS.node1, ["apply", "-f", manifests]);
        expect(
          { code: r.code, names514: r.stderr.includes("5.14") },
          "hostNamespaceOnly before 5.14",
        ).toEqual({
          code: 1,
          names514: true,
        });
        return;
      }
      await kprOk(t, ["apply", "-f", manifests]);
      const url = "http://10.96.0.120:80/";
      const { counts, errors } = await spread(get(NS.node1, url, true), ["pod-a", "pod-b"]);
      expect(errors, `hostNamespaceOnly: ClusterIP ${url} from node-1's cgroup: failed requests`).toEqual([]);
      expect(Object.keys(counts).sort(), "hostNamespaceOnly: node-1 reaches both backends").toEqual([
        "pod-a",
        "pod-b",
      ]);
      const pod = await tryConnect(NS.podA, url, true);
      expect(pod.stdout, "hostNamespaceOnly: no backend answered pod-a's netns").toBe("");
      expect(pod.code, `hostNamespaceOnly: the request from pod-a's netns fails (${pod.cause})`).not.toBe(0);
      // Untranslated, the ClusterIP is unroutable (node-1 has no route); EPERM would mean a reject.
      expect(pod.cause, "hostNamespaceOnly: pod-a's connect is left alone, not rejected").not.toBe(
        "Operation not permitted",
      );
    } finally {
      t.writeConfig(cfg);
      await kprOk(t, ["apply", "-f", manifests]);
    }
    const back = await httpGet(t, NS.podA, "http://10.96.0.120:80/", { cgroup: true, timeoutMs: 3000 });
    expect(back.echo?.name, `default restored: pod-a's netns translated again: ${back.stderr}`).toMatch(
      /^pod-[ab]$/,
    );
  });
});
