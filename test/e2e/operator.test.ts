/**
 * What an operator sees of the datapath, end to end on node-1 of the namespace cluster: counters
 * in `kpr service list --stats` move with real traffic, `kpr bpf ct|nat|affinity list` show the
 * flows that traffic created, `kpr bpf metrics` counts verdicts and map fill; and device
 * detection in a namespace with a default route (resolveDevices), wildcards included.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { needs } from "../harness/env.ts";
import { REPO_ROOT, useTopology } from "../harness/netns.ts";
import { BUN, httpGet } from "../harness/servers.ts";
import {
  ADDR,
  buildCluster,
  httpPort,
  kprOk,
  LOCAL_ENDPOINTS,
  NS,
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
  ...service({
    name: "sticky",
    type: "NodePort",
    clusterIP: "10.96.0.93",
    ports: [httpPort(30093)],
    affinitySeconds: 600,
    endpoints: LOCAL_ENDPOINTS,
  }),
];

interface Counted {
  id: number;
  service: string;
  frontend: { address: string; port: number; protocol: string };
  stats: { packets: number; bytes: number };
  backends: { address: string; stats: { packets: number; bytes: number } }[];
}

const skip = needs(
  { root: true, built: true, tools: ["ip", "nsenter", "curl", "sysctl"] },
  "e2e operator views",
);

describe.skipIf(!!skip)("e2e: counters, conntrack, NAT, affinity and metrics from the real datapath", () => {
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      await kprOk(t, ["apply", "-f", await writeManifests(t, "services.yaml", MANIFESTS)]);
    },
  });
  const json = async <T>(...args: string[]): Promise<T> =>
    JSON.parse((await kprOk(topo(), args)).stdout) as T;
  const nodePort = (list: Counted[], port: number) =>
    list.find((e) => e.frontend.address === ADDR.node1 && e.frontend.port === port)!;
  const get = async (port: number) => {
    const r = await httpGet(topo(), NS.client, `http://${ADDR.node1}:${port}/`, { timeoutMs: 3000 });
    expect(r.echo?.name, `GET :${port} answered: ${r.stderr}`).toBeDefined();
  };

  test("service list --stats: frontend and backend counters move with NodePort traffic", async () => {
    const before = nodePort(await json<Counted[]>("service", "list", "--stats", "-o", "json"), 30080);
    expect(before.stats, "no traffic yet").toEqual({ packets: 0, bytes: 0 });
    for (let i = 0; i < 5; i++) await get(30080);
    const after = nodePort(await json<Counted[]>("service", "list", "--stats", "-o", "json"), 30080);
    expect(after.stats.packets, "frontend packets after 5 requests").toBeGreaterThanOrEqual(5);
    expect(after.stats.bytes, "frontend bytes").toBeGreaterThan(0);
    const sum = after.backends.reduce((s, b) => s + b.stats.packets, 0);
    expect(sum, "backend packets add up to the frontend's").toBe(after.stats.packets);
    const table = (await kprOk(topo(), ["service", "list", "--stats"])).stdout;
    expect(table.split("\n")[0]).toMatch(
      /^ID\s+Frontend\s+Service Type\s+Packets\s+Bytes\s+Backend\s+Packets\s+Bytes$/,
    );
  });

  test("service list --service filters, service get shows one frontend", async () => {
    const web = await json<Counted[]>("service", "list", "--service", "default/web", "-o", "json");
    expect(web.length, "default/web has ClusterIP and NodePort frontends").toBeGreaterThan(1);
    expect(new Set(web.map((e) => e.service.split(":")[0])), "only default/web").toEqual(
      new Set(["default/web"]),
    );
    const one = await json<Counted>("service", "get", String(web[0]!.id), "-o", "json");
    expect(one.id).toBe(web[0]!.id);
    expect(one.stats, "get carries counters").toBeDefined();
    const missing = await topo().kpr(NS.node1, ["service", "get", "65000"]);
    expect(missing.code, "unknown id").toBe(1);
  });

  test("bpf ct list shows the client's flow to the NodePort", async () => {
    await get(30080);
    const ct = await json<
      { direction: string; source: string; destination: string; backend: string; packets: number }[]
    >("bpf", "ct", "list", "-o", "json");
    const flow = ct.find((e) => e.direction === "ingress" && e.destination === `${ADDR.node1}:30080`);
    expect(flow, `ct has client -> ${ADDR.node1}:30080; got ${JSON.stringify(ct)}`).toBeDefined();
    expect(flow!.source.startsWith(`${ADDR.client}:`), "from the client").toBe(true);
    expect(flow!.backend, "to a local backend").toMatch(/^10\.244\.1\.1[01]:8080\/TCP$/);
    expect(flow!.packets).toBeGreaterThan(0);
  });

  test("bpf nat list shows the SNAT of a flow to a remote backend", async () => {
    await get(30090);
    const nat = await json<{ client: string; frontend: string; backend: string }[]>(
      "bpf",
      "nat",
      "list",
      "-o",
      "json",
    );
    const e = nat.find((x) => x.frontend === `${ADDR.node1}:30090`);
    expect(e, `nat has the flow to :30090; got ${JSON.stringify(nat)}`).toBeDefined();
    expect(e!.client.startsWith(`${ADDR.client}:`), "client restored on the reply").toBe(true);
    expect(e!.backend, "reply tuple from the remote pod").toBe(`${REMOTE_ENDPOINT.ip}:8080`);
  });

  test("bpf affinity list shows the client pinned to one backend", async () => {
    await get(30093);
    const aff = await json<{ client: string; frontend: string; backend: string }[]>(
      "bpf",
      "affinity",
      "list",
      "-o",
      "json",
    );
    const e = aff.find((x) => x.client === ADDR.client);
    expect(e, `affinity entry for ${ADDR.client}; got ${JSON.stringify(aff)}`).toBeDefined();
    expect(e!.backend).toMatch(/^10\.244\.1\.1[01]:8080\/TCP$/);
  });

  test("bpf metrics: verdict counts and map fill", async () => {
    const m = await json<{
      programmed: boolean;
      reasons: { reason: string; count: number }[];
      maps: { name: string; entries: number; maxEntries: number }[];
    }>("bpf", "metrics", "-o", "json");
    expect(m.programmed).toBe(true);
    expect(
      m.reasons.reduce((s, r) => s + r.count, 0),
      "some verdicts counted",
    ).toBeGreaterThan(0);
    const ct = m.maps.find((x) => x.name === "kpr_ct4");
    expect(ct?.entries, "kpr_ct4 fill").toBeGreaterThan(0);
    const svc = m.maps.find((x) => x.name === "kpr_lb4_svc");
    expect(svc?.maxEntries, "lbMapMax").toBe(65536);
  });
});

const skipDev = needs({ root: true, tools: ["ip", "nsenter"] }, "e2e device detection");

describe.skipIf(!!skipDev)("e2e: device detection in a namespace (resolveDevices)", () => {
  const topo = useTopology({
    setup: async (t) => {
      await t.addNs("node");
      await t.addNs("peer");
      await t.veth("node", "eth0", "peer", "p0", { addrA: "192.168.60.2/24", addrB: "192.168.60.1/24" });
      await t.veth("node", "eth1", "peer", "p1", { addrA: "10.70.0.2/24", addrB: "10.70.0.1/24" });
      await t.veth("node", "ens5", "peer", "p2", { addrA: "10.80.0.2/24", addrB: "10.80.0.1/24" });
      await t.route("node", "default", { via: "192.168.60.1", dev: "eth0" });
    },
  });
  const resolve = async (cfg: object, nodeAddresses: string[] = []) => {
    const script = join(topo().tmpDir, "resolve.ts");
    await Bun.write(
      script,
      `import { resolveDevices } from ${JSON.stringify(join(REPO_ROOT, "src/config/devices.ts"))};
       import { defaultConfig } from ${JSON.stringify(join(REPO_ROOT, "src/config/config.ts"))};
       const cfg = { ...defaultConfig(), ...${JSON.stringify(cfg)} };
       console.log(JSON.stringify(resolveDevices(cfg, { nodeAddresses: ${JSON.stringify(nodeAddresses)} })));`,
    );
    const r = await topo().exec("node", [BUN, script]);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { devices: string[]; detected: boolean; warnings: string[] };
  };

  test("devices: [] picks the default-route interface", async () => {
    expect(await resolve({ devices: [] })).toEqual({ devices: ["eth0"], detected: true, warnings: [] });
  });

  test("and the interfaces carrying the node's addresses", async () => {
    expect((await resolve({ devices: [] }, ["10.80.0.2"])).devices).toEqual(["eth0", "ens5"]);
  });

  test("apply with devices: [eth+] attaches to eth0 and eth1; status shows them", async () => {
    const cfg = topo().writeConfig({ devices: ["eth+"], nodeName: "node-1" });
    const manifests = join(topo().tmpDir, "np.yaml");
    await Bun.write(
      manifests,
      [
        "apiVersion: v1",
        "kind: Service",
        "metadata: {name: web, namespace: default}",
        "spec: {type: NodePort, clusterIP: 10.96.0.80, ports: [{port: 80, nodePort: 30080, protocol: TCP}]}",
      ].join("\n"),
    );
    const a = await topo().kpr("node", ["apply", "-f", manifests, "--config", cfg]);
    expect(a.code, a.stderr).toBe(0);
    const st = await topo().kpr("node", ["status", "-o", "json", "--config", cfg]);
    const j = JSON.parse(st.stdout) as { devices: { name: string; hooks: unknown[] }[] };
    expect(
      j.devices.map((d) => [d.name, d.hooks.length]),
      st.stderr,
    ).toEqual([
      ["eth0", 2],
      ["eth1", 2],
    ]);
    const c = await topo().kpr("node", ["cleanup", "--config", cfg]);
    expect(c.code, c.stderr).toBe(0);
  });

  test("wildcards expand to matching interfaces; one that matches nothing is a warning", async () => {
    expect(await resolve({ devices: ["eth+", "wlan+"] })).toEqual({
      devices: ["eth0", "eth1"],
      detected: false,
      warnings: ['devices: "wlan+" matches no interface'],
    });
  });
});
