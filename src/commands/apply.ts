import { defineCommand } from "citty";
import { DEFAULT_CONFIG_PATH } from "../config/config.ts";
import { InputError } from "../errors.ts";
import { log } from "../log.ts";
import { commonArgs, configFromArgs, outputArg, outputProblem, printOutput } from "./_common.ts";

const alog = log.withTag("apply");

/** Values of every -f/--file occurrence (citty keeps only the last one). */
export function fileArgs(rawArgs: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i]!;
    if (a === "--") break;
    const m = /^(?:--file|--filename|-f)=(.*)$/.exec(a);
    if (m) out.push(m[1]!);
    else if (a === "-f" || a === "--file" || a === "--filename") {
      const v = rawArgs[i + 1];
      if (v !== undefined) out.push(v);
      i++;
    } else if (/^-f[^=]/.test(a)) out.push(a.slice(2));
  }
  return out;
}

/** Re-exported for callers of the old location; the pipeline owns it. */
export { unsupportedSettings } from "../agent/pipeline.ts";

/** `--prune-all` and `--max-delete`: the wipe guard's flags (apply and run). */
export const guardArgs = {
  "prune-all": {
    type: "boolean",
    description:
      "Allow removing every programmed service (refused otherwise: an empty input is usually a mistake)",
  },
  "max-delete": {
    type: "string",
    description: "Refuse a change that removes more than N services (or P% of them), e.g. 10 or 25%",
    valueHint: "N|P%",
  },
} as const;

/** The guard options from `--prune-all` / `--max-delete`; exits 2 on a bad value. */
export async function guardFromArgs(args: { "prune-all"?: boolean; "max-delete"?: string }) {
  const { parseMaxDelete } = await import("../agent/guard.ts");
  return {
    pruneAll: args["prune-all"] === true,
    ...(typeof args["max-delete"] === "string" ? { maxDelete: parseMaxDelete(args["max-delete"]) } : {}),
  };
}

/** `kpr apply -f PATH... [--dry-run] [-o table|json]`: manifests in, services programmed (or the plan printed). */
export default defineCommand({
  meta: {
    name: "apply",
    description: "Translate Kubernetes manifests (Services, EndpointSlices, Pods, Node) and program them",
  },
  args: {
    ...commonArgs,
    ...outputArg,
    file: {
      type: "string",
      alias: ["f", "filename"],
      description: "Manifest file, directory (recursive *.yaml/*.yml/*.json) or - for stdin; repeatable",
      valueHint: "PATH",
    },
    "dry-run": {
      type: "boolean",
      description: "Print the plan (and its diff against the node's state); change nothing",
    },
    ...guardArgs,
  },
  async run({ args, rawArgs }) {
    const files = fileArgs(rawArgs);
    if (files.length === 0 && typeof args.file === "string") files.push(args.file);
    const flagProblems = [];
    if (files.length === 0) {
      flagProblems.push({
        file: "<flags>",
        field: "-f",
        message: "required: a manifest file, directory or - (stdin)",
      });
    }
    const badOutput = outputProblem(args.output);
    if (badOutput) flagProblems.push(badOutput);
    if (flagProblems.length > 0) throw new InputError(flagProblems);

    const guard = await guardFromArgs(args);
    const cfg = await configFromArgs(args);
    const { readManifests } = await import("../k8s/manifest.ts");
    const { applyOnce } = await import("../agent/pipeline.ts");
    const state = await readManifests(files);
    const dryRun = args["dry-run"] === true;
    const pass = await applyOnce(state, {
      cfg,
      configPath: args.config ?? DEFAULT_CONFIG_PATH,
      log: alog,
      guard,
      dryRun,
    });
    const { skippedServices, formatSkipped, applyResultJson } = await import("../lb/plancheck.ts");
    const skipped = skippedServices(state, cfg);
    if (dryRun) {
      const { formatPlanDiff, formatServiceTable, toServiceEntryJson } = await import("../lb/format.ts");
      const entries = pass.model.frontends.map(toServiceEntryJson);
      skipped.push(...(pass.skipped ?? []));
      for (const s of skipped) alog.warn(`skipped ${s.what}: ${s.reason}`);
      if (args.output !== "table") printOutput(args.output, entries, () => "");
      else {
        process.stdout.write(formatServiceTable(entries));
        if (pass.programmed) {
          const { entriesFromState } = await import("../datapath/reconcile.ts");
          process.stdout.write(`\n${formatPlanDiff(await entriesFromState(pass.programmed), entries)}`);
        }
        process.stdout.write(formatSkipped(skipped));
      }
      return 0;
    }
    for (const s of skipped) alog.warn(`skipped ${s.what}: ${s.reason}`);
    if (pass.applied) {
      const result = pass.applied;
      printOutput(args.output, applyResultJson(result, skipped), () => `${result.summary}\n`);
    }
    return 0;
  },
});
