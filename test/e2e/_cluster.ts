/**
 * "A small cluster in namespaces" for the end-to-end tests, with the addresses of the example
 * manifests (examples/demo):
 *
 *            client 192.168.50.1 ─┐
 *   node-1 veth0 192.168.50.2 ────┼── br0 in the `fabric` namespace (one L2 segment)
 *            node-2 192.168.50.3 ─┘
 *   node-1: vpa ── pod-a 10.244.1.10, vpb ── pod-b 10.244.1.11   (kpr runs here; device veth0)
 *   node-2: vpr ── pod-r 10.244.2.10                              (a remote backend)
 *
 * Pods are routed, not bridged: the node holds the pod gateway address (10.244.X.1/32) on each pod
 * link plus a /32 route per pod, and each pod's default route points at the gateway on-link.
 * node-1 routes 10.244.2.0/24 via node-2; the client only knows the node subnet and a route for
 * the ExternalIP (via node-1), so it can only reach pods through kpr.
 */
import { join } from "node:path";
import { stringify } from "yaml";
import type { ExecResult, Topology } from "../harness/netns.ts";
import { startHttpEcho, startUdpEcho } from "../harness/servers.ts";

export const ADDR = {
  client: "192.168.50.1",
  node1: "192.168.50.2",
  node2: "192.168.50.3",
  podA: "10.244.1.10",
  podB: "10.244.1.11",
  podR: "10.244.2.10",
  externalIP: "203.0.113.10",
} as const;

/** kpr's device on node-1 (the `devices` entry). */
export const DEVICE = "veth0";
/** Port of the HTTP echo server in every pod. */
export const HTTP_PORT = 8080;
/** Port of the UDP echo server in every pod. */
export const UDP_PORT = 5353;

/** Short netns names (topo.ns(short) gives the full name). */
export const NS = {
  fabric: "fabric",
  client: "client",
  node1: "node1",
  node2: "node2",
  podA: "pod-a",
  podB: "pod-b",
  podR: "pod-r",
} as const;

/** Pod names as the echo servers report them. */
export const POD_NAMES = { podA: "pod-a", podB: "pod-b", podR: "pod-r" } as const;

async function sysctl(topo: Topology, ns: string, ...kv: string[]): Promise<void> {
  await topo.run(ns, ["sysctl", "-q", "-w", ...kv]);
}

/** A routed pod link: nodeIf on the node ↔ pod0 in the pod, gateway gw on the node side. */
async function podLink(topo: Topology, node: string, nodeIf: string, pod: string, addr: string, gw: string) {
  await topo.veth(node, nodeIf, pod, "pod0", { addrA: `${gw}/32`, addrB: `${addr}/32` });
  await topo.route(node, `${addr}/32`, { dev: nodeIf });
  await topo.run(pod, ["ip", "route", "add", `${gw}/32`, "dev", "pod0", "scope", "link"]);
  await topo.route(pod, "default", { via: gw, dev: "pod0" });
}

/**
 * Builds the namespaces and links, starts an HTTP echo (8080) and a UDP echo (5353) in each pod,
 * and writes the topology's config for kpr on node-1. Use as useTopology({ setup: buildCluster }).
 */
