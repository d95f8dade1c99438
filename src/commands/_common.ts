import type { Config } from "../config/config.ts";
import { DEFAULT_CONFIG_PATH } from "../config/config.ts";
import { InputError, type InputProblem } from "../errors.ts";

/** Arguments every command takes. Spread into a command's `args`. */
export const commonArgs = {
  config: {
    type: "string",
    description: `Config file (YAML, Cilium Helm value names); built-in defaults when ${DEFAULT_CONFIG_PATH} is absent`,
    valueHint: "FILE",
  },
} as const;

/** Output format argument shared by read commands. */
export const outputArg = {
  output: { type: "string", alias: "o", description: "Output format: table or json", default: "table" },
} as const;

/** The problem with an `-o` value other than table or json; undefined when it is one of them. */
export function outputProblem(output: string): InputProblem | undefined {
  if (output === "table" || output === "json") return undefined;
  return { file: "<flags>", field: "-o", message: `got "${output}", expected table or json` };
}

/** Throws an InputError (exit 2) unless `-o` is table or json. */
export function checkOutput(output: string): void {
  const p = outputProblem(output);
  if (p) throw new InputError([p]);
}

/** Loads the config named by `--config` (or the default path); exits 2 on bad input. */
export async function configFromArgs(args: { config?: string }): Promise<Config> {
  const { loadConfig } = await import("../config/load.ts");
  return loadConfig(args.config);
}
