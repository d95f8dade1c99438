/**
 * End to end on one node namespace: `kpr apply` programs the demo manifests, `kpr service list`
 * reads them back from the kernel maps (equal to `apply --dry-run`'s plan), a re-apply changes
 * nothing, an edited manifest set changes only what differs, `kpr status` and `kpr bpf lb list`
 * tell what is attached, and `kpr cleanup` leaves nothing behind.
 */
import { describe, expect, test } from "bun:test";
import { cpSync, existsSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { needs } from "../harness/env.ts";
import { REPO_ROOT, useTopology } from "../harness/netns.ts";

const skip = needs(
  { root: true, built: true, tools: ["ip", "nsenter", "bpftool"] },
  "e2e: apply / service list / status",
);

const DEMO = join(REPO_ROOT, "examples/demo");

describe.skipIf(!!skip)("e2e: kpr apply, service list, bpf lb list, status, cleanup", () => {
  const topo = useTopology({
    setup: async (t) => {
      await t.addNs("node");
      await t.addNs("peer");
      await t.veth("node", "veth0", "peer", "eth0", { addrA: "192.168.50.2/24", addrB: "192.168.50.1/24" });
      t.writeConfig({ devices: ["veth0"], nodeName: "node-1" });
    },
  });
  const kpr = async (...args: string[]) => {
    const r = await topo().kpr("node", args);
    return { ...r, all: `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}` };
  };
  const json = async (...args: string[]) => {
    const r = await kpr(...args);
    expect(r.code, `kpr ${args.join(" ")}: ${r.all}`).toBe(0);
    return JSON.parse(r.stdout) as { id: number; frontend: { address: string; port: number } }[];
  };

  test("status before apply says Not programmed, names the bpf root and config, exit 1", async () => {
    const r = await kpr("status");
    expect(r.code, r.all).toBe(1);
    expect(r.stdout).toBe(
      `KubeProxyReplacement:    Not programmed\n  Note: no kpr state under ${topo().bpfRoot} (bpf.root from ${topo().configPath})\n`,
    );
    expect(await json("service", "list", "-o", "json")).toEqual([]);
  });

  test("apply programs the plan; service list -o json equals apply --dry-run -o json", async () => {
    const plan = await json("apply", "--dry-run", "-o", "json", "-f", DEMO);
    expect(plan.length, "demo plan has frontends").toBeGreaterThan(3);
    const r = await kpr("apply", "-f", DEMO);
    expect(r.code, r.all).toBe(0);
    expect(r.stdout, "apply summary").toMatch(
      /\d+ frontends, \d+ backends programmed \(frontends \+\d+ ~0 -0/,
    );
    expect(await json("service", "list", "-o", "json")).toEqual(plan);
    // with state present, dry-run keeps the programmed ids: still the same plan
    expect(await json("apply", "--dry-run", "-o", "json", "-f", DEMO)).toEqual(plan);
  });

  test("the same apply again reports no changes", async () => {
    const r = await kpr("apply", "-f", DEMO);
    expect(r.code, r.all).toBe(0);
    expect(r.stdout).toMatch(/no changes \(\d+ frontends, \d+ backends programmed\)/);
  });

  test("bpf lb list shows master and slot entries", async () => {
    const r = await kpr("bpf", "lb", "list");
    expect(r.code, r.all).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^SERVICE ADDRESS\s+BACKEND ADDRESS \(REVNAT_ID\) \(SLOT\)$/);
    const rows = lines.slice(1).map((l) => l.split(/\s{3,}/));
    const udp = rows.filter((c) => c[0]?.startsWith("10.96.0.53:53/UDP"));
    const id = /\((\d+)\)$/.exec(udp[0]![0]!)![1];
    expect(udp).toEqual([
      [`10.96.0.53:53/UDP (${id})`, `0.0.0.0:0 (${id}) (0) [ClusterIP]`],
      [`10.96.0.53:53/UDP (${id})`, `10.244.1.30:5353/UDP (${id}) (1)`],
    ]);
  });

  test("status tells what is attached", async () => {
    const first = await kpr("status");
    expect(first.stdout).toBe("KubeProxyReplacement:    True   [veth0 192.168.50.2 (Direct Routing)]\n");
    const v = await kpr("status", "--verbose");
    expect(v.code, v.all).toBe(0);
    for (const line of [
      "  Status:                True",
      "  Socket LB:             Enabled",
      "  Socket LB Coverage:    Full",
      "  Devices:               veth0   192.168.50.2 (Direct Routing)",
      "  Mode:                  SNAT",
      "  - NodePort:       Enabled (Range: 30000-32767)",
      "  - veth0: tcx ingress, tcx egress",
    ])
      expect(v.stdout.split("\n"), `status --verbose line "${line}"\n${v.stdout}`).toContain(line);
    expect(v.stdout).toMatch(/Programmed: +\d+ frontends \(3 services\), 4 backends/);
    expect(v.stdout).toMatch(/- cgroup \S+: connect4, sendmsg4, recvmsg4, getpeername4/);
    const j = JSON.parse((await kpr("status", "-o", "json")).stdout);
    expect(j).toMatchObject({
      kubeProxyReplacement: "true",
      programmed: true,
      socketLB: { enabled: true, hostNamespaceOnly: false },
      services: { nodePort: true, nodePortRange: [30000, 32767] },
      counts: { backends: 4 },
      bpfRoot: topo().bpfRoot,
      configFile: topo().configPath,
      appliedConfigFile: topo().configPath,
      drift: [],
    });
    // each map's use (issue: kernel map memory reported per map)
    const maps = j.maps as { name: string; entries: number; maxEntries: number; memoryBytes: number }[];
    const be = maps.find((m) => m.name === "kpr_lb4_be");
    expect(be, "kpr_lb4_be in status -o json maps").toMatchObject({ entries: 4, maxEntries: 65536 });
    expect(be!.memoryBytes, "kernel memory of kpr_lb4_be").toBeGreaterThan(65536 * 12);
    expect(maps.find((m) => m.name === "kpr_svc_meta")?.maxEntries, "frontend-id maps capped").toBe(65536);
    expect(v.stdout).toMatch(/BPF maps \(entries \/ max, kernel memory; total [\d.]+ MiB\):/);
    expect(v.stdout).toMatch(/- kpr_lb4_be: +4 \/ 65536 +[\d.]+ MiB/);
  });

  test("status with a config naming another bpf root: Not programmed, exit 1, the root named", async () => {
    const wrong = join(topo().tmpDir, "wrong-root.yaml");
    const root = `${topo().bpfRoot}-elsewhere`;
    writeFileSync(wrong, `bpf: {root: ${root}}\ncgroup: {root: ${topo().cgroupDir}}\n`);
    const r = await kpr("status", "--config", wrong);
    expect(r.code, r.all).toBe(1);
    expect(r.stdout, r.all).toContain(`Note: no kpr state under ${root} (bpf.root from ${wrong})`);
    expect(existsSync(root), "status created nothing").toBe(false);
  });

  test("an edited manifest set changes only what differs and keeps ids", async () => {
    const before = await json("service", "list", "-o", "json");
    const dir = join(topo().tmpDir, "demo-edit");
    rmSync(dir, { recursive: true, force: true });
    cpSync(DEMO, dir, { recursive: true });
    rmSync(join(dir, "dns-echo.yaml"));
    const r = await kpr("apply", "-f", dir);
    expect(r.code, r.all).toBe(0);
    expect(r.stdout).toMatch(/frontends \+0 ~0 -1; backends \+0 ~0 -1/);
    const after = await json("service", "list", "-o", "json");
    expect(after).toEqual(before.filter((e) => e.frontend.address !== "10.96.0.53"));
  });

  test("a frontend turned off is detached: socketLB.enabled=false drops the cgroup hooks", async () => {
    const cfg = topo().writeConfig({ devices: ["veth0"], nodeName: "node-1", socketLB: { enabled: false } });
    const r = await topo().kpr("node", ["apply", "-f", DEMO, "--config", cfg]);
    expect(r.code, r.stderr).toBe(0);
    const v = await topo().kpr("node", ["status", "--verbose", "--config", cfg]);
    expect(v.stdout.split("\n")).toContain("  Socket LB:             Disabled");
    expect(v.stdout.split("\n")).toContain("  - ClusterIP:      Disabled");
    topo().writeConfig({ devices: ["veth0"], nodeName: "node-1" });
    // queried with the other config: the kernel's truth, and the difference named
    const other = await kpr("status", "--verbose");
    expect(other.stdout.split("\n"), other.all).toContain("  Socket LB:             Disabled");
    expect(other.stdout, other.all).toContain(
      `Note: config differs from what is programmed: socketLB.enabled is true in ${topo().configPath}, programmed false`,
    );
    expect(other.stdout.split("\n")).toContain(`  Applied from:          ${cfg}`);
  });

  test("cleanup leaves nothing: no pins, no tcx programs, no cgroup programs", async () => {
    const r = await kpr("cleanup");
    expect(r.code, r.all).toBe(0);
    expect(existsSync(topo().bpfRoot) ? readdirSync(topo().bpfRoot) : []).toEqual([]);
    const net = await topo().exec("node", ["bpftool", "-j", "net", "show", "dev", "veth0"]);
    expect(net.stdout, "no tc/tcx programs on veth0").not.toMatch(/kpr_tc_/);
    const cg = Bun.spawnSync(["bpftool", "cgroup", "show", topo().cgroupDir]);
    expect(cg.stdout.toString(), "no programs on the cgroup").not.toMatch(/kpr_sock/);
    const st = await kpr("status");
    expect(st.stdout.split("\n")[0], st.all).toBe("KubeProxyReplacement:    Not programmed");
    expect(st.code, st.all).toBe(1);
  });
});
