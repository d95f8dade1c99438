import { defineCommand } from "citty";
import { commonArgs, configFromArgs, outputArg, printOutput } from "../_common.ts";

/** `kpr bpf metrics`: verdict/drop reasons and how full each map is (like `cilium-dbg metrics list`). */
export default defineCommand({
  meta: {
    name: "metrics",
    description: "Show the datapath's verdict and drop reasons and the fill level of every map",
  },
  args: {
    ...commonArgs,
    ...outputArg,
    all: { type: "boolean", description: "Also list reasons whose count is zero", default: false },
  },
  async run({ args }) {
    const cfg = await configFromArgs(args);
    const { readCounters, readMapFill } = await import("../../datapath/counters.ts");
    const { columns } = await import("../../lb/format.ts");
    const counters = readCounters(cfg);
    const reasons = (counters?.reasons ?? []).filter((r) => args.all || r.count > 0n);
    const maps = readMapFill(cfg).map((m) => ({
      ...m,
      percent: m.maxEntries > 0 ? Math.round((m.entries / m.maxEntries) * 1000) / 10 : 0,
    }));
    const data = { bpfRoot: cfg.bpf.root, programmed: counters !== undefined, reasons, maps };
    printOutput(args.output, data, () => {
      if (!counters) return `nothing programmed (no kpr state under ${cfg.bpf.root})\n`;
      const r = [["REASON", "COUNT"], ...reasons.map((x) => [x.reason, String(x.count)])];
      const m = [
        ["MAP", "ENTRIES", "MAX", "FILL"],
        ...maps.map((x) => [x.name, String(x.entries), String(x.maxEntries), `${x.percent}%`]),
      ];
      return `${columns(r)}\n\n${columns(m)}\n`;
    });
    return 0;
  },
});
