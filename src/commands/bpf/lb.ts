import { defineCommand } from "citty";
import { commonArgs, configFromArgs, outputArg, printOutput } from "../_common.ts";

const list = defineCommand({
  meta: { name: "list", description: "List the raw service map entries (master and backend slots)" },
  args: { ...commonArgs, ...outputArg },
  async run({ args }) {
    const cfg = await configFromArgs(args);
    const { readPinnedState } = await import("../../datapath/reconcile.ts");
    const { formatLbList, lbListRows } = await import("../../datapath/nodestatus.ts");
    const st = readPinnedState(cfg);
    const rows = st ? lbListRows(st) : [];
    printOutput(args.output, rows, () => formatLbList(rows));
    return 0;
  },
});

/** `kpr bpf lb …`: the load-balancing maps as the datapath sees them. */
export default defineCommand({
  meta: { name: "lb", description: "Inspect the load-balancing maps" },
  subCommands: { list: () => list },
});
