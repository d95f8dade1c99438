/**
 * Control-plane benchmark: programming N services × E endpoints with `kpr apply` versus
 * kube-proxy's iptables layout loaded with iptables-restore (nf_tables backend, and the legacy
 * backend) and kube-proxy's nftables layout loaded with `nft -f`, measured side by side in one run,
 * each in its own network namespace.
 *
 *   bun bench/apply.ts [--services 10000] [--endpoints 10] [--format yaml|json] [--runs 5]
 *                      [--timeout 300] [--skip iptables,legacy,nft]
 *
 * Needs root, dist/kpr (bun build.ts), iptables, nft, nsenter. Removes everything it created
 * (netns, bpffs dir, cgroup, temp dir) at the end, on failure and on Ctrl-C.
 */
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  cleanupKprRoot,
  countIptRules,
  countNftStatements,
  createCgroup,
  createNetns,
  fmtMs,
  fmtRatio,
  have,
  iptablesFull,
  iptablesJumps,
  iptablesPartial,
  KPR,
  makeServiceSet,
  median,
  nftFull,
  nftOneServiceUpdate,
  printTable,
  REPO,
  type RunResult,
  run,
  startBench,
  vethInNs,
  withOneEndpointChanged,
  writeKprConfig,
  writeManifests,
} from "./_lib.ts";

const NODE = "bench-node";
const NODE_ADDR = "192.168.77.1";

// ---------------------------------------------------------------------------------------------
// inner mode: runs inside the kpr netns and times the kernel programming step alone

/** Where applyModel's time goes (each step timed again on its own after the real apply). */
interface Breakdown {
  loadDatapathMs: number;
  previousIdsMs: number;
  encodeMs: number;
}

/**
 * `--inner-program --config CFG --dir DIR`: the steps of `kpr apply` in-process (read manifests,
 * translate with the node's previous ids, then applyModel) with applyModel timed on its own,
 * then its main steps timed separately on the now up-to-date node. Prints one JSON line.
 */
async function innerProgram(cfgPath: string, dir: string): Promise<void> {
  const { loadConfig } = await import("../src/config/load.ts");
  const { readManifests } = await import("../src/k8s/manifest.ts");
  const { translate } = await import("../src/lb/translate.ts");
  const { readDeviceAddresses } = await import("../src/config/devices.ts");
  const { applyModel, readPreviousIds } = await import("../src/datapath/reconcile.ts");
  const { encodeModel } = await import("../src/datapath/mapstate.ts");
  const { loadDatapath } = await import("../src/datapath/loader.ts");
  const t0 = performance.now();
  const cfg = loadConfig(cfgPath);
  const state = await readManifests([dir]);
  const nodeAddresses = readDeviceAddresses(cfg.devices, cfgPath);
  const previous = readPreviousIds(cfg);
  const model = translate(state, cfg, { nodeAddresses, previous });
  const t1 = performance.now();
  const res = await applyModel(model, cfg, {});
  const t2 = performance.now();
  // applyModel's steps again, on the now up-to-date node
  const dp = await loadDatapath(cfg, {});
  dp.close();
  const t3 = performance.now();
  readPreviousIds(cfg);
  const t4 = performance.now();
  encodeModel(model);
  const t5 = performance.now();
  const breakdown: Breakdown = { loadDatapathMs: t3 - t2, previousIdsMs: t4 - t3, encodeMs: t5 - t4 };
  console.log(
    JSON.stringify({
      prepareMs: t1 - t0,
      programMs: t2 - t1,
      summary: res.summary,
      breakdown,
    }),
  );
}

// ---------------------------------------------------------------------------------------------

interface Cell {
  ms?: number;
  note?: string;
}

