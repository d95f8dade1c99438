import { defineCommand } from "citty";
import { log } from "../../log.ts";
import { checkOutput, commonArgs, configFromArgs, outputArg } from "../_common.ts";

/** `kpr service list [-o json]`: frontends and backends decoded from the kernel maps. */
export default defineCommand({
  meta: {
    name: "list",
    description: "List the programmed frontends and their backends (read from the kernel maps)",
  },
  args: { ...commonArgs, ...outputArg },
  async run({ args }) {
    checkOutput(args.output);
    const cfg = await configFromArgs(args);
    const { readCurrentEntries } = await import("../../datapath/reconcile.ts");
    const { formatServiceTable } = await import("../../lb/format.ts");
    const entries = await readCurrentEntries(cfg);
    if (entries === undefined)
      log.withTag("service").info(`nothing programmed on this node (no kpr state under ${cfg.bpf.root})`);
    if (args.output === "json") process.stdout.write(`${JSON.stringify(entries ?? [], null, 2)}\n`);
    else process.stdout.write(formatServiceTable(entries ?? []));
    return 0;
  },
});
