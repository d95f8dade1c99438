import { defineCommand } from "citty";
import { checkOutput, commonArgs, configFromArgs, outputArg } from "./_common.ts";

/** `kpr status [--verbose] [-o json]`: kube-proxy replacement state of this node, from the kernel. */
export default defineCommand({
  meta: { name: "status", description: "Show what kpr has programmed on this node (read from the kernel)" },
  args: {
    ...commonArgs,
    ...outputArg,
    verbose: { type: "boolean", description: "Show the KubeProxyReplacement details block", default: false },
  },
  async run({ args }) {
    checkOutput(args.output);
    const cfg = await configFromArgs(args);
    const { formatStatus, readNodeStatus, statusReport } = await import("../datapath/nodestatus.ts");
    const report = statusReport(cfg, readNodeStatus(cfg));
    const { agentStatus, formatAgentStatus } = await import("../agent/agentstate.ts");
    const agent = agentStatus(cfg);
    if (args.output === "json") process.stdout.write(`${JSON.stringify({ ...report, agent }, null, 2)}\n`);
    else process.stdout.write(`${formatStatus(report, args.verbose)}${formatAgentStatus(agent)}`);
    return 0;
  },
});
