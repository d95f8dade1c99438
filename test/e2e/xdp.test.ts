/**
 * End-to-end XDP acceleration on node-1 of the namespace cluster (see _cluster.ts): with
 * loadBalancer.acceleration=native kpr attaches its XDP program in native mode to node-1's veth0
 * (visible in `ip -d link`), NodePort traffic to the remote backend on node-2 is SNATed and
 * redirected by XDP (veth's XDP redirect counters move; the backend sees node-1's address), local
 * backends are DNATed by XDP and delivered by the stack (they see the client), `kpr status
 * --verbose` names the mode per device; best-effort leaves a device without native XDP to tc with
 * a warning naming it, and native refuses it.
 */
import { describe, expect, test } from "bun:test";
import { needs } from "../harness/env.ts";
import { pollUntil, useTopology } from "../harness/netns.ts";
import { httpGet } from "../harness/servers.ts";
import {
  ADDR,
  buildCluster,
  DEVICE,
  httpPort,
  kprOk,
  LOCAL_ENDPOINTS,
  NS,
  POD_NAMES,
  REMOTE_ENDPOINT,
  writeManifests,
} from "./_cluster.ts";
import { node, service } from "./_manifests.ts";

const MANIFESTS = [
  node("node-1", ADDR.node1),
  ...service({
    name: "web",
    type: "NodePort",
    clusterIP: "10.96.0.80",
    ports: [httpPort(30080)],
    endpoints: LOCAL_ENDPOINTS,
  }),
  ...service({
    name: "remote",
    type: "NodePort",
    clusterIP: "10.96.0.90",
    ports: [httpPort(30090)],
    endpoints: [REMOTE_ENDPOINT],
  }),
];

/** A device of node-1 whose driver has no native XDP (a bridge). */
const NO_XDP_DEV = "nox0";

const skip = needs(
  { root: true, built: true, tools: ["ip", "nsenter", "curl", "sysctl", "ethtool"] },
  "e2e XDP acceleration",
);

