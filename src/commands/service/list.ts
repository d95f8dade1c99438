import { defineCommand } from "citty";
import { log } from "../../log.ts";
import { commonArgs, configFromArgs, outputArg, printOutput } from "../_common.ts";

/** `kpr service list [--stats] [--service NS/NAME] [-o table|json|yaml]`: frontends and backends from the kernel maps. */
export default defineCommand({
  meta: {
    name: "list",
    description: "List the programmed frontends and their backends (read from the kernel maps)",
  },
  args: {
    ...commonArgs,
    ...outputArg,
    stats: {
      type: "boolean",
      description: "Add packets and bytes per frontend and backend (the datapath's counters)",
      default: false,
    },
    service: {
      type: "string",
      description: "Only the frontends of this Service (NAMESPACE/NAME)",
      valueHint: "NS/NAME",
    },
  },
  async run({ args }) {
    const cfg = await configFromArgs(args);
    const { readCurrentEntries } = await import("../../datapath/reconcile.ts");
    const { formatServiceTable, formatServiceStatsTable } = await import("../../lb/format.ts");
    let entries = await readCurrentEntries(cfg);
    if (entries === undefined)
      log.withTag("service").info(`nothing programmed on this node (no kpr state under ${cfg.bpf.root})`);
    entries ??= [];
    if (args.service !== undefined) {
      const want = args.service;
      entries = entries.filter((e) => e.service === want || e.service.startsWith(`${want}:`));
    }
    if (!args.stats) {
      printOutput(args.output, entries, () => formatServiceTable(entries));
      return 0;
    }
    const { readCounters } = await import("../../datapath/counters.ts");
    const { backendIdsByAddress, withStats } = await import("../../datapath/inspect.ts");
    const counters = readCounters(cfg);
    const rows = withStats(
      entries,
      counters?.frontends ?? new Map(),
      counters?.backends ?? new Map(),
      counters ? backendIdsByAddress(cfg) : new Map(),
    );
    printOutput(args.output, rows, () => formatServiceStatsTable(rows));
    return 0;
  },
});
