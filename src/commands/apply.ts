import { defineCommand } from "citty";
import type { Config } from "../config/config.ts";
import { DEFAULT_CONFIG_PATH } from "../config/config.ts";
import type { MapState } from "../datapath/mapstate.ts";
import { InputError } from "../errors.ts";
import type { PreviousIds } from "../lb/model.ts";
import { applyResultJson } from "../lb/plancheck.ts";
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

/**
 * Settings this version accepts (they are valid Cilium values) but does not carry out yet, each
 * with what happens instead, so an operator never learns it from `kpr status` only.
 */
export function unsupportedSettings(cfg: Config): string[] {
  const out: string[] = [];
  if (cfg.loadBalancer.mode !== "snat")
    out.push(
      `loadBalancer.mode=${cfg.loadBalancer.mode} is not implemented yet: remote backends are reached with SNAT`,
    );
  return out;
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

    const cfg = await configFromArgs(args);
    if (cfg.devices.some((d) => d.endsWith("+"))) {
      const { resolveDevices } = await import("../config/devices.ts");
      const rd = resolveDevices(cfg);
      for (const w of rd.warnings) alog.warn(w);
      cfg.devices = rd.devices;
    }
    for (const w of unsupportedSettings(cfg)) alog.warn(w);
    const { readManifests } = await import("../k8s/manifest.ts");
    const { translate } = await import("../lb/translate.ts");
    const { formatPlanDiff, formatServiceTable, toServiceEntryJson } = await import("../lb/format.ts");
    const state = await readManifests(files);
    let nodeAddresses: string[] | undefined;
    if (cfg.devices.length > 0) {
      const { nodePortAddresses, readDeviceAddresses } = await import("../config/devices.ts");
      nodeAddresses = nodePortAddresses(
        cfg,
        readDeviceAddresses(cfg.devices, args.config ?? DEFAULT_CONFIG_PATH),
      );
    }

    if (nodeAddresses === undefined && !state.nodes.some((n) => n.metadata.name === cfg.nodeName)) {
      alog.warn(
        `no devices configured and no Node object named "${cfg.nodeName}" in the manifests: NodePorts listen on 0.0.0.0 and 127.0.0.1 only (set devices or nodeName)`,
      );
    }

    const recon = await import("../datapath/reconcile.ts");
    const { previousIdsFromState } = await import("../datapath/mapstate.ts");
    // A real apply holds the state lock from the read it plans from to its last write, and reads
    // only the ids it must keep (applyModel compares per-frontend digests, not whole maps). A dry
    // run reads the whole programmed state, for the diff it prints.
    using _lock = args["dry-run"] ? undefined : await recon.lockState(cfg, alog);
    let programmed: MapState | undefined;
    let previous: PreviousIds | undefined;
    if (args["dry-run"]) {
      try {
        programmed = recon.readPinnedState(cfg);
        if (programmed) previous = previousIdsFromState(programmed);
      } catch (e) {
        // A plan is worth printing even when the node's state cannot be read.
        alog.warn(`read current state: ${(e as Error).message} (showing the plan without a diff)`);
      }
    } else {
      previous = recon.readPreviousIds(cfg);
    }
    const model = translate(state, cfg, {
      ...(nodeAddresses !== undefined ? { nodeAddresses } : {}),
      ...(previous !== undefined ? { previous } : {}),
    });

    const { unservedFrontendsWarning } = await import("../config/devices.ts");
    const unserved = unservedFrontendsWarning(
      cfg.devices,
      model.frontends.map((f) => f.type),
    );
    if (unserved) alog.warn(unserved);
    const { skippedServices, formatSkipped } = await import("../lb/plancheck.ts");
    const skipped = skippedServices(state, cfg);
    for (const w of model.warnings ?? []) alog.warn(w);
    if (args["dry-run"]) {
      const entries = model.frontends.map(toServiceEntryJson);
      skipped.push(...(await import("../datapath/plancheck.ts")).checkPlan(model, cfg, programmed));
      for (const s of skipped) alog.warn(`skipped ${s.what}: ${s.reason}`);
      if (args.output !== "table") printOutput(args.output, entries, () => "");
      else {
        process.stdout.write(formatServiceTable(entries));
        if (programmed)
          process.stdout.write(`\n${formatPlanDiff(await recon.entriesFromState(programmed), entries)}`);
        process.stdout.write(formatSkipped(skipped));
      }
      return 0;
    }
    for (const s of skipped) alog.warn(`skipped ${s.what}: ${s.reason}`);
    const result = await recon.applyModel(model, cfg, { log: alog });
    printOutput(args.output, applyResultJson(result, skipped), () => `${result.summary}\n`);
    return 0;
  },
});
