import { defineCommand } from "citty";
import { commonArgs, configFromArgs, outputArg, printOutput } from "./_common.ts";

/**
 * `kpr status [--verbose] [-o table|json|yaml]`: kube-proxy replacement state of this node, from
 * the kernel and the settings the last apply recorded there. Exit 1 when nothing is programmed
 * under the bpf root.
 */
export default defineCommand({
  meta: {
    name: "status",
    description:
      "Show what kpr has programmed on this node (read from the kernel; exit 1 when nothing is programmed under bpf.root)",
  },
  args: {
    ...commonArgs,
    ...outputArg,
    verbose: { type: "boolean", description: "Show the KubeProxyReplacement details block", default: false },
  },
  async run({ args }) {
    const cfg = await configFromArgs(args);
    const { configSource } = await import("../config/load.ts");
    const { formatStatus, mapUsage, readNodeStatus, statusReport } = await import(
      "../datapath/nodestatus.ts"
    );
    const report = statusReport(cfg, readNodeStatus(cfg, configSource(cfg)));
    // counting every map's entries reads them all (the CT map can hold 262k): verbose and JSON only
    if (args.verbose || (args.output !== undefined && args.output !== "table")) report.maps = mapUsage(cfg);
    const { agentStatus, formatAgentStatus } = await import("../agent/agentstate.ts");
    const agent = agentStatus(cfg);
    printOutput(
      args.output,
      { ...report, agent },
      () => `${formatStatus(report, args.verbose)}${formatAgentStatus(agent)}`,
    );
    process.exitCode = report.programmed || agent.running ? 0 : 1;
  },
});
