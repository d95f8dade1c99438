/**
 * The namespace cluster itself (no kpr): pods answer on their addresses from node-1, the remote pod
 * is routed via node-2, and the client cannot reach any pod directly — so whatever the traffic
 * tests see through service addresses was done by kpr.
 */
import { describe, expect, test } from "bun:test";
import { needs } from "../harness/env.ts";
import { useTopology } from "../harness/netns.ts";
import { httpGet, udpRequest } from "../harness/servers.ts";
import { ADDR, buildCluster, HTTP_PORT, NS, UDP_PORT } from "./_cluster.ts";

const skip = needs({ root: true, tools: ["ip", "nsenter", "curl", "sysctl"] }, "e2e cluster topology");

describe.skipIf(!!skip)("e2e: the namespace cluster", () => {
  const topo = useTopology({ setup: buildCluster });

  test.each([
    ["pod-a", ADDR.podA, "10.244.1.1"],
    ["pod-b", ADDR.podB, "10.244.1.1"],
    ["pod-r", ADDR.podR, ADDR.node1],
  ])("node-1 reaches %s at %s directly (source seen: %s)", async (name, addr, source) => {
    const r = await httpGet(topo(), NS.node1, `http://${addr}:${HTTP_PORT}/`, { timeoutMs: 3000 });
    expect(r.echo?.name, `HTTP ${addr}: ${r.body} ${r.stderr}`).toBe(name);
    expect(r.echo?.client, `source address seen by ${name}`).toBe(source);
    const u = await udpRequest(topo(), NS.node1, addr, UDP_PORT, "x");
    expect(u.echo?.name, `UDP ${addr}: ${u.reply} ${u.stderr}`).toBe(name);
  });

  test("the client reaches node-1 and node-2 on the fabric", async () => {
    for (const addr of [ADDR.node1, ADDR.node2]) {
      const r = await topo().exec(NS.client, ["ping", "-c1", "-W1", addr]);
      expect(r.code, `ping ${addr} from the client: ${r.stdout}${r.stderr}`).toBe(0);
    }
  });

  test("the client cannot reach pods without kpr", async () => {
    for (const addr of [ADDR.podA, ADDR.podR]) {
      const r = await httpGet(topo(), NS.client, `http://${addr}:${HTTP_PORT}/`, { timeoutMs: 1000 });
      expect(r.ok, `client → ${addr} must fail (no route)`).toBe(false);
    }
    const r = await httpGet(topo(), NS.client, `http://${ADDR.node1}:30080/`, { timeoutMs: 1000 });
    expect(r.ok, "no NodePort answers before kpr apply").toBe(false);
  });
});
