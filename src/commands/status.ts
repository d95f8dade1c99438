import { defineCommand } from "citty";
import { InputError } from "../errors.ts";
import { commonArgs, configFromArgs, outputArg } from "./_common.ts";

/** `kpr status [--verbose] [-o json]`: kube-proxy replacement state of this node, from the kernel. */
export default defineCommand({
  meta: { name: "status", description: "Show what kpr has programmed on this node (read from the kernel)" },
  args: {
    ...commonArgs,
    ...outputArg,
    verbose: { type: "boolean", description: "Show the KubeProxyReplacement details block", default: false },
  },
  async run({ args }) {
    if (args.output !== "table" && args.output !== "json")
      throw new InputError([
        { file: "<flags>", field: "-o", message: `got "${args.output}", expected table or json` },
      ]);
    const cfg = await configFromArgs(args);
    const { formatStatus, readNodeStatus, statusReport } = await import("../datapath/nodestatus.ts");
    const report = statusReport(cfg, readNodeStatus(cfg));
    if (args.output === "json") process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else process.stdout.write(formatStatus(report, args.verbose));
    return 0;
  },
});
