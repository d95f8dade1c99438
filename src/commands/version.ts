import { defineCommand } from "citty";
import { VERSION } from "../version.ts";

/** `kpr version`: the version, the Bun runtime and the architecture. */
export default defineCommand({
  meta: { name: "version", description: "Print kpr's version" },
  args: {
    output: { type: "string", alias: "o", description: "Output format: text or json", default: "text" },
  },
  run({ args }) {
    const info = {
      version: VERSION,
      runtime: `bun ${Bun.version}`,
      arch: process.arch,
      os: process.platform,
    };
    if (args.output === "json") console.log(JSON.stringify(info, null, 2));
    else console.log(`kpr ${info.version} (${info.runtime}, ${info.os}/${info.arch})`);
  },
});
