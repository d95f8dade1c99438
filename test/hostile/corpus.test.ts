/**
 * The standing hostile-input corpus: generated malformed and hostile manifests and configs
 * (test/hostile/_corpus.ts) applied to a node with services programmed. For every case: exit 0
 * or 2 (never a crash or a stack trace), peak memory and time within bounds, and after any
 * non-zero exit every pinned map byte-identical to before. KPR_HOSTILE_SEED / KPR_HOSTILE_CASES
 * choose another corpus (the seed is printed with every failure).
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BpfMap } from "../../src/datapath/bpf.ts";
import { hex } from "../../src/datapath/mapstate.ts";
import { needs } from "../harness/env.ts";
import { KPR_BIN, useTopology } from "../harness/netns.ts";
import { baseConfig, baseManifest, hostileCorpus } from "./_corpus.ts";

const skip = needs({ root: true, built: true, tools: ["ip", "nsenter"] }, "hostile-input corpus");

const SEED = Number(process.env.KPR_HOSTILE_SEED ?? 20261202);
const CASES = Number(process.env.KPR_HOSTILE_CASES ?? 40);
/** Bounds from issue 8: any input up to 100 MB answered within seconds, under 500 MB RSS. */
const MAX_RSS_MIB = 500;
/** Seconds; generous because CI machines are shared (a case takes well under 2 s alone). */
const MAX_SECONDS = 20;

/** Every map pinned under maps/, as hex key → hex value: the node's whole LB state. */
function snapshot(mapsDir: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  for (const name of readdirSync(mapsDir).sort()) {
    const m = BpfMap.openPinned(join(mapsDir, name));
    try {
      const entries: Record<string, string> = {};
      for (const [k, v] of m.entries()) entries[hex(k)] = hex(v);
      out[name] = entries;
    } finally {
      m.close();
    }
  }
  return out;
}

describe.skipIf(!!skip)(`hostile inputs against a programmed node (seed ${SEED})`, () => {
  const topo = useTopology({
    setup: async (t) => {
      await t.addNs("node");
      t.writeConfig({ socketLB: { enabled: false }, nodeName: "node-1" });
    },
  });

  test(`${CASES} generated cases and the fixed ones: exit 0 or 2, bounded, state untouched on failure`, async () => {
    const t = topo();
    const goodManifest = join(t.tmpDir, "base.yaml");
    writeFileSync(goodManifest, baseManifest());
    const roots = `bpf:\n  root: ${t.bpfRoot}\ncgroup:\n  root: ${t.cgroupDir}\n`;
    const goodConfig = join(t.tmpDir, "base-config.yaml");
    writeFileSync(goodConfig, `${baseConfig()}${roots}`);
    const run = (args: string[]) => {
      const t0 = performance.now();
      const p = Bun.spawnSync(["nsenter", `--net=/run/netns/${t.ns("node")}`, "--", KPR_BIN, ...args], {
        env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", KPR_LOG_FORMAT: "text" },
        timeout: 60_000,
      });
      return {
        code: p.exitCode ?? 128 + 9,
        stderr: p.stderr.toString(),
        seconds: (performance.now() - t0) / 1000,
        rssMiB: (p.resourceUsage?.maxRSS ?? 0) / 1024 / 1024,
      };
    };
    const first = run(["apply", "-f", goodManifest, "--config", goodConfig]);
    expect(first.code, `programming the base input:\n${first.stderr}`).toBe(0);
    const mapsDir = join(t.bpfRoot, "maps");
    let before = snapshot(mapsDir);
    expect(Object.keys(before.kpr_svc_meta ?? {}).length, "services programmed").toBeGreaterThan(0);

    const failures: string[] = [];
    const corpus = hostileCorpus(SEED, CASES);
    let rejected = 0;
    for (const [i, c] of corpus.entries()) {
      const file = join(t.tmpDir, `case-${i}.${c.target === "manifest" ? "yaml" : "conf"}`);
      if (c.target === "config") {
        const text = typeof c.content === "string" ? c.content : new TextDecoder().decode(c.content);
        writeFileSync(file, `${roots}${text}`);
      } else writeFileSync(file, c.content);
      const args =
        c.target === "manifest"
          ? ["apply", "-f", file, "--config", goodConfig]
          : ["apply", "-f", goodManifest, "--config", file];
      const r = run(args);
      const what = `case ${i} (${c.name}, seed ${SEED})`;
      if (r.code !== 0 && r.code !== 2) failures.push(`${what}: exit ${r.code}\n${r.stderr.slice(0, 1500)}`);
      if (/\n\s+at .+:\d+/.test(r.stderr)) failures.push(`${what}: stack trace\n${r.stderr.slice(0, 1500)}`);
      if (r.rssMiB > MAX_RSS_MIB) failures.push(`${what}: peak RSS ${Math.round(r.rssMiB)} MiB`);
      if (r.seconds > MAX_SECONDS) failures.push(`${what}: ${r.seconds.toFixed(1)} s`);
      if (r.code !== 0) {
        rejected++;
        const after = snapshot(mapsDir);
        if (!Bun.deepEquals(after, before))
          failures.push(`${what}: exit ${r.code} but the pinned maps changed`);
      } else {
        // an accepted input (a harmless mutation) programs what it says: the new baseline
        before = snapshot(mapsDir);
      }
    }
    expect(failures, "cases that broke a rule").toEqual([]);
    expect(rejected, "most hostile cases are rejected").toBeGreaterThan(corpus.length / 3);
  });
});
