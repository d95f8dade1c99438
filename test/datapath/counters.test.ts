import { afterAll, describe, expect, it } from "bun:test";
import { mkdirSync, rmSync } from "node:fs";
import { defaultConfig } from "../../src/config/config.ts";
import { BpfMap, MapType, possibleCpus } from "../../src/datapath/bpf.ts";
import { readCounters, readMapFill } from "../../src/datapath/counters.ts";
import { REASON_NAMES } from "../../src/datapath/lbmaps.ts";
import { needs } from "../harness/env.ts";

const skip = needs({ root: true }, "counters");

describe.skipIf(!!skip)("readCounters / readMapFill on pinned maps", () => {
  const root = `/sys/fs/bpf/kt${Math.random().toString(36).slice(2, 8).padEnd(6, "0")}`;
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it("sums per-CPU stats and reasons and reports fill levels", () => {
    mkdirSync(`${root}/maps`, { recursive: true });
    const cfg = defaultConfig();
    cfg.bpf.root = root;
    expect(readCounters(cfg), "no state yet").toBeUndefined();
    const ncpu = possibleCpus();
    const perCpu = (vals: [bigint, bigint][]) => {
      const b = new Uint8Array(16 * ncpu);
      const dv = new DataView(b.buffer);
      vals.forEach(([p, by], c) => {
        dv.setBigUint64(c * 16, p, true);
        dv.setBigUint64(c * 16 + 8, by, true);
      });
      return b;
    };
    const u32 = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);
    for (const name of ["kpr_svc_stats", "kpr_be_stats"]) {
      using m = BpfMap.create({ name, type: MapType.PERCPU_HASH, keySize: 4, valueSize: 16, maxEntries: 64 });
      const vals: [bigint, bigint][] = [[3n, 300n]];
      if (ncpu > 1) vals.push([4n, 400n]);
      m.update(u32(7), perCpu(vals));
      m.pin(`${root}/maps/${name}`);
    }
    {
      using r = BpfMap.create({
        name: "kpr_reasons",
        type: MapType.PERCPU_ARRAY,
        keySize: 4,
        valueSize: 8,
        maxEntries: 32,
      });
      const v = new Uint8Array(8 * ncpu);
      new DataView(v.buffer).setBigUint64(0, 5n, true);
      r.update(u32(REASON_NAMES.indexOf("drop-src-range")), v);
      r.pin(`${root}/maps/kpr_reasons`);
    }
    const c = readCounters(cfg)!;
    const want = ncpu > 1 ? { packets: 7n, bytes: 700n } : { packets: 3n, bytes: 300n };
    expect(c.frontends.get(7), "frontend 7 summed over CPUs").toEqual(want);
    expect(c.backends.get(7), "backend 7 summed over CPUs").toEqual(want);
    expect(c.reasons.find((r) => r.reason === "drop-src-range")?.count, "reason count").toBe(5n);
    expect(c.reasons.length, "every reason listed").toBe(REASON_NAMES.length);
    expect(readMapFill(cfg), "fill levels").toEqual([
      { name: "kpr_be_stats", entries: 1, maxEntries: 64 },
      { name: "kpr_reasons", entries: 32, maxEntries: 32 },
      { name: "kpr_svc_stats", entries: 1, maxEntries: 64 },
    ]);
  });
});

describe("REASON_NAMES", () => {
  it("has one name per enum kpr_reason entry of abi.h, in order", async () => {
    const abi = await Bun.file(`${import.meta.dir}/../../bpf/lib/abi.h`).text();
    const body = /enum kpr_reason \{([\s\S]*?)\};/.exec(abi)![1]!;
    const names = [...body.matchAll(/KPR_R_([A-Z0-9_]+)/g)].map((m) => m[1]!).filter((n) => n !== "COUNT");
    expect(REASON_NAMES.map((n) => n.replaceAll("-", "_").toUpperCase())).toEqual(names);
  });
});
