import { defineCommand } from "citty";
import type { Config } from "../config/config.ts";
import { DEFAULT_CONFIG_PATH } from "../config/config.ts";
import { InputError, KprError } from "../errors.ts";
import type { LbModel, PreviousIds, ServiceEntryJson } from "../lb/model.ts";
import { log } from "../log.ts";
import { commonArgs, configFromArgs, outputArg } from "./_common.ts";

const alog = log.withTag("apply");

/** What apply needs from the datapath reconciler (src/datapath/reconcile.ts). */
export interface ReconcileModule {
  /** Programs the model into the kernel (diff against the pinned maps, ordered, transactional). */
  applyModel(model: LbModel, cfg: Config, opts: { log: typeof log }): Promise<unknown>;
  /** Entries currently programmed on this node; undefined when kpr has no state here. */
  readCurrentEntries(cfg: Config): Promise<ServiceEntryJson[] | undefined> | ServiceEntryJson[] | undefined;
  /** Frontend and backend ids programmed on this node, so the new plan keeps them. */
  readPreviousIds?(cfg: Config): PreviousIds;
}

/** Loads the reconciler; undefined when this build has none (the module does not exist yet). */
async function loadReconcile(): Promise<ReconcileModule | undefined> {
  try {
    // The `as string` keeps tsc from resolving a module that may not exist yet; the bundler still
    // sees a literal specifier and embeds the module once it does.
    return (await import("../datapath/reconcile.ts" as string)) as ReconcileModule;
  } catch (e) {
    const msg = (e as Error).message ?? "";
    if (/cannot find module|not found/i.test(msg) && msg.includes("reconcile")) return undefined;
    throw e;
  }
}

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

/** Ids of the current entries, so a plan keeps them (backend ids only when entries carry them). */
function previousFrom(entries: ServiceEntryJson[]): PreviousIds {
  const prev: PreviousIds = { frontends: new Map(), backends: new Map() };
  const key = (a: { address: string; port: number; protocol: string }) =>
    `${a.address.includes(":") ? `[${a.address}]` : a.address}:${a.port}/${a.protocol}`;
  for (const e of entries) {
    prev.frontends.set(key(e.frontend), e.id);
    for (const b of e.backends) {
      const id = (b as { id?: unknown }).id;
      if (typeof id === "number") prev.backends.set(key(b), id);
    }
  }
  return prev;
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
      alias: "f",
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
    if (args.output !== "table" && args.output !== "json") {
      flagProblems.push({
        file: "<flags>",
        field: "-o",
        message: `got "${args.output}", expected table or json`,
      });
    }
    if (flagProblems.length > 0) throw new InputError(flagProblems);

    const cfg = await configFromArgs(args);
    const { readManifests } = await import("../k8s/manifest.ts");
    const { translate } = await import("../lb/translate.ts");
    const { formatPlanDiff, formatServiceTable, toServiceEntryJson } = await import("../lb/format.ts");
    const state = await readManifests(files);
    let nodeAddresses: string[] | undefined;
    if (cfg.devices.length > 0) {
      const { readDeviceAddresses } = await import("../config/devices.ts");
      nodeAddresses = readDeviceAddresses(cfg.devices, args.config ?? DEFAULT_CONFIG_PATH);
    }

    if (nodeAddresses === undefined && !state.nodes.some((n) => n.metadata.name === cfg.nodeName)) {
      alog.warn(
        `no devices configured and no Node object named "${cfg.nodeName}" in the manifests: NodePorts listen on 0.0.0.0 and 127.0.0.1 only (set devices or nodeName)`,
      );
    }

    const recon = await loadReconcile();
    let current: ServiceEntryJson[] | undefined;
    let previous: PreviousIds | undefined;
    if (recon && args["dry-run"]) {
      // A plan is worth printing even when the node's state cannot be read.
      try {
        current = await recon.readCurrentEntries(cfg);
        previous = recon.readPreviousIds?.(cfg) ?? (current ? previousFrom(current) : undefined);
      } catch (e) {
        alog.warn(`read current state: ${(e as Error).message} (showing the plan without a diff)`);
      }
    } else if (recon) {
      previous = recon.readPreviousIds?.(cfg);
    }
    const model = translate(state, cfg, {
      ...(nodeAddresses !== undefined ? { nodeAddresses } : {}),
      ...(previous !== undefined ? { previous } : {}),
    });

    if (args["dry-run"]) {
      const entries = model.frontends.map(toServiceEntryJson);
      if (args.output === "json") {
        process.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
      } else {
        process.stdout.write(formatServiceTable(entries));
        if (current !== undefined) process.stdout.write(`\n${formatPlanDiff(current, entries)}`);
      }
      return 0;
    }
    if (!recon) {
      throw new KprError(
        "apply: this build has no datapath (src/datapath/reconcile.ts is missing) (use --dry-run to print the plan)",
      );
    }
    const result = (await recon.applyModel(model, cfg, { log: alog })) as { summary?: unknown } | undefined;
    alog.info(
      typeof result?.summary === "string" ? result.summary : `applied ${model.frontends.length} frontends`,
    );
    return 0;
  },
});
