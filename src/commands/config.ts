import { defineCommand } from "citty";
import { stringify as yamlStringify } from "yaml";
import { commonArgs, configFromArgs, outputArg, printOutput } from "./_common.ts";

const view = defineCommand({
  meta: {
    name: "view",
    description: "Print the effective config: the file's values with every default filled in",
  },
  args: { ...commonArgs, ...outputArg },
  async run({ args }) {
    const cfg = await configFromArgs(args);
    const { configSource } = await import("../config/load.ts");
    printOutput(args.output, cfg, () => `# source: ${configSource(cfg)}\n${yamlStringify(cfg)}`);
    return 0;
  },
});

const schema = defineCommand({
  meta: { name: "schema", description: "Print the config file's JSON Schema (for editors)" },
  args: { ...outputArg },
  async run({ args }) {
    const { configJsonSchema } = await import("../config/load.ts");
    const s = configJsonSchema();
    printOutput(args.output, s, () => `${JSON.stringify(s, null, 2)}\n`);
    return 0;
  },
});

/** `kpr config view|schema`: the effective config and the config file's schema. */
export default defineCommand({
  meta: { name: "config", description: "Show the effective config or its JSON Schema" },
  subCommands: { view: () => view, schema: () => schema },
});
