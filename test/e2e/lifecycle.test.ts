/**
 * End-to-end lifecycle on node-1 of the namespace cluster (see _cluster.ts): a re-apply that
 * removes an endpoint while a TCP connection through the NodePort stays open, then `kpr cleanup`
 * leaving nothing in the kernel (pins, links, programs, tc filters, cgroup hooks).
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse, stringify } from "yaml";
import { BpfMap } from "../../src/datapath/bpf.ts";
import { needs } from "../harness/env.ts";
import { type SpawnHandle, useTopology } from "../harness/netns.ts";
import { BUN, httpGet } from "../harness/servers.ts";
import { ADDR, buildCluster, DEVICE, HTTP_PORT, kprOk, NS, POD_NAMES, writeManifests } from "./_cluster.ts";
import { type EndpointSpec, node, service } from "./_manifests.ts";

const BIN = join(import.meta.dir, "bin");
const NODE_PORT = 30080;
const CLUSTER_IP = "10.96.0.80";
const ENDPOINTS: Record<string, EndpointSpec> = {
  [POD_NAMES.podA]: { ip: ADDR.podA, nodeName: "node-1" },
  [POD_NAMES.podB]: { ip: ADDR.podB, nodeName: "node-1" },
};

function manifests(pods: string[]): object[] {
  return [
    node("node-1", ADDR.node1),
    ...service({
      name: "web",
      type: "NodePort",
      clusterIP: CLUSTER_IP,
      ports: [{ name: "http", port: 80, targetPort: HTTP_PORT, protocol: "TCP", nodePort: NODE_PORT }],
      endpoints: pods.map((p) => ENDPOINTS[p]!),
    }),
  ];
}

/** `bpftool ... -j` in the host namespace (pins and cgroups are host paths); undefined on failure. */
function bpftoolJson(args: string[]): unknown {
  const r = Bun.spawnSync(["bpftool", "-j", ...args], { stderr: "pipe" });
  if (r.exitCode !== 0) return undefined;
  const text = r.stdout.toString().trim();
  return text === "" ? [] : JSON.parse(text);
}

const skip = needs(
  { root: true, built: true, tools: ["ip", "nsenter", "curl", "bpftool", "tc"] },
  "e2e lifecycle",
);

