/**
 * Prints the kernel matrix from the results directories written by scripts/vm/guest.sh (and
 * scripts/arm64-smoke.sh): kernel × suite → passed/failed/skipped with reasons, each program's
 * verifier figures per kernel, and the feature probe per kernel. Writes "N passed, N failed" (one
 * count per kernel × suite that ran) to <parent>/summary and exits 1 when anything failed.
 *
 *   bun scripts/vm/report.ts [--markdown FILE] DIR...
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";

interface SuiteResult {
  suite: string;
  verdict: string;
  pass: number;
  fail: number;
  skip: number;
  secs: string;
  reason: string;
}
interface Column {
  label: string;
  kernel: string;
  results: SuiteResult[];
  skips: string[];
  probe?: { features: { name: string; present: boolean; detail: string; neededBy: string }[] };
  load: Record<string, number | string>[];
}

const argv = process.argv.slice(2);
let markdown: string | undefined;
const dirs: string[] = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--markdown") markdown = argv[++i];
  else dirs.push(argv[i]!);
}
const read = (p: string) => (existsSync(p) ? readFileSync(p, "utf8") : "");

const SUITES = ["vm", "probe", "load", "bpf", "e2e", "smoke"];
const cols: Column[] = dirs.map((d) => {
  const kernel = read(join(d, "kernel")).trim() || "?";
  const name = basename(d);
  const label = name === "host" ? `${kernel} (host)` : name === "arm64" ? `${kernel} (arm64)` : kernel;
  const results = read(join(d, "results"))
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => {
      const [suite, verdict, pass, fail, skip, secs, ...reason] = l.split(" ");
      return {
        suite: suite!,
        verdict: verdict!,
        pass: Number(pass),
        fail: Number(fail),
        skip: Number(skip),
        secs: secs ?? "?",
        reason: reason.join(" ").replace(/^-$/, ""),
      };
    });
  const skips = new Set<string>();
  for (const s of ["bpf", "e2e"])
    for (const m of read(join(d, `${s}.log`)).matchAll(/^skip (.+)$/gm)) skips.add(`${s}: ${m[1]}`);
  const probeText = read(join(d, "probe.json"));
  let probe: Column["probe"];
  try {
    probe = probeText ? JSON.parse(probeText) : undefined;
  } catch {
    probe = undefined;
  }
  const load = read(join(d, "load.json"))
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l));
  return { label, kernel, results, skips: [...skips], probe, load };
});

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(w[i]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}
function mdTable(rows: string[][]): string {
  const [head, ...body] = rows;
  return [head, head!.map(() => "---"), ...body].map((r) => `| ${r!.join(" | ")} |`).join("\n");
}

const suitesRun = SUITES.filter((s) => cols.some((c) => c.results.some((r) => r.suite === s)));
let passed = 0;
let failed = 0;
const cell = (c: Column, s: string): string => {
  const r = c.results.find((x) => x.suite === s);
  if (!r) {
    if (c.label.endsWith("(host)")) return "run by scripts/test.sh";
    return s === "e2e" ? "not run (oldest kernel only)" : "not run";
  }
  if (r.verdict === "passed") passed++;
  else if (r.verdict === "failed") failed++;
  const counts =
    r.pass + r.fail + r.skip > 1 ? ` ${r.pass}/${r.pass + r.fail}${r.skip ? ` +${r.skip} skipped` : ""}` : "";
  return `${r.verdict}${counts} ${r.secs}s${r.reason ? ` (${r.reason})` : ""}`;
};
const main = [["kernel", ...suitesRun], ...cols.map((c) => [c.label, ...suitesRun.map((s) => cell(c, s))])];
console.log("kernel × suite (passed/failed, tests passed/run, seconds in the VM)");
console.log(table(main));
for (const c of cols) for (const s of c.skips) console.log(`  skipped on ${c.label}: ${s}`);

// verifier figures
const progs = [...new Set(cols.flatMap((c) => c.load.map((l) => `${l.object}/${l.program}`)))];
const vrows = [["program", ...cols.map((c) => c.label)]];
for (const p of progs) {
  if (p.startsWith("probe/")) continue;
  vrows.push([
    p,
    ...cols.map((c) => {
      const l = c.load.find((x) => `${x.object}/${x.program}` === p);
      if (!l) return "-";
      if (l.verdict === "skipped") return `skipped (${l.error})`;
      if (l.verdict !== "accepted") return "REJECTED";
      return `${l.insnsProcessed} insns, ${l.totalStates} states (peak ${l.peakStates})`;
    }),
  ]);
}
if (progs.length) {
  console.log("\nverifier: instructions processed (limit 1,000,000) and states, per kernel");
  console.log(table(vrows));
  for (const c of cols)
    for (const l of c.load.filter((x) => x.verdict === "rejected"))
      console.log(`\n${c.label}: ${l.object}/${l.program} rejected:\n${l.error}`);
}

// features
const feats = [...new Set(cols.flatMap((c) => (c.probe?.features ?? []).map((f) => f.name)))].filter(
  (f) => !/^XDP (native|generic) on /.test(f) && !f.startsWith("XDP on "),
);
const frows = [["feature", "needed by", ...cols.map((c) => c.label)]];
for (const f of feats) {
  const any = cols.flatMap((c) => c.probe?.features ?? []).find((x) => x.name === f)!;
  frows.push([
    f,
    any.neededBy,
    ...cols.map((c) => {
      const x = c.probe?.features.find((y) => y.name === f);
      return x ? (x.present ? "yes" : "no") : "-";
    }),
  ]);
}
if (feats.length) {
  console.log("\nkpr bpf probe per kernel");
  console.log(table(frows));
}

if (markdown) {
  const md = [
    `Kernels tested by \`scripts/kernel-matrix.sh\` (Debian's kernel packages in qemu; "host" is the`,
    "machine the matrix ran on):",
    "",
    mdTable(main),
    "",
    mdTable(frows),
    "",
    mdTable(vrows),
    "",
  ].join("\n");
  writeFileSync(markdown, md);
}

const summary = `${passed} passed, ${failed} failed`;
if (dirs.length) writeFileSync(join(dirname(dirs[0]!), "summary"), `${summary}\n`);
console.log(`\nmatrix: ${summary}`);
process.exit(failed ? 1 : 0);