describe.skipIf(!!skip)("e2e: XDP acceleration on node-1", () => {
  let manifests = "";
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      // XDP redirects into a veth need NAPI on its peer; XDP rewrites need complete checksums
      // from the senders (veth senders leave CHECKSUM_PARTIAL otherwise)
      await t.run(NS.fabric, ["ethtool", "-K", "pn1", "gro", "on"]);
      await t.run(NS.client, ["ethtool", "-K", DEVICE, "tx", "off"]);
      await t.run(NS.podR, ["ethtool", "-K", "pod0", "tx", "off"]);
      await t.run(NS.node1, ["ip", "link", "add", NO_XDP_DEV, "type", "bridge"]);
      await t.run(NS.node1, ["ip", "link", "set", NO_XDP_DEV, "up"]);
      t.writeConfig({
        devices: [DEVICE],
        nodeName: "node-1",
        loadBalancer: { acceleration: "native" },
        socketLB: { enabled: false },
      });
      manifests = await writeManifests(t, "services.yaml", MANIFESTS);
      await kprOk(t, ["apply", "-f", manifests]);
    },
  });

  const xdpStats = async (): Promise<Record<string, number>> => {
    const out = await topo().run(NS.node1, ["ethtool", "-S", DEVICE]);
    const stats: Record<string, number> = {};
    for (const m of out.matchAll(/^\s*(\S*xdp\S*):\s*(\d+)/gm)) stats[m[1]!] = Number(m[2]);
    return stats;
  };
  const sum = (s: Record<string, number>, re: RegExp) =>
    Object.entries(s)
      .filter(([k]) => re.test(k))
      .reduce((a, [, v]) => a + v, 0);

  test("native XDP is attached to the device (ip -d link) and named by kpr status", async () => {
    const link = await topo().run(NS.node1, ["ip", "-d", "link", "show", DEVICE]);
    expect(link, "ip -d link shows a driver-mode XDP program").toMatch(/\bxdp\b.*prog\/xdp id \d+/s);
    expect(link, "not generic XDP").not.toContain("xdpgeneric");
    const st = await kprOk(topo(), ["status", "--verbose"]);
    expect(st.stdout).toContain(`XDP Acceleration:      Native [${DEVICE}: native XDP]`);
  });

  test("NodePort to the remote backend is served by XDP: SNAT + redirect, counters move", async () => {
    const before = await xdpStats();
    const url = `http://${ADDR.node1}:30090/`;
    const answers: string[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await httpGet(topo(), NS.client, url, { timeoutMs: 3000 });
      answers.push(
        r.echo ? `${r.echo.name} from ${r.echo.client}` : `error: curl ${r.curlCode} ${r.stderr.trim()}`,
      );
    }
    expect(answers, "every request answered by pod-r, which sees node-1's SNAT address").toEqual(
      Array.from({ length: 10 }, () => `${POD_NAMES.podR} from ${ADDR.node1}`),
    );
    const after = await xdpStats();
    const redirected = sum(after, /xdp_redirect$/) - sum(before, /xdp_redirect$/);
    expect(
      { redirectedByXdp: redirected > 20 },
      `veth XDP redirect counters: ${JSON.stringify(after)}`,
    ).toEqual({
      redirectedByXdp: true,
    });
  });

  test("NodePort to local backends: XDP DNATs, the stack delivers, backends see the client", async () => {
    const url = `http://${ADDR.node1}:30080/`;
    const seen = new Set<string>();
    const clients = new Set<string>();
    await pollUntil(
      "both local pods answer",
      async () => {
        const r = await httpGet(topo(), NS.client, url, { timeoutMs: 3000 });
        if (r.echo) {
          seen.add(r.echo.name);
          clients.add(r.echo.client);
        }
        return seen.size === 2;
      },
      20000,
    );
    expect({ pods: [...seen].sort(), clients: [...clients] }).toEqual({
      pods: [POD_NAMES.podA, POD_NAMES.podB].sort(),
      clients: [ADDR.client],
    });
  });

  test("best-effort: a device without native XDP is left to tc with a warning naming it", async () => {
    const t = topo();
    const cfg = t.writeConfig({
      devices: [DEVICE, NO_XDP_DEV],
      nodeName: "node-1",
      loadBalancer: { acceleration: "best-effort" },
      socketLB: { enabled: false },
    });
    const r = await t.kpr(NS.node1, ["apply", "-f", manifests], { config: cfg });
    expect({ code: r.code }, r.stderr).toEqual({ code: 0 });
    expect(r.stderr, "warning names the device").toMatch(
      new RegExp(`XDP acceleration on ${NO_XDP_DEV}: .*served by tc only`),
    );
    const st = await t.kpr(NS.node1, ["status", "--verbose"], { config: cfg });
    expect(st.stdout).toContain(
      `XDP Acceleration:      Best-Effort [${DEVICE}: native XDP, ${NO_XDP_DEV}: tc only]`,
    );
    const got = await httpGet(t, NS.client, `http://${ADDR.node1}:30090/`, { timeoutMs: 3000 });
    expect(got.echo?.name, "still served").toBe(POD_NAMES.podR);
  });

  test("native on a device without native XDP fails with the best-effort hint", async () => {
    const t = topo();
    const cfg = t.writeConfig({
      devices: [DEVICE, NO_XDP_DEV],
      nodeName: "node-1",
      loadBalancer: { acceleration: "native" },
      socketLB: { enabled: false },
    });
    const r = await t.kpr(NS.node1, ["apply", "-f", manifests], { config: cfg });
    expect({ code: r.code }).toEqual({ code: 1 });
    expect(r.stderr).toMatch(
      new RegExp(`attach xdp \\(native\\) to ${NO_XDP_DEV}.*EOPNOTSUPP.*best-effort`, "s"),
    );
  });
});
