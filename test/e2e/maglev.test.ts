/**
 * End-to-end Maglev on two nodes (the namespace cluster of _cluster.ts, with a second kpr on
 * node-2, its own bpf root and config): an ExternalIP service with backends on both nodes and
 * loadBalancer.algorithm=maglev on both. The client sends a UDP flow (fixed source port) through
 * node-1, then its route to the ExternalIP moves to node-2 (an upstream ECMP change) and the same
 * flow goes through node-2: both nodes pick the same backend, flow after flow.
 */
import { describe, expect, test } from "bun:test";
import { needs } from "../harness/env.ts";
import { useTopology } from "../harness/netns.ts";
import { udpRequest } from "../harness/servers.ts";
import {
  ADDR,
  buildCluster,
  DEVICE,
  dnsPort,
  kprOk,
  LOCAL_ENDPOINTS,
  NS,
  REMOTE_ENDPOINT,
  writeManifests,
} from "./_cluster.ts";
import { node, service } from "./_manifests.ts";

const MANIFESTS = [
  node("node-1", ADDR.node1),
  node("node-2", ADDR.node2),
  ...service({
    name: "dns-vip",
    type: "ClusterIP",
    clusterIP: "10.96.0.54",
    ports: [dnsPort()],
    externalIPs: [ADDR.externalIP],
    endpoints: [...LOCAL_ENDPOINTS, REMOTE_ENDPOINT],
  }),
];

const skip = needs(
  { root: true, built: true, tools: ["ip", "nsenter", "sysctl"] },
  "e2e Maglev on two nodes",
);

describe.skipIf(!!skip)("e2e: Maglev, the same flow through node-1 and node-2", () => {
  let node2Config = "";
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      await t.route(NS.node2, "10.244.1.0/24", { via: ADDR.node1, dev: DEVICE });
      const base = { devices: [DEVICE], socketLB: { enabled: false }, loadBalancer: { algorithm: "maglev" } };
      t.writeConfig({ ...base, nodeName: "node-1" });
      node2Config = t.writeConfig({ ...base, nodeName: "node-2" }, { ns: NS.node2 });
      const file = await writeManifests(t, "services.yaml", MANIFESTS);
      await kprOk(t, ["apply", "-f", file]);
      const r2 = await t.kpr(NS.node2, ["apply", "-f", file]);
      if (r2.code !== 0) throw new Error(`kpr apply on node-2: ${r2.stderr}`);
    },
  });

  const via = async (nodeAddr: string, sport: number): Promise<string> => {
    await topo().route(NS.client, `${ADDR.externalIP}/32`, { via: nodeAddr, dev: DEVICE });
    const r = await udpRequest(topo(), NS.client, ADDR.externalIP, 53, "q", { sport, timeoutMs: 3000 });
    return r.echo?.name ?? `no answer (${r.stderr.trim()})`;
  };

  test("status on both nodes: Backend Selection Maglev with the table size", async () => {
    const s1 = await kprOk(topo(), ["status", "--verbose"]);
    const s2 = await topo().kpr(NS.node2, ["status", "--verbose"], { config: node2Config });
    for (const [name, out] of [
      ["node-1", s1.stdout],
      ["node-2", s2.stdout],
    ] as const)
      expect({ node: name, line: /Backend Selection:.*/.exec(out)?.[0] }).toEqual({
        node: name,
        line: "Backend Selection:     Maglev (Table Size: 16381)",
      });
  });

  test("eight flows: each is answered by the same backend through either node", async () => {
    const rows: { sport: number; node1: string; node2: string }[] = [];
    for (let i = 0; i < 8; i++) {
      const sport = 45000 + i * 7;
      rows.push({ sport, node1: await via(ADDR.node1, sport), node2: await via(ADDR.node2, sport) });
    }
    expect(
      rows.map((r) => ({ ...r, same: r.node1 === r.node2 && !r.node1.startsWith("no answer") })),
    ).toEqual(rows.map((r) => ({ ...r, node2: r.node1, same: true })));
    const backends = new Set(rows.map((r) => r.node1));
    expect({ flowsSpreadOverBackends: backends.size >= 2 }, [...backends].join(", ")).toEqual({
      flowsSpreadOverBackends: true,
    });
  });
});
