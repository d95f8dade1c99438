/**
 * Smoke tests of each attach kind inside a network namespace: attach (as kpr does, via
 * _attach_helper.ts under nsenter), see it in the kernel, run `dist/kpr cleanup`, see nothing left.
 */
import { describe, expect, it } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { needs } from "../harness/env.ts";
import { type Topology, useTopology } from "../harness/netns.ts";

const skip = needs(
  { root: true, tools: ["ip", "tc", "nsenter", "bpftool"], built: true, bpfObjects: ["probe"] },
  "datapath attach smoke tests",
);
const HELPER = join(import.meta.dir, "_attach_helper.ts");

async function helper(t: Topology, args: string[]): Promise<Record<string, unknown>> {
  const r = await t.exec("a", [process.execPath, HELPER, ...args], { nsenter: true });
  if (r.code !== 0) throw new Error(`attach helper ${args.join(" ")}: ${r.stderr || r.stdout}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

async function sh(t: Topology, argv: string[]): Promise<string> {
  const r = await t.exec("a", argv, { nsenter: true });
  return `${r.stdout}${r.stderr}`;
}

async function cleanupLeavesNothing(t: Topology): Promise<string> {
  const r = await t.kpr("a", ["cleanup"]);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
  expect(existsSync(t.bpfRoot)).toBe(false);
  const again = await t.kpr("a", ["cleanup"]);
  expect(again.stdout).toContain("nothing to clean up");
  return r.stdout;
}

describe.skipIf(!!skip)("attach smoke tests in a netns", () => {
  const topo = useTopology({
    setup: async (t) => {
      await t.addNs("a");
      await t.addNs("b");
      await t.veth("a", "v0", "b", "v1", { addrA: "10.231.0.1/24", addrB: "10.231.0.2/24" });
      await t.run("a", ["ip", "link", "add", "br0", "type", "bridge"]);
      t.writeConfig({ devices: ["v0"] });
    },
  });

  it("tc: tcx link on ingress, clsact filter on egress; cleanup removes both", async () => {
    const t = topo();
    expect(await helper(t, ["tc", t.bpfRoot, "v0"])).toEqual({
      kind: "tc",
      ingress: "tcx",
      egress: "clsact",
    });
    // bpftool 7.1 does not show tcx: ask the kernel (BPF_PROG_QUERY), then bpftool what the id is
    const q = (await helper(t, ["query", "-", "v0"])) as { tcxIngress: number[] };
    expect(q.tcxIngress.length).toBe(1);
    expect(await sh(t, ["bpftool", "prog", "show", "id", String(q.tcxIngress[0])])).toContain("probe_tc");
    const filters = await sh(t, ["tc", "filter", "show", "dev", "v0", "egress"]);
    expect(filters).toContain("probe_tc");
    const out = await cleanupLeavesNothing(t);
    expect(out).toContain("link tc-ingress-v0");
    expect(out).toContain("clsact egress filter on v0");
    expect(out).toContain("maps/kpr_test_state");
    expect(await helper(t, ["query", "-", "v0"])).toEqual({ tcxIngress: [], xdp: 0 });
    expect(await sh(t, ["tc", "filter", "show", "dev", "v0", "egress"])).toBe("");
  });

  it("xdp: native link on a veth; cleanup detaches it", async () => {
    const t = topo();
    expect(await helper(t, ["xdp", t.bpfRoot, "v0", "native"])).toEqual({ kind: "xdp", mode: "native" });
    expect(await sh(t, ["ip", "-d", "link", "show", "v0"])).toMatch(/xdp.*prog\/xdp id \d+/s);
    const out = await cleanupLeavesNothing(t);
    expect(out).toContain("link xdp-v0");
    expect(await sh(t, ["ip", "-d", "link", "show", "v0"])).not.toContain("prog/xdp");
  });

  it("xdp: native on a device without driver support fails with the best-effort hint", async () => {
    const t = topo();
    const r = await t.exec("a", [process.execPath, HELPER, "xdp", t.bpfRoot, "br0", "native"], {
      nsenter: true,
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(
      /attach xdp \(native\) to br0: EOPNOTSUPP \(.*use loadBalancer\.acceleration=best-effort\)/,
    );
    expect(await sh(t, ["ip", "-d", "link", "show", "br0"])).not.toContain("prog/xdp");
    await cleanupLeavesNothing(t);
  });

  it("xdp: generic mode attaches too", async () => {
    const t = topo();
    expect(await helper(t, ["xdp", t.bpfRoot, "v0", "generic"])).toEqual({ kind: "xdp", mode: "generic" });
    expect(await sh(t, ["ip", "-d", "link", "show", "v0"])).toContain("xdpgeneric");
    await cleanupLeavesNothing(t);
    expect(await sh(t, ["ip", "-d", "link", "show", "v0"])).not.toContain("xdpgeneric");
  });

  it("cgroup: connect4 and sendmsg4 links on the test cgroup; cleanup detaches them", async () => {
    const t = topo();
    expect(await helper(t, ["cgroup", t.bpfRoot, t.cgroupDir])).toEqual({
      kind: "cgroup",
      hooks: ["connect4", "sendmsg4"],
    });
    const before = await sh(t, ["bpftool", "cgroup", "show", t.cgroupDir]);
    expect(before).toContain("connect4");
    expect(before).toContain("sendmsg4");
    const out = await cleanupLeavesNothing(t);
    expect(out).toContain("link cgroup-connect4");
    expect(await sh(t, ["bpftool", "cgroup", "show", t.cgroupDir])).not.toMatch(/connect4|sendmsg4/);
  });
});
