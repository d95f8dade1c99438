#!/usr/bin/env bun
import { DEFAULT_HASH_SEED, MaglevTables, parseHashSeed } from "../src/lb/maglev.ts";
/**
 * Maglev table computation in user space (src/lb/maglev.ts), the part of `kpr apply` that
 * loadBalancer.algorithm=maglev adds: N north-south frontends × E backends at table size M, from
 * scratch (first apply), again with nothing changed (the per-frontend cache; across one-shot
 * applies kpr_lb4_mgsig plays that role), and with one frontend's backends changed.
 * Usage: bun bench/maglev.ts [frontends=10000] [backends=10] [M=16381]
 */
import { printTable } from "./_lib.ts";

const n = Number(process.argv[2] ?? 10_000);
const e = Number(process.argv[3] ?? 10);
const m = Number(process.argv[4] ?? 16381);
if (![n, e, m].every((x) => Number.isInteger(x) && x > 0)) {
  console.error("bench/maglev: frontends, backends and M must be positive integers");
  process.exit(2);
}
const seed = parseHashSeed(DEFAULT_HASH_SEED);
const ip = (k: number) => `10.${128 + ((k >>> 16) & 127)}.${(k >>> 8) & 255}.${k & 255}:8080`;
const sets = Array.from({ length: n }, (_, i) => Array.from({ length: e }, (_, j) => ip(i * e + j + 1)));

const tables = new MaglevTables(m, seed);
const time = (f: () => void) => {
  const t0 = performance.now();
  f();
  return performance.now() - t0;
};
const all = () => {
  for (const [i, s] of sets.entries()) tables.table(`fe-${i}`, s);
};
const first = time(all);
const firstComputed = tables.computed;
const again = time(all);
sets[n >> 1] = sets[n >> 1]!.slice(1);
const before = tables.computed;
const one = time(all);

printTable(
  ["run", "tables computed", "ms", "ms per table"],
  [
    [
      "first apply (every table)",
      String(firstComputed),
      first.toFixed(0),
      (first / firstComputed).toFixed(2),
    ],
    ["nothing changed", "0", again.toFixed(1), "—"],
    ["one frontend's backends changed", String(tables.computed - before), one.toFixed(1), "—"],
  ],
);
console.log(`\n${n} frontends × ${e} backends, M = ${m}; one process, one core.`);