function cellText(c: Cell | undefined): string {
  if (!c) return "—";
  if (c.ms === undefined) return c.note ?? "—";
  return fmtMs(c.ms) + (c.note ? ` ${c.note}` : "");
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

function check(r: RunResult, what: string): RunResult {
  if (r.timedOut) return r;
  if (r.code !== 0) throw new Error(`${what}: exit ${r.code} (${(r.stderr || r.stdout).trim().slice(-800)})`);
  return r;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      services: { type: "string", default: "10000" },
      endpoints: { type: "string", default: "10" },
      format: { type: "string", default: "yaml" },
      runs: { type: "string", default: "5" },
      timeout: { type: "string", default: "300" },
      skip: { type: "string", default: "" },
      "inner-program": { type: "boolean", default: false },
      config: { type: "string" },
      dir: { type: "string" },
    },
  });
  if (values["inner-program"]) return innerProgram(values.config!, values.dir!);

  const N = Number(values.services);
  const E = Number(values.endpoints);
  const runs = Math.max(1, Number(values.runs));
  const timeoutMs = Number(values.timeout) * 1000;
  const format = values.format === "json" ? "json" : "yaml";
  const skip = new Set(values.skip.split(",").filter(Boolean));
  if (!Number.isInteger(N) || N < 1 || !Number.isInteger(E) || E < 1) {
    console.error("bench/apply: --services and --endpoints want positive integers");
    process.exit(2);
  }
  if (!have("iptables-legacy-restore")) skip.add("legacy");
  const { cleanup, prefix, tmp } = startBench("apply", {
    tools: ["ip", "nsenter", "iptables-restore", "nft"],
    files: [KPR],
  });

  // --- the service set and its renderings
  const set = makeServiceSet({ services: N, endpoints: E, nodeName: NODE });
  const changedIndex = N >> 1;
  const next = withOneEndpointChanged(set, changedIndex);
  const nNodePort = set.filter((s) => s.nodePort).length;
  const nUdp = set.filter((s) => s.protocol === "UDP").length;
  const dirA = join(tmp, "a");
  const dirB = join(tmp, "b");
  const t = performance.now();
  writeManifests(dirA, set, { format, nodeName: NODE, nodeAddress: NODE_ADDR });
  writeManifests(dirB, next, { format, nodeName: NODE, nodeAddress: NODE_ADDR });
  const dirNone = join(tmp, "none");
  writeManifests(dirNone, [], { format, nodeName: NODE, nodeAddress: NODE_ADDR });
  const iptA = iptablesFull(set);
  const iptB = iptablesFull(next);
  const iptPartialAB = iptablesPartial(set, next);
  const iptPartialBA = iptablesPartial(next, set);
  const nftA = nftFull(set);
  const nftAB = nftOneServiceUpdate(set[changedIndex]!, next[changedIndex]!);
  const nftBA = nftOneServiceUpdate(next[changedIndex]!, set[changedIndex]!);
  const nftCount = countNftStatements(nftA);
  console.log(
    `bench/apply: ${N} services × ${E} endpoints (${nNodePort} NodePort, ${nUdp} UDP), manifests as ${format}; ` +
      `iptables: ${countIptRules(iptA)} rules; nft: ${nftCount.rules} rules + ${nftCount.elements} map elements ` +
      `(generated in ${fmtMs(performance.now() - t)})`,
  );

  const kpr: Record<string, Cell> = {};
  const ipt: Record<string, Cell> = {};
  const leg: Record<string, Cell> = {};
  const nft: Record<string, Cell> = {};

  // --- kpr
  const kns = createNetns(cleanup, `${prefix}-kpr`);
  vethInNs(kns, `${prefix}a`, `${prefix}b`, `${NODE_ADDR}/24`);
  const cgroupDir = createCgroup(cleanup, prefix);
  const bpfRoot = `/sys/fs/bpf/${prefix}`;
  // every NodePort frontend exists on the node address, 0.0.0.0 and 127.0.0.1
  const frontends = N + 3 * nNodePort;
  const lbMapMax = Math.max(65536, nextPow2(Math.ceil(frontends * (E + 1) * 1.2)));
  const cfgPath = writeKprConfig(tmp, {
    bpf: { root: bpfRoot, lbMapMax },
    cgroup: { root: cgroupDir },
    devices: [`${prefix}a`],
    nodeName: NODE,
  });
  cleanupKprRoot(cleanup, kns, cfgPath, bpfRoot);
  // stdout goes to a file: a command's output may be large, and reading it is not what is timed
  const outFile = join(tmp, "kpr.out");
  const kprRun = async (args: string[]) => {
    rmSync(outFile, { force: true });
    return check(
      await run([KPR, ...args, "--config", cfgPath], {
        ns: kns,
        allowFail: true,
        env: { KPR_LOG_LEVEL: "warn" },
        stdoutTo: outFile,
      }),
      `kpr ${args.join(" ")}`,
    );
  };
  const kprJson = (what: string): unknown[] => {
    const text = readFileSync(outFile, "utf8");
    try {
      return JSON.parse(text) as unknown[];
    } catch (e) {
      throw new Error(`${what}: output is not JSON (${(e as Error).message}): ${text.slice(0, 300)}`);
    }
  };
  const inner = async (dir: string) => {
    const r = check(
      await run(
        [
          process.execPath,
          join(REPO, "bench", "apply.ts"),
          "--inner-program",
          "--config",
          cfgPath,
          "--dir",
          dir,
        ],
        {
          ns: kns,
          allowFail: true,
          env: { KPR_LOG_LEVEL: "warn" },
        },
      ),
      "in-process apply",
    );
    const line = r.stdout.trim().split("\n").pop() ?? "";
    if (!line.startsWith("{"))
      throw new Error(`in-process apply: no result line (${(r.stderr || r.stdout).slice(-500)})`);
    return JSON.parse(line) as {
      prepareMs: number;
      programMs: number;
      summary: string;
      breakdown: Breakdown;
    };
  };

  console.log("kpr: dry-run, initial apply, re-applies …");
  await kprRun(["apply", "--dry-run", "-o", "json", "-f", dirA]); // warms the page cache for the manifests
  const dry = await kprRun(["apply", "--dry-run", "-o", "json", "-f", dirA]);
  const planned = kprJson("kpr apply --dry-run -o json").length;
  kpr.dry = { ms: dry.ms };
  const first = await kprRun(["apply", "-f", dirA]);
  kpr.initial = { ms: first.ms };
  const noop = await kprRun(["apply", "-f", dirA]);
  kpr.noop = { ms: noop.ms };
  // one endpoint changed, back and forth: whole command, its dry-run, and applyModel alone
  const wall: number[] = [];
  const dryB: number[] = [];
  const prog: number[] = [];
  const parts: Breakdown[] = [];
  let lastSummary = "";
  for (let i = 0; i < runs; i++) {
    const to = i % 2 === 0 ? dirB : dirA;
    dryB.push((await kprRun(["apply", "--dry-run", "-o", "json", "-f", to])).ms);
    wall.push((await kprRun(["apply", "-f", to])).ms);
    const back = i % 2 === 0 ? dirA : dirB;
    const r = await inner(back);
    prog.push(r.programMs);
    parts.push(r.breakdown);
    lastSummary = r.summary;
  }
  kpr.change = { ms: median(wall) };
  kpr.changeDry = { ms: median(dryB) };
  kpr.changeProgram = { ms: median(prog) };
  await kprRun(["service", "list", "-o", "json"]);
  const programmed = kprJson("kpr service list -o json").length;
  console.log(`kpr: ${planned} frontends planned, ${programmed} listed from the maps; last: ${lastSummary}`);
  // every service removed (the wipe guard wants --prune-all), then back for nothing else needs it
  kpr.removeAll = { ms: (await kprRun(["apply", "--prune-all", "-f", dirNone])).ms };

  // --- iptables (nf_tables backend and legacy) in their own namespaces
  const iptBench = async (bin: string, ns: string, out: Record<string, Cell>) => {
    check(await run([bin, "--noflush"], { ns, input: iptablesJumps(), allowFail: true }), `${bin} (jumps)`);
    const r = check(await run([bin, "--noflush"], { ns, input: iptA, allowFail: true, timeoutMs }), bin);
    if (r.timedOut) {
      out.initial = { note: `> ${fmtMs(timeoutMs)} (timed out)` };
      out.change = { note: "not run" };
      out.changePartial = { note: "not run" };
      return;
    }
    out.initial = { ms: r.ms };
    const full: number[] = [];
    const part: number[] = [];
    // kube-proxy's full sync is as slow as the initial load: fewer repetitions when that is long
    const fullRuns = r.ms > 20_000 ? 1 : runs;
    for (let i = 0; i < fullRuns; i++) {
      const rr = check(
        await run([bin, "--noflush"], { ns, input: i % 2 === 0 ? iptB : iptA, allowFail: true, timeoutMs }),
        bin,
      );
      if (rr.timedOut) break;
      full.push(rr.ms);
    }
    // partial syncs start from the state the full syncs left
    let atB = fullRuns % 2 === 1;
    for (let i = 0; i < runs; i++) {
      const input = atB ? iptPartialBA : iptPartialAB;
      const rr = check(
        await run([bin, "--noflush"], { ns, input, allowFail: true, timeoutMs }),
        `${bin} (partial)`,
      );
      if (rr.timedOut) break;
      part.push(rr.ms);
      atB = !atB;
    }
    out.change = full.length ? { ms: median(full) } : { note: `> ${fmtMs(timeoutMs)} (timed out)` };
    out.changePartial = part.length ? { ms: median(part) } : { note: `> ${fmtMs(timeoutMs)} (timed out)` };
  };
  if (!skip.has("iptables")) {
    console.log(`iptables-restore (nf_tables): initial load (timeout ${fmtMs(timeoutMs)}) …`);
    await iptBench("iptables-restore", createNetns(cleanup, `${prefix}-ipt`), ipt);
  }
  if (!skip.has("legacy")) {
    console.log(`iptables-legacy-restore: initial load (timeout ${fmtMs(timeoutMs)}) …`);
    await iptBench("iptables-legacy-restore", createNetns(cleanup, `${prefix}-leg`), leg);
  }

  // --- nftables
  if (!skip.has("nft")) {
    console.log(`nft -f: initial load (timeout ${fmtMs(timeoutMs)}) …`);
    const ns = createNetns(cleanup, `${prefix}-nft`);
    const r = check(await run(["nft", "-f", "-"], { ns, input: nftA, allowFail: true, timeoutMs }), "nft -f");
    if (r.timedOut) {
      nft.initial = { note: `> ${fmtMs(timeoutMs)} (timed out)` };
    } else {
      nft.initial = { ms: r.ms };
      const inc: number[] = [];
      for (let i = 0; i < runs; i++)
        inc.push(
          check(
            await run(["nft", "-f", "-"], { ns, input: i % 2 === 0 ? nftAB : nftBA, allowFail: true }),
            "nft -f (update)",
          ).ms,
        );
      nft.change = { ms: median(inc) };
      nft.changePartial = { ms: median(inc) };
    }
  }

  // --- report
  console.log("");
  const ratio = (o: Record<string, Cell>, ok: string, k: Cell | undefined) => {
    const c = o[ok];
    if (c?.ms === undefined && c?.note?.startsWith(">") && k?.ms !== undefined)
      return `> ${fmtRatio(timeoutMs, k.ms)}`;
    return fmtRatio(c?.ms, k?.ms);
  };
  const rows: [string, Cell | undefined, string, string][] = [
    [`initial load, ${N}×${E}, empty node`, kpr.initial, "initial", "initial"],
    ["one endpoint changed: whole command / full sync", kpr.change, "change", "change"],
    ["one endpoint changed: kernel programming only", kpr.changeProgram, "changePartial", "changePartial"],
  ];
  printTable(
    ["operation", "kpr", "iptables-nft", "iptables-legacy", "nft", "ipt-nft/kpr", "legacy/kpr", "nft/kpr"],
    rows.map(([label, k, ik, nk]) => [
      label,
      cellText(k),
      cellText(ipt[ik]),
      cellText(leg[ik]),
      cellText(nft[nk]),
      ratio(ipt, ik, k),
      ratio(leg, ik, k),
      ratio(nft, nk, k),
    ]),
  );
  console.log("");
  console.log("kpr details:");
  printTable(
    ["step", "time"],
    [
      ["apply --dry-run (read manifests + translate, no kernel)", cellText(kpr.dry)],
      ["apply --dry-run with state present (also reads the maps back)", cellText(kpr.changeDry)],
      ["apply, nothing changed", cellText(kpr.noop)],
      ["apply --prune-all of no services (every service removed)", cellText(kpr.removeAll)],
      ["applyModel alone, one endpoint changed (in-process)", cellText(kpr.changeProgram)],
      [
        "  of which: loadDatapath (open, load, verify, attach-if-changed)",
        fmtMs(median(parts.map((b) => b.loadDatapathMs))),
      ],
      ["  of which: encode the model + per-frontend digests", fmtMs(median(parts.map((b) => b.encodeMs)))],
      [
        "before it (kpr apply): ids to keep, from kpr_svc_meta + kpr_lb4_be",
        fmtMs(median(parts.map((b) => b.previousIdsMs))),
      ],
    ],
  );
  console.log("");
  console.log(
    "Rows 2-3: iptables columns are kube-proxy's full sync (every chain rewritten) in row 2 and its " +
      "partial sync (MinimizeIPTablesRestore: top-level chains + the changed service's chains) in row 3; " +
      "nft is kube-proxy nftables' incremental transaction in both.",
  );
  const r1 = ipt.initial?.ms;
  const k1 = kpr.initial?.ms;
  if (k1 !== undefined) {
    const lower = r1 ?? (ipt.initial?.note?.startsWith(">") ? timeoutMs : undefined);
    const aim = lower === undefined ? "not measured" : lower / k1 >= 20 ? "met" : "NOT met";
    console.log(
      `aim: kpr initial load ≥ 20× faster than iptables-nft: ${aim}` +
        (lower !== undefined ? ` (${r1 === undefined ? "> " : ""}${fmtRatio(lower, k1)})` : ""),
    );
  }
  const p = kpr.changeProgram?.ms;
  if (p !== undefined)
    console.log(
      `aim: one-endpoint re-apply programming < 50 ms: ${p < 50 ? "met" : "NOT met"} (${fmtMs(p)})`,
    );
  console.log(`lbMapMax used: ${lbMapMax}`);
}

try {
  await main();
} catch (e) {
  console.error(`bench/apply: ${(e as Error).message}`);
  process.exitCode = 1;
}
