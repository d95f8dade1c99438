import { defineCommand } from "citty";
import { VERSION } from "../version.ts";
import { outputArg, printOutput } from "./_common.ts";

/** `kpr version`: the version, the Bun runtime and the architecture. */
export default defineCommand({
  meta: { name: "version", description: "Print kpr's version" },
  args: { ...outputArg },
  run({ args }) {
    const info = {
      version: VERSION,
      runtime: `bun ${Bun.version}`,
      arch: process.arch,
      os: process.platform,
    };
    printOutput(args.output, info, () => `kpr ${info.version} (${info.runtime}, ${info.os}/${info.arch})\n`);
  },
});
