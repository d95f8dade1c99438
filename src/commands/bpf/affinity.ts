import { defineCommand } from "citty";
import { commonArgs, configFromArgs, outputArg, printOutput } from "../_common.ts";

const list = defineCommand({
  meta: {
    name: "list",
    description: "List the session-affinity entries (kpr_lb4_aff): client, service, chosen backend",
  },
  args: { ...commonArgs, ...outputArg },
  async run({ args }) {
    const cfg = await configFromArgs(args);
    const { readAffinity } = await import("../../datapath/inspect.ts");
    const { columns } = await import("../../lb/format.ts");
    const rows = readAffinity(cfg);
    printOutput(args.output, rows, () => {
      const t = [["CLIENT", "REVNAT_ID", "FRONTEND", "BACKEND", "IDLE"]];
      for (const r of rows)
        t.push([r.client, String(r.revNatId), r.frontend, r.backend, `${r.idleSeconds}s`]);
      return `${columns(t)}\n`;
    });
    return 0;
  },
});

/** `kpr bpf affinity list`: ClientIP session affinity as the datapath holds it. */
export default defineCommand({
  meta: { name: "affinity", description: "Inspect session affinity" },
  subCommands: { list: () => list },
});
