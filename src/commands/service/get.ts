import { defineCommand } from "citty";
import { EXIT_RUNTIME, KprError } from "../../errors.ts";
import { commonArgs, configFromArgs, outputArg, printOutput, UsageError } from "../_common.ts";

/** `kpr service get ID`: one programmed frontend with its backends and counters. */
export default defineCommand({
  meta: { name: "get", description: "Show one programmed frontend by ID, with its backends and counters" },
  args: {
    id: {
      type: "positional",
      description: "Frontend ID (the ID column of kpr service list)",
      required: true,
    },
    ...commonArgs,
    ...outputArg,
  },
  async run({ args }) {
    const id = Number(args.id);
    if (!Number.isInteger(id) || id < 1 || id > 65535)
      throw new UsageError(`kpr service get: ID: got "${args.id}", expected an integer 1..65535`, [
        "service",
        "get",
      ]);
    const cfg = await configFromArgs(args);
    const { readCurrentEntries } = await import("../../datapath/reconcile.ts");
    const { readCounters } = await import("../../datapath/counters.ts");
    const { backendIdsByAddress, withStats } = await import("../../datapath/inspect.ts");
    const { formatServiceStatsTable } = await import("../../lb/format.ts");
    const entries = (await readCurrentEntries(cfg)) ?? [];
    const hit = entries.filter((e) => e.id === id);
    if (hit.length === 0)
      throw new KprError(
        `service get: no frontend with ID ${id} under ${cfg.bpf.root} (see kpr service list)`,
        EXIT_RUNTIME,
      );
    const counters = readCounters(cfg);
    const rows = withStats(
      hit,
      counters?.frontends ?? new Map(),
      counters?.backends ?? new Map(),
      counters ? backendIdsByAddress(cfg) : new Map(),
    );
    printOutput(args.output, rows[0], () => `${formatServiceStatsTable(rows)}Service: ${rows[0]!.service}\n`);
    return 0;
  },
});
