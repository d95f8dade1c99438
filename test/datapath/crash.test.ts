/**
 * Crash consistency: an apply killed (SIGKILL, no rollback) at any point of a large additive
 * apply — after any batch of map writes, the window between the new frontends' master entries
 * and their metadata included — leaves nothing that the next apply of the previous input keeps:
 * the LB maps then equal a clean apply of that input byte for byte.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { loadConfig } from "../../src/config/load.ts";
import { BpfMap } from "../../src/datapath/bpf.ts";
import { lb4Service } from "../../src/datapath/lbmaps.ts";
import { hex, type MapState } from "../../src/datapath/mapstate.ts";
import { readPinnedState } from "../../src/datapath/reconcile.ts";
import { foreignMapsInUse } from "../../src/datapath/verify.ts";
import { service } from "../e2e/_manifests.ts";
import { needs } from "../harness/env.ts";
import { useTopology } from "../harness/netns.ts";

const skip = needs({ root: true, built: true, tools: ["ip", "nsenter"] }, "crash consistency");

function manifest(first: number, count: number): string {
  const objs: object[] = [];
  for (let i = first; i < first + count; i++) {
    objs.push(
      ...service({
        name: `svc-${i}`,
        type: "ClusterIP",
        clusterIP: `10.96.${i >> 8}.${i & 0xff}`,
        ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }],
        endpoints: [
          { ip: `10.244.${(i >> 8) & 0xff}.${i & 0xff}`, nodeName: "node-1" },
          { ip: `10.245.${(i >> 8) & 0xff}.${i & 0xff}`, nodeName: "node-2" },
        ],
      }),
    );
  }
  return objs.map((o) => stringify(o)).join("---\n");
}

/** Each LB map as hex key → hex value, for one toEqual. */
function flat(st: MapState | undefined): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  for (const [map, content] of Object.entries(st ?? {}))
    out[map] = Object.fromEntries([...content].map(([k, e]) => [k, hex(e.value)]));
  return out;
}

/** Master entries (slot 0) that have no metadata entry: frontends no digest vouches for. */
function mastersWithoutMeta(st: MapState): number {
  let n = 0;
  for (const { key, value } of st.kpr_lb4_svc.values()) {
    if (key[6] !== 0 || key[7] !== 0) continue;
    const id = lb4Service.decode(value).rev_nat_id;
    if (!st.kpr_svc_meta.has(hex(new Uint8Array([id & 0xff, id >> 8])))) n++;
  }
  return n;
}

describe.skipIf(!!skip)("an apply killed at any point leaves no orphans", () => {
  const topo = useTopology({
    setup: async (t) => {
      await t.addNs("node");
      t.writeConfig({ socketLB: { enabled: false }, nodeName: "node-1" });
    },
  });

  test("kill -9 after every batch of a 3,000-frontend additive apply, then re-apply the previous input", async () => {
    const t = topo();
    const cfg = loadConfig(t.configPath);
    const a = join(t.tmpDir, "a.yaml");
    const b = join(t.tmpDir, "b.yaml");
    writeFileSync(a, manifest(0, 100));
    writeFileSync(b, `${manifest(0, 100)}---\n${manifest(100, 3000)}`);
    const first = await t.kpr("node", ["apply", "-f", a]);
    expect(first.code, `first apply of A:\n${first.stderr}`).toBe(0);
    const clean = flat(readPinnedState(cfg));
    expect(Object.keys(clean.kpr_svc_meta ?? {}).length, "A programs 100 frontends").toBe(100);

    let windowHit = 0;
    let finished = false;
    for (let k = 1; k <= 40 && !finished; k++) {
      const killed = await t.kpr("node", ["apply", "-f", b], {
        env: { KPR_FAULT_KILL_AFTER_GROUPS: String(k) },
      });
      if (killed.code === 0) {
        finished = true;
      } else {
        expect(killed.code, `apply B killed after batch ${k}: exit by SIGKILL\n${killed.stderr}`).toBe(137);
        const torn = readPinnedState(cfg);
        if (torn && mastersWithoutMeta(torn) > 0) windowHit++;
      }
      const again = await t.kpr("node", ["apply", "-f", a]);
      expect(again.code, `re-apply A after a kill at batch ${k}:\n${again.stderr}`).toBe(0);
      expect(flat(readPinnedState(cfg)), `maps after re-applying A (kill at batch ${k})`).toEqual(clean);
    }
    expect(finished, "the apply of B ends within 40 batches").toBe(true);
    expect(windowHit, "some kill landed between master and metadata writes").toBeGreaterThan(0);
  });
});

describe.skipIf(!!skip)("a map resize killed at any step is finished by the next apply", () => {
  const topo = useTopology({
    setup: async (t) => {
      await t.addNs("node");
      t.writeConfig({ socketLB: { enabled: false }, nodeName: "node-1" });
    },
  });

  test.each([
    "resize-copied",
    "resize-relinked",
    "resize-renamed-1",
    "resize-renamed-2",
  ])("kill -9 at %s, then apply again: maps of the new size, same content, no staging left", async (step) => {
    const t = topo();
    const small = t.configPath;
    const big = join(t.tmpDir, `big-${step}.yaml`);
    writeFileSync(
      big,
      stringify({
        bpf: { root: t.bpfRoot, lbMapMax: 131072 },
        cgroup: { root: t.cgroupDir },
        socketLB: { enabled: false },
        nodeName: "node-1",
      }),
    );
    const a = join(t.tmpDir, "a.yaml");
    writeFileSync(a, manifest(0, 200));
    // start from maps of the small size with A programmed
    const first = await t.kpr("node", ["apply", "-f", a], { config: small });
    expect(first.code, `apply A (small maps):\n${first.stderr}`).toBe(0);
    const clean = flat(readPinnedState(loadConfig(small)));
    const killed = await t.kpr("node", ["apply", "-f", a], { config: big, env: { KPR_FAULT_KILL_AT: step } });
    expect(killed.code, `apply with bigger maps killed at ${step}\n${killed.stderr}`).toBe(137);
    const again = await t.kpr("node", ["apply", "-f", a], { config: big });
    expect(again.code, `apply after the kill:\n${again.stderr}`).toBe(0);
    const cfg = loadConfig(big);
    expect(flat(readPinnedState(cfg)), "content after the resize was finished").toEqual(clean);
    for (const m of ["kpr_lb4_svc", "kpr_lb4_be"]) {
      using map = BpfMap.openPinned(join(t.bpfRoot, "maps", m));
      expect(map.maxEntries, `${m} size`).toBe(131072);
    }
    expect(existsSync(join(t.bpfRoot, "maps-resizing")), "no staging left").toBe(false);
    expect(foreignMapsInUse(t.bpfRoot), "every program uses the pinned maps").toEqual([]);
    // and back to the small size (a shrink that fits) for the next case
    const back = await t.kpr("node", ["apply", "-f", a], { config: small });
    expect(back.code, `shrink back:\n${back.stderr}`).toBe(0);
    expect(flat(readPinnedState(loadConfig(small))), "content after shrinking back").toEqual(clean);
  });
});
