import { defineCommand } from "citty";
import { commonArgs, configFromArgs, outputArg } from "./_common.ts";

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
    if (args.output === "json") console.log(JSON.stringify({ bpfRoot: cfg.bpf.root, ...res }, null, 2));
    else if (res.removed.length === 0)
      console.log(`nothing to clean up (no kpr state under ${cfg.bpf.root})`);
    else {
      for (const r of res.removed) console.log(`removed ${r}`);
      console.log(`cleaned up ${res.removed.length} item(s)`);
    }
    return 0;
  },
});
