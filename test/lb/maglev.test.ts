/**
 * Maglev (src/lb/maglev.ts): MurmurHash3 against SMHasher's verification value, seed decoding,
 * the table's balance, its disruption when a backend leaves, and determinism across processes.
 */
import { describe, expect, it } from "bun:test";
import {
  DEFAULT_HASH_SEED,
  MaglevTables,
  maglevTable,
  murmur3x64_128,
  parseHashSeed,
} from "../../src/lb/maglev.ts";

const SEED = parseHashSeed(DEFAULT_HASH_SEED);
const names = (n: number, tag = "") =>
  Array.from({ length: n }, (_, i) => `10.${tag ? 9 : 0}.${i >> 8}.${i & 255}:8080`);

function counts(table: Int32Array, n: number): number[] {
  const c = new Array<number>(n).fill(0);
  for (const i of table) c[i]! += 1;
  return c;
}

describe("maglev", () => {
  it("MurmurHash3 x64-128 gives SMHasher's verification value (0x6384BA69)", () => {
    const key = new Uint8Array(256);
    const hashes = new Uint8Array(256 * 16);
    for (let i = 0; i < 256; i++) {
      key[i] = i;
      const [h1, h2] = murmur3x64_128(key.subarray(0, i), 256 - i);
      const dv = new DataView(hashes.buffer, i * 16, 16);
      dv.setBigUint64(0, h1, true);
      dv.setBigUint64(8, h2, true);
    }
    const [h] = murmur3x64_128(hashes, 0);
    expect((Number(h & 0xffffffffn) >>> 0).toString(16)).toBe("6384ba69");
  });

  it("decodes Cilium's seed (12 bytes, big-endian words) and rejects others", () => {
    expect(parseHashSeed("AAAAAQAAAAIAAAAD")).toEqual({ murmur: 1, jhash0: 2, jhash1: 3 });
    expect(() => parseHashSeed("AAAA")).toThrow("decodes to 3 bytes (expected 12 bytes");
    expect(() => parseHashSeed("not base64!")).toThrow("not base64");
  });

  it.each([
    [3, 16381],
    [10, 16381],
    [100, 16381],
    [7, 1021],
  ])("N=%d backends, M=%d (> 100·N): every backend within 1 percent of M/N", (n, m) => {
    const c = counts(maglevTable(names(n), m, SEED), n);
    const ideal = m / n;
    const worst = Math.max(...c.map((x) => Math.abs(x - ideal) / ideal));
    expect({ n, m, within1pct: worst <= 0.01, sum: c.reduce((a, b) => a + b, 0) }).toEqual({
      n,
      m,
      within1pct: true,
      sum: m,
    });
  });

  it.each([5, 10, 50])("removing one of N=%d backends remaps close to 1/N of the table", (n) => {
    const m = 16381;
    const all = names(n);
    const before = maglevTable(all, m, SEED);
    const removed = Math.floor(n / 2);
    const rest = all.filter((_, i) => i !== removed);
    const after = maglevTable(rest, m, SEED);
    let moved = 0;
    let movedOthers = 0;
    for (let j = 0; j < m; j++) {
      if (all[before[j]!] !== rest[after[j]!]) {
        moved++;
        if (before[j] !== removed) movedOthers++;
      }
    }
    // the removed backend's share (1/N) moves; Maglev moves only a small extra share of the rest
    expect({
      n,
      movedShare: moved / m >= 1 / n - 0.01 && moved / m <= 1 / n + 0.02,
      others: movedOthers / m < 0.02,
    }).toEqual({
      n,
      movedShare: true,
      others: true,
    });
  });

  it("the same seed gives the same table in another process; another seed another table", () => {
    const backends = names(10);
    const here = Bun.hash.wyhash(new Uint8Array(maglevTable(backends, 16381, SEED).buffer)).toString();
    const src = `import { maglevTable, parseHashSeed } from ${JSON.stringify(`${import.meta.dir}/../../src/lb/maglev.ts`)};
      const t = maglevTable(${JSON.stringify(backends)}, 16381, parseHashSeed(${JSON.stringify(DEFAULT_HASH_SEED)}));
      process.stdout.write(Bun.hash.wyhash(new Uint8Array(t.buffer)).toString());`;
    const r = Bun.spawnSync([process.execPath, "-e", src], { stdout: "pipe", stderr: "pipe" });
    expect({ code: r.exitCode, stderr: r.stderr.toString(), table: r.stdout.toString() }).toEqual({
      code: 0,
      stderr: "",
      table: here,
    });
    const other = maglevTable(backends, 16381, parseHashSeed("AAAAAQAAAAIAAAAD"));
    expect(Bun.hash.wyhash(new Uint8Array(other.buffer)).toString()).not.toBe(here);
  });

  it("MaglevTables recomputes only frontends whose backends changed", () => {
    const t = new MaglevTables(1021, SEED);
    const a = names(4);
    const b = names(4, "b");
    t.table("fe-a", a);
    t.table("fe-b", b);
    t.table("fe-a", a);
    expect(t.computed).toBe(2);
    t.table("fe-b", b.slice(1));
    expect(t.computed).toBe(3);
    t.retain(new Set(["fe-b"]));
    t.table("fe-a", a);
    expect(t.computed).toBe(4);
  });
});
