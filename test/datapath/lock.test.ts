/**
 * The state lock survives `kpr cleanup` removing bpf.root: with the forced schedule (hold the
 * lock, start cleanup, start apply X, release, start apply Y) the node always ends with exactly
 * one input programmed — never a mix, never a reverse-NAT id shared by two frontends.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { loadConfig } from "../../src/config/load.ts";
import { lockDirectory } from "../../src/datapath/ffi.ts";
import { lb4Service } from "../../src/datapath/lbmaps.ts";
import { hex, type MapState } from "../../src/datapath/mapstate.ts";
import { readPinnedState } from "../../src/datapath/reconcile.ts";
import { service } from "../e2e/_manifests.ts";
import { needs } from "../harness/env.ts";
import { useTopology } from "../harness/netns.ts";

const skip = needs({ root: true, built: true, tools: ["ip", "nsenter"] }, "state lock vs cleanup");

function manifest(first: number, count: number, port: number): string {
  const objs: object[] = [];
  for (let i = first; i < first + count; i++)
    objs.push(
      ...service({
        name: `svc-${i}`,
        type: "ClusterIP",
        clusterIP: `10.96.0.${i}`,
        ports: [{ name: "p", port, targetPort: 8080, protocol: "TCP" }],
        endpoints: [{ ip: `10.244.0.${i}`, nodeName: "node-1" }],
      }),
    );
  return objs.map((o) => stringify(o)).join("---\n");
}

/** The frontends (address:port) of the master entries, and problems of the state's integrity. */
function inspect(st: MapState | undefined): { frontends: string[]; problems: string[] } {
  const problems: string[] = [];
  const frontends: string[] = [];
  const ids = new Map<number, string>();
  for (const { key, value } of st?.kpr_lb4_svc.values() ?? []) {
    if (key[6] !== 0 || key[7] !== 0) continue;
    const fe = `${key[0]}.${key[1]}.${key[2]}.${key[3]}:${(key[4]! << 8) | key[5]!}`;
    frontends.push(fe);
    const id = lb4Service.decode(value).rev_nat_id;
    const other = ids.get(id);
    if (other) problems.push(`rev-nat id ${id} shared by ${other} and ${fe}`);
    ids.set(id, fe);
    if (!st?.kpr_svc_meta.has(hex(new Uint8Array([id & 0xff, id >> 8])))) problems.push(`${fe}: no metadata`);
  }
  if (st && st.kpr_svc_meta.size !== frontends.length)
    problems.push(`${st.kpr_svc_meta.size} metadata entries for ${frontends.length} frontends`);
  if (st && st.kpr_lb4_rnat.size !== frontends.length)
    problems.push(`${st.kpr_lb4_rnat.size} reverse-NAT entries for ${frontends.length} frontends`);
  return { frontends: frontends.sort(), problems };
}

describe.skipIf(!!skip)("the state lock and kpr cleanup", () => {
  const topo = useTopology({
    setup: async (t) => {
      await t.addNs("node");
      t.writeConfig({ socketLB: { enabled: false }, nodeName: "node-1" });
    },
  });

  test("hold, cleanup, apply X, release, apply Y: one input programmed, every run", async () => {
    const t = topo();
    const cfg = loadConfig(t.configPath);
    const x = join(t.tmpDir, "x.yaml");
    const y = join(t.tmpDir, "y.yaml");
    writeFileSync(x, manifest(1, 40, 80));
    writeFileSync(y, manifest(21, 40, 443));
    const want = {
      x: Array.from({ length: 40 }, (_, i) => `10.96.0.${i + 1}:80`).sort(),
      y: Array.from({ length: 40 }, (_, i) => `10.96.0.${i + 21}:443`).sort(),
    };
    const env = { KPR_LOG_FORMAT: "text" };
    for (let run = 1; run <= 6; run++) {
      const seed = await t.kpr("node", ["apply", "-f", run % 2 ? y : x]);
      expect(seed.code, `run ${run}: seed apply\n${seed.stderr}`).toBe(0);
      mkdirSync(t.bpfRoot, { recursive: true });
      const held = lockDirectory(t.bpfRoot);
      let released = false;
      try {
        const cleanup = t.kprSpawn("node", ["cleanup"], { env });
        await cleanup.waitForOutput(/waiting for another kpr process/, 20_000);
        const applyX = t.kprSpawn("node", ["apply", "-f", x], { env });
        await applyX.waitForOutput(/waiting for another kpr process/, 20_000);
        held[Symbol.dispose]();
        released = true;
        const applyY = t.kprSpawn("node", ["apply", "-f", y], { env });
        const codes = await Promise.all([cleanup.exited, applyX.exited, applyY.exited]);
        expect(
          codes,
          `run ${run}: exit codes of cleanup, X, Y\n${cleanup.output()}\n${applyX.output()}\n${applyY.output()}`,
        ).toEqual([0, 0, 0]);
      } finally {
        if (!released) held[Symbol.dispose]();
      }
      const st = existsSync(t.bpfRoot) ? readPinnedState(cfg) : undefined;
      const { frontends, problems } = inspect(st);
      expect(problems, `run ${run}: integrity of the final state`).toEqual([]);
      expect([want.x, want.y], `run ${run}: final frontends are exactly X's or Y's`).toContainEqual(
        frontends,
      );
    }
  });
});
