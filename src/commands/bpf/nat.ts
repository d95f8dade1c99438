import { defineCommand } from "citty";
import { commonArgs, configFromArgs, outputArg, printOutput } from "../_common.ts";

const list = defineCommand({
  meta: {
    name: "list",
    description: "List the SNAT entries (kpr_snat4): reply tuple and what it is translated back to",
  },
  args: { ...commonArgs, ...outputArg },
  async run({ args }) {
    const cfg = await configFromArgs(args);
    const { readNat } = await import("../../datapath/inspect.ts");
    const { columns } = await import("../../lb/format.ts");
    const rows = readNat(cfg);
    printOutput(args.output, rows, () => {
      const t = [["PROTO", "BACKEND", "NAT ADDRESS", "CLIENT", "FRONTEND", "FLAGS", "IDLE"]];
      for (const r of rows)
        t.push([
          r.protocol,
          r.backend,
          r.natAddress,
          r.client,
          r.frontend,
          r.flags.join(",") || "-",
          `${r.idleSeconds.toFixed(0)}s`,
        ]);
      return `${columns(t)}\n`;
    });
    return 0;
  },
});

/** `kpr bpf nat list`: source-NAT state (like `cilium bpf nat list`). */
export default defineCommand({
  meta: { name: "nat", description: "Inspect source NAT" },
  subCommands: { list: () => list },
});
