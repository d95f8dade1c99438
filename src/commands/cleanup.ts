import { defineCommand } from "citty";
import { commonArgs, configFromArgs, outputArg, printOutput } from "./_common.ts";

/** `kpr cleanup`: detach and unpin everything kpr owns on this node. */
export default defineCommand({
  meta: {
    name: "cleanup",
    description: "Detach kpr's programs and remove its pinned maps and links (under bpf.root)",
  },
  args: { ...commonArgs, ...outputArg },
  async run({ args }) {
    const cfg = await configFromArgs(args);
    const { cleanup } = await import("../datapath/cleanup.ts");
    const res = cleanup(cfg);
    printOutput(args.output, { bpfRoot: cfg.bpf.root, ...res }, () =>
      res.removed.length === 0
        ? `nothing to clean up (no kpr state under ${cfg.bpf.root})\n`
        : `${res.removed.map((r) => `removed ${r}\n`).join("")}cleaned up ${res.removed.length} item(s)\n`,
    );
    return 0;
  },
});