export async function buildCluster(topo: Topology): Promise<void> {
  await topo.addNs(NS.fabric);
  await topo.addNs(NS.client);
  await topo.addNs(NS.node1, { forwarding: true });
  await topo.addNs(NS.node2, { forwarding: true });
  for (const pod of [NS.podA, NS.podB, NS.podR]) await topo.addNs(pod);
  // Asymmetric paths exist by design (SNAT replies, DNAT on ingress): no reverse-path filtering.
  for (const ns of [NS.node1, NS.node2]) {
    await sysctl(topo, ns, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0");
  }

  await topo.run(NS.fabric, ["ip", "link", "add", "br0", "type", "bridge"]);
  await topo.run(NS.fabric, ["ip", "link", "set", "br0", "up"]);
  const members: [string, string, string][] = [
    ["pc", NS.client, ADDR.client],
    ["pn1", NS.node1, ADDR.node1],
    ["pn2", NS.node2, ADDR.node2],
  ];
  for (const [port, ns, addr] of members) {
    await topo.veth(NS.fabric, port, ns, DEVICE, { addrB: `${addr}/24` });
    await topo.run(NS.fabric, ["ip", "link", "set", port, "master", "br0"]);
  }

  await podLink(topo, NS.node1, "vpa", NS.podA, ADDR.podA, "10.244.1.1");
  await podLink(topo, NS.node1, "vpb", NS.podB, ADDR.podB, "10.244.1.1");
  await podLink(topo, NS.node2, "vpr", NS.podR, ADDR.podR, "10.244.2.1");
  await topo.route(NS.node1, "10.244.2.0/24", { via: ADDR.node2, dev: DEVICE });
  await topo.route(NS.client, `${ADDR.externalIP}/32`, { via: ADDR.node1, dev: DEVICE });

  const pods: [string, string][] = [
    [NS.podA, POD_NAMES.podA],
    [NS.podB, POD_NAMES.podB],
    [NS.podR, POD_NAMES.podR],
  ];
  await Promise.all(
    pods.flatMap(([ns, name]) => [
      startHttpEcho(topo, ns, name, { port: HTTP_PORT }),
      startUdpEcho(topo, ns, name, { port: UDP_PORT }),
    ]),
  );

  topo.writeConfig(
    {
      devices: [DEVICE],
      nodeName: "node-1",
      loadBalancer: { mode: "snat", acceleration: "disabled", algorithm: "random" },
      socketLB: { enabled: true },
    },
    {},
  );
}

/** Writes manifests (objects) to a file in the topology's scratch dir; returns its path. */
export async function writeManifests(topo: Topology, file: string, objects: object[]): Promise<string> {
  const path = join(topo.tmpDir, file);
  await Bun.write(path, objects.map((o) => stringify(o)).join("---\n"));
  return path;
}

/** Runs `kpr ARGS` on node-1 and throws "kpr ARGS: exit N: stderr" unless it exits 0. */
export async function kprOk(topo: Topology, args: string[]): Promise<ExecResult> {
  const r = await topo.kpr(NS.node1, args);
  if (r.code !== 0) {
    throw new Error(`kpr ${args.join(" ")}: exit ${r.code}:\n${r.stderr.trim()}\n${r.stdout.trim()}`);
  }
  return r;
}

/**
 * Repeats request() until every name in want was seen or max attempts were made; returns how often
 * each name answered and the failures (as text).
 */
export async function spread(
  request: () => Promise<string | undefined | { error: string }>,
  want: readonly string[],
  max = 40,
): Promise<{ counts: Record<string, number>; errors: string[] }> {
  const counts: Record<string, number> = {};
  const errors: string[] = [];
  for (let i = 0; i < max; i++) {
    const r = await request();
    if (r === undefined || typeof r === "object") errors.push(r?.error ?? "no answer");
    else counts[r] = (counts[r] ?? 0) + 1;
    if (want.every((w) => (counts[w] ?? 0) > 0)) break;
  }
  return { counts, errors };
}

/** The two pods on node-1 and the one on node-2, as EndpointSlice endpoints. */
export const LOCAL_ENDPOINTS = [
  { ip: ADDR.podA, nodeName: "node-1" },
  { ip: ADDR.podB, nodeName: "node-1" },
];
export const REMOTE_ENDPOINT = { ip: ADDR.podR, nodeName: "node-2" };

/** Service port 80/TCP → the pods' HTTP echo (nodePort when given). */
export const httpPort = (nodePort?: number) => ({
  name: "http",
  port: 80,
  targetPort: HTTP_PORT,
  protocol: "TCP" as const,
  nodePort,
});

/** Service port 53/UDP → the pods' UDP echo (nodePort when given). */
export const dnsPort = (nodePort?: number) => ({
  name: "dns",
  port: 53,
  targetPort: UDP_PORT,
  protocol: "UDP" as const,
  nodePort,
});
