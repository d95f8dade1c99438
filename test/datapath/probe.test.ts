/**
 * `kpr bpf probe` from the compiled binary: copied out of the repo and run from /, it must load
 * its embedded probe object; inside a netns it judges XDP per device of that namespace.
 */
import { afterAll, describe, expect, it } from "bun:test";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ProbeReport } from "../../src/datapath/probe.ts";
import { needs } from "../harness/env.ts";
import { KPR_BIN, useTopology } from "../harness/netns.ts";

const skip = needs({ root: true, tools: ["ip", "nsenter"], built: true }, "kpr bpf probe");

describe.skipIf(!!skip)("kpr bpf probe (compiled binary)", () => {
  const dir = mkdtempSync(join(tmpdir(), "kprt-probe-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("runs from / with its embedded objects and reports this kernel's features", () => {
    const bin = join(dir, "kpr");
    copyFileSync(KPR_BIN, bin);
    const r = Bun.spawnSync([bin, "bpf", "probe", "-o", "json"], { cwd: "/", stderr: "pipe" });
    expect({ code: r.exitCode, stderr: r.stderr.toString() }).toEqual({ code: 0, stderr: "" });
    const rep = JSON.parse(r.stdout.toString()) as ProbeReport;
    const byName = Object.fromEntries(rep.features.map((f) => [f.name, f]));
    expect(rep.kernel).toBe(require("node:os").release());
    // the hooks are loaded from the embedded object: a failure to read it would show here
    expect(byName["socket hook cgroup/connect4"]).toMatchObject({ present: true, detail: "program loads" });
    expect(byName["socket hook cgroup/getpeername6"]?.present).toBe(true);
    expect(byName["tcx (tc BPF links)"]?.present).toBe(true);
    expect(byName["helper bpf_redirect_neigh (tc)"]?.present).toBe(true);
    expect(byName["map type LPM trie"]?.present).toBe(true);
    expect(rep.missing).toEqual([]);
    const table = Bun.spawnSync([bin, "bpf", "probe"], { cwd: "/" }).stdout.toString();
    expect(table).toMatch(/^ok\s+socket hook cgroup\/connect4\s+program loads\s+socket LB$/m);
  });

  describe("per-device XDP inside a netns", () => {
    const topo = useTopology({
      setup: async (t) => {
        await t.addNs("a");
        await t.addNs("b");
        await t.veth("a", "v0", "b", "v1");
        await t.run("a", ["ip", "link", "add", "d0", "type", "bridge"]);
      },
    });

    it("native XDP: veth yes, bridge no; a config needing it exits 1 naming the device", async () => {
      const t = topo();
      const cfg = t.writeConfig({ devices: ["v0", "d0"], loadBalancer: { acceleration: "native" } });
      const r = await t.kpr("a", ["bpf", "probe", "-o", "json"], { config: cfg });
      expect(r.code).toBe(1);
      const rep = JSON.parse(r.stdout) as ProbeReport;
      const xdp = rep.features.filter((f) => f.name.startsWith("XDP native"));
      expect(xdp.map((f) => [f.name, f.present, f.required])).toEqual([
        ["XDP native on v0", true, true],
        ["XDP native on d0", false, true],
      ]);
      expect(xdp[0]!.detail).toContain("driver veth");
      expect(rep.missing).toEqual(["XDP native on d0"]);
      const table = await t.kpr("a", ["bpf", "probe"], { config: cfg });
      expect(table.stdout).toMatch(/^MISSING\s+XDP native on d0\s+driver bridge/m);
      expect(table.stderr).toContain("missing: XDP native on d0");
    });
  });
});