describe.skipIf(!!skip)("e2e: re-apply and cleanup on node-1", () => {
  const topo = useTopology({
    setup: async (t) => {
      await buildCluster(t);
      await kprOk(t, ["apply", "-f", await writeManifests(t, "web.yaml", manifests(["pod-a", "pod-b"]))]);
    },
  });
  let hold: SpawnHandle | undefined;

  test("re-apply without an endpoint: new connections avoid it, an established one keeps working", async () => {
    hold = topo().spawn(NS.client, [BUN, join(BIN, "hold.ts"), ADDR.node1, String(NODE_PORT)]);
    const first = await hold.waitForOutput(/^#1 (pod-[ab]) /m, 5000);
    const kept = first[1]!;
    const removed = kept === "pod-a" ? "pod-b" : "pod-a";

    const file = await writeManifests(topo(), "web-one.yaml", manifests([kept]));
    await kprOk(topo(), ["apply", "-f", file]);

    // Five more answers on the same connection, all sent after the re-apply finished.
    const answered = (hold.output().match(/^#\d+ /gm) ?? []).length;
    await hold.waitForOutput(new RegExp(`^#${answered + 5} `, "m"), 5000);
    const lines = hold.output().split("\n");
    expect(
      lines.filter((l) => l.startsWith("error")),
      "the held connection had no error",
    ).toEqual([]);
    const answers = lines.filter((l) => l.startsWith("#")).map((l) => l.split(" "));
    expect(
      [...new Set(answers.map((a) => a[1]))],
      "every answer on the held connection came from its backend",
    ).toEqual([kept]);
    // The backend reports the client's address:port: one value means one TCP connection throughout.
    expect(new Set(answers.map((a) => a[2])).size, "all answers arrived on the same connection").toBe(1);

    const fresh: Record<string, number> = {};
    for (let i = 0; i < 12; i++) {
      const viaNodePort = await httpGet(topo(), NS.client, `http://${ADDR.node1}:${NODE_PORT}/`, {
        timeoutMs: 3000,
      });
      const viaClusterIP = await httpGet(topo(), NS.node1, `http://${CLUSTER_IP}:80/`, {
        cgroup: true,
        timeoutMs: 3000,
      });
      for (const r of [viaNodePort, viaClusterIP]) {
        const k = r.echo?.name ?? `error(${r.curlCode})`;
        fresh[k] = (fresh[k] ?? 0) + 1;
      }
    }
    expect(fresh, `new connections (NodePort and ClusterIP) all go to ${kept}, none to ${removed}`).toEqual({
      [kept]: 24,
    });
  });

  test("growing bpf.lbMapMax and the CT/NAT maps migrates them in place: held connections through the NodePort and the ClusterIP keep working", async () => {
    await hold?.kill();
    const t = topo();
    const np = t.spawn(NS.client, [BUN, join(BIN, "hold.ts"), ADDR.node1, String(NODE_PORT), "20"]);
    const cip = t.spawnInCgroup(NS.node1, [BUN, join(BIN, "hold.ts"), CLUSTER_IP, "80", "20"]);
    try {
      await np.waitForOutput(/^#3 /m, 5000);
      await cip.waitForOutput(/^#3 /m, 5000);
      const sizes = () =>
        Object.fromEntries(
          ["kpr_lb4_svc", "kpr_lb4_be", "kpr_svc_meta", "kpr_ct4", "kpr_snat4"].map((m) => {
            using map = BpfMap.openPinned(join(t.bpfRoot, "maps", m));
            return [m, map.maxEntries];
          }),
        );
      const before = sizes();
      const bigger = join(t.tmpDir, "bigger.yaml");
      await Bun.write(
        bigger,
        stringify({
          ...parse(readFileSync(t.configPath, "utf8")),
          bpf: { root: t.bpfRoot, lbMapMax: 131072, ctTcpMax: 300000, natMax: 200000 },
        }),
      );
      using ct = BpfMap.openPinned(join(t.bpfRoot, "maps", "kpr_ct4"));
      const ctBefore = ct.lookupBatch().count;
      // both endpoints again: were a held connection's tracking lost, it could be balanced anew
      const both = await writeManifests(t, "web-both.yaml", manifests(["pod-a", "pod-b"]));
      const dry = await t.kpr(NS.node1, ["apply", "--dry-run", "-f", both], { config: bigger });
      expect(dry.stderr, "a dry run says it would resize").toMatch(
        /would resize maps in place .*kpr_lb4_svc 65536 → 131072/,
      );
      expect(sizes(), "a dry run resizes nothing").toEqual(before);
      const r = await t.kpr(NS.node1, ["apply", "-f", both], { config: bigger });
      expect(r.code, `apply with bigger maps:\n${r.stderr}`).toBe(0);
      expect(r.stderr, "says what it resized").toMatch(/resizing maps .*kpr_lb4_svc 65536 → 131072/);
      expect(sizes(), `map sizes before: ${JSON.stringify(before)}`).toEqual({
        kpr_lb4_svc: 131072,
        kpr_lb4_be: 131072,
        kpr_svc_meta: 65536,
        kpr_ct4: 300000 + 65536,
        kpr_snat4: 200000,
      });
      expect(existsSync(join(t.bpfRoot, "maps-resizing")), "no staging directory left").toBe(false);
      using ctAfter = BpfMap.openPinned(join(t.bpfRoot, "maps", "kpr_ct4"));
      expect(ctAfter.lookupBatch().count, "connection tracking entries carried over").toBeGreaterThanOrEqual(
        ctBefore,
      );
      // ten more answers on each held connection, all after the switch
      for (const [what, h] of [
        ["NodePort (tc, connection tracking)", np],
        ["ClusterIP (socket LB)", cip],
      ] as const) {
        const n = (h.output().match(/^#\d+ /gm) ?? []).length;
        await h.waitForOutput(new RegExp(`^#${n + 10} `, "m"), 5000);
        const lines = h.output().split("\n");
        expect(
          lines.filter((l) => l.startsWith("error")),
          `${what}: the held connection had no error`,
        ).toEqual([]);
        const answers = lines.filter((l) => l.startsWith("#")).map((l) => l.split(" "));
        expect(new Set(answers.map((a) => a[2])).size, `${what}: one connection throughout`).toBe(1);
        expect(new Set(answers.map((a) => a[1])).size, `${what}: one backend throughout`).toBe(1);
      }
      const st = await kprOk(t, ["status", "-o", "json"]);
      expect(st.stdout, "status after the resize").not.toContain("do not use the maps pinned");
      const fresh = await httpGet(t, NS.client, `http://${ADDR.node1}:${NODE_PORT}/`, { timeoutMs: 3000 });
      expect(fresh.echo?.name, "a new connection after the resize").toBeDefined();
    } finally {
      await np.kill();
      await cip.kill();
    }
  });

  test("kpr cleanup leaves nothing: no pins, links, programs, tc filters or cgroup hooks", async () => {
    await hold?.kill();
    const t = topo();
    const linksDir = join(t.bpfRoot, "links");
    const pins = existsSync(linksDir) ? readdirSync(linksDir) : [];
    expect(pins.length, `pinned links under ${linksDir} before cleanup`).toBeGreaterThan(0);
    const held = pins.map((p) => {
      const info = bpftoolJson(["link", "show", "pinned", join(linksDir, p)]) as
        | { id: number; prog_id: number }
        | undefined;
      expect(info, `bpftool link show pinned ${p}`).toBeDefined();
      return { pin: p, link: info!.id, prog: info!.prog_id };
    });
    const cgBefore = bpftoolJson(["cgroup", "show", t.cgroupDir]) as unknown[];
    expect(cgBefore?.length ?? 0, `cgroup hooks on ${t.cgroupDir} before cleanup`).toBeGreaterThan(0);

    const r = await t.kpr(NS.node1, ["cleanup"]);
    expect(r.code, `kpr cleanup: ${r.stderr}`).toBe(0);

    expect(existsSync(t.bpfRoot) ? readdirSync(t.bpfRoot) : [], `${t.bpfRoot} after cleanup`).toEqual([]);
    for (const h of held) {
      expect(
        bpftoolJson(["link", "show", "id", String(h.link)]),
        `link ${h.pin} (id ${h.link}) is gone`,
      ).toBe(undefined);
      expect(
        bpftoolJson(["prog", "show", "id", String(h.prog)]),
        `program of ${h.pin} (id ${h.prog}) is gone`,
      ).toBe(undefined);
    }
    expect(bpftoolJson(["cgroup", "show", t.cgroupDir]), `bpftool cgroup show ${t.cgroupDir}`).toEqual([]);
    for (const dir of ["ingress", "egress"]) {
      const f = await t.exec(NS.node1, ["tc", "filter", "show", "dev", DEVICE, dir]);
      expect(f.stdout.trim(), `tc filters on node-1 ${DEVICE} ${dir}`).toBe("");
    }
    const net = await t.exec(NS.node1, ["bpftool", "net", "show", "dev", DEVICE], { nsenter: true });
    expect(net.stdout, `bpftool net show dev ${DEVICE} in node-1`).not.toMatch(/kpr/);

    const np = await httpGet(t, NS.client, `http://${ADDR.node1}:${NODE_PORT}/`, { timeoutMs: 1000 });
    expect(np.ok, `NodePort after cleanup must not answer: ${np.body}`).toBe(false);
    const cip = await httpGet(t, NS.node1, `http://${CLUSTER_IP}:80/`, { cgroup: true, timeoutMs: 1000 });
    expect(cip.ok, `ClusterIP from the cgroup after cleanup must not answer: ${cip.body}`).toBe(false);

    const again = await t.kpr(NS.node1, ["cleanup"]);
    expect(again.code, `second kpr cleanup (nothing to do): ${again.stderr}`).toBe(0);
  });
});
