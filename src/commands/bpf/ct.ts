import { defineCommand } from "citty";
import { commonArgs, configFromArgs, outputArg, printOutput } from "../_common.ts";

const list = defineCommand({
  meta: {
    name: "list",
    description: "List the connection-tracking entries (kpr_ct4), most recently active first",
  },
  args: { ...commonArgs, ...outputArg },
  async run({ args }) {
    const cfg = await configFromArgs(args);
    const { readCt } = await import("../../datapath/inspect.ts");
    const { columns } = await import("../../lb/format.ts");
    const rows = readCt(cfg);
    printOutput(args.output, rows, () => {
      const t = [
        [
          "DIR",
          "PROTO",
          "SOURCE",
          "DESTINATION",
          "FRONTEND",
          "BACKEND",
          "NAT",
          "FLAGS",
          "PACKETS",
          "BYTES",
          "IDLE",
        ],
      ];
      for (const r of rows)
        t.push([
          r.direction === "ingress" ? "IN" : "REPLY",
          r.protocol,
          r.source,
          r.destination,
          r.frontend,
          r.backend,
          r.nat ?? "",
          r.flags.join(",") || "-",
          String(r.packets),
          String(r.bytes),
          `${r.idleSeconds.toFixed(0)}s`,
        ]);
      return `${columns(t)}\n`;
    });
    return 0;
  },
});

/** `kpr bpf ct list`: connection tracking as the datapath holds it (like `cilium bpf ct list global`). */
export default defineCommand({
  meta: { name: "ct", description: "Inspect connection tracking" },
  subCommands: { list: () => list },
});
