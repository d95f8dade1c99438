/**
 * The one pipeline: cluster-state snapshot → translate (src/lb/, every Kubernetes rule) → wipe
 * guard → reconcile into the pinned maps. `kpr apply` runs it once (applyOnce); `kpr run` runs
 * its first pass the same way and then keeps the programmed model in memory (daemon.ts).
 */

import type { ConsolaInstance } from "consola";
import type { Config } from "../config/config.ts";
import type { NetSnapshot } from "../config/devices.ts";
import type { MapState } from "../datapath/mapstate.ts";
import type { ApplyResult } from "../datapath/reconcile.ts";
import type { ClusterState } from "../k8s/types.ts";
import type { LbModel, PreviousIds } from "../lb/model.ts";
import { Progress } from "../progress.ts";
import { checkRemovals, type GuardOptions } from "./guard.ts";
import { markNodeSources } from "./nodesource.ts";

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

/** The line kpr logs when `kubeProxyReplacement: false` keeps it from programming anything. */
export function disabledMessage(configPath: string): string {
  return `kubeProxyReplacement is false in ${configPath}: kpr programs nothing on this node (the datapath is left as it is; set kubeProxyReplacement: true to program services)`;
}

/** The devices and NodePort addresses of one pass. */
export interface PassDevices {
  /** what the programs attach to: the configured devices (wildcards expanded) or the detected ones */
  devices: string[];
  /** `devices: []` in the config: these were detected */
  detected: boolean;
  /** NodePort addresses; undefined: the Node object's (translate reads them) */
  nodeAddresses: string[] | undefined;
  /** configured devices that are not there now (left out; only with `absent: "skip"`) */
  absent: string[];
}

/** The InternalIP/ExternalIP addresses of this node's Node object in `state` (none: undefined). */
async function nodeObjectAddresses(
  cfg: Config,
  state: Pick<ClusterState, "nodes">,
): Promise<string[] | undefined> {
  const node = state.nodes.find((n) => n.metadata.name === cfg.nodeName);
  if (!node) return undefined;
  const { nodeAddressEntries } = await import("../lb/translate.ts");
  return nodeAddressEntries(node).map((e) => e.address);
}

/**
 * The devices one pass attaches to and the addresses its NodePorts are exposed on, the same for
 * `kpr apply` and every full sync of `kpr run`:
 * - configured devices, Cilium's wildcards (`eth+`) expanded to the interfaces present now; NodePorts
 *   on their global addresses (filtered by nodePort.addresses). A configured device that is not
 *   there is bad input for `apply` (`absent: "error"`, InputError naming the config file); the
 *   agent (`absent: "skip"`) leaves it out with a warning and attaches once it appears.
 * - `devices: []`: detected as Cilium does (src/config/devices.ts resolveDevices: default-route
 *   interfaces and those carrying the Node's addresses); NodePorts on the Node object's addresses,
 *   or on the detected devices' when there is no Node object.
 * Warnings go to `o.warn` (default: log.warn). `o.net` replaces what detection reads from the
 * network namespace (tests that run in the host's namespace detect nothing with an empty one).
 */
export async function passDevices(
  cfg: Config,
  configPath: string,
  state: Pick<ClusterState, "nodes">,
  log: ConsolaInstance,
  o: { absent?: "error" | "skip"; warn?: (message: string) => void; net?: NetSnapshot } = {},
): Promise<PassDevices> {
  const { nodePortAddresses, readDeviceAddresses, resolveDevices } = await import("../config/devices.ts");
  const warn = o.warn ?? ((m: string) => log.warn(m));
  const fromNode = await nodeObjectAddresses(cfg, state);
  const rd = resolveDevices(cfg, {
    ...(fromNode ? { nodeAddresses: fromNode } : {}),
    ...(o.net ? { net: o.net } : {}),
  });
  for (const w of rd.warnings) warn(w);
  let devices = rd.devices;
  const absent: string[] = [];
  // one getifaddrs for the absent check and the addresses
  const { interfaceAddresses } = await import("../datapath/ffi.ts");
  const all = interfaceAddresses();
  if (!rd.detected && o.absent === "skip") {
    const present = new Set(all.map((a) => a.name));
    for (const d of devices) if (!present.has(d)) absent.push(d);
    if (absent.length > 0) {
      warn(
        `devices: ${absent.join(", ")} not there now: left out until ${absent.length === 1 ? "it appears" : "they appear"} (then attached)`,
      );
      devices = devices.filter((d) => present.has(d));
    }
  }
  let nodeAddresses: string[] | undefined;
  if (!rd.detected || (fromNode === undefined && devices.length > 0))
    nodeAddresses = nodePortAddresses(cfg, readDeviceAddresses(devices, configPath, all));
  else if (fromNode === undefined)
    warn(
      `no devices detected and no Node object named "${cfg.nodeName}" in the input: NodePorts listen on 0.0.0.0 and 127.0.0.1 only (set devices or nodeName)`,
    );
  return { devices, detected: rd.detected, nodeAddresses, absent };
}

/** Warnings about a translated model: the translation's own, and frontends no device serves. */
export async function warnModel(model: LbModel, cfg: Config, log: ConsolaInstance): Promise<void> {
  for (const w of model.warnings ?? []) log.warn(w);
  const { unservedFrontendsWarning } = await import("../config/devices.ts");
  const unserved = unservedFrontendsWarning(
    cfg.devices,
    model.frontends.map((f) => f.type),
  );
  if (unserved) log.warn(unserved);
}

/** The service names a model programs, as kpr_svc_meta stores them (for the guard). */
export async function modelServices(model: LbModel): Promise<Set<string>> {
  const { storedServiceName } = await import("../datapath/mapstate.ts");
  const out = new Set<string>();
  let last = "";
  for (const f of model.frontends)
    if (f.service !== last) {
      last = f.service;
      out.add(storedServiceName(f.service));
    }
  return out;
}

/** What one pass needs. */
export interface PassOptions {
  cfg: Config;
  /** the config file named in messages (and next to which relative paths resolve) */
  configPath: string;
  log: ConsolaInstance;
  guard: GuardOptions;
  /** plan only: read the node's state for a diff, write nothing */
  dryRun?: boolean;
  /** "apply" or "sync": starts guard messages */
  op?: string;
  /** progress lines of a long pass (default: from the process start, as for `kpr apply`) */
  progress?: Progress;
  /** what device detection reads (default: the network namespace; see passDevices) */
  net?: NetSnapshot;
}

/** What one pass did. */
export interface PassResult {
  model: LbModel;
  /** the reconcile (absent for a dry run or when kubeProxyReplacement is false) */
  applied?: ApplyResult;
  /** dry run: the programmed state read back (absent when it could not be read or nothing is pinned) */
  programmed?: MapState;
  /** dry run: frontends apply would skip (address family), from apply's own checks */
  skipped?: { what: string; reason: string }[];
  /** kubeProxyReplacement is false: nothing was programmed */
  disabled: boolean;
}

/**
 * One pass of the pipeline over `state`: translate with the node's programmed ids, check the wipe
 * guard, and program (or, for a dry run, only plan). A real pass holds the state lock from the
 * read it plans from to its last write. Throws InputError / WipeRefused (exit 2) before any write.
 */
export async function applyOnce(state: ClusterState, o: PassOptions): Promise<PassResult> {
  const { log } = o;
  for (const w of unsupportedSettings(o.cfg)) log.warn(w);
  const pd = await passDevices(o.cfg, o.configPath, state, log, {
    absent: "error",
    ...(o.net ? { net: o.net } : {}),
  });
  if (pd.detected && pd.devices.length > 0) log.info(`devices (detected): ${pd.devices.join(", ")}`);
  // the pass works on the devices it resolved (the settings record keeps them)
  const { withDevices } = await import("../config/load.ts");
  const cfg = withDevices(o.cfg, pd.devices);
  const { nodeAddresses } = pd;
  const { translate } = await import("../lb/translate.ts");
  const recon = await import("../datapath/reconcile.ts");
  const progress = o.progress ?? new Progress(log);
  const opts = (previous: PreviousIds | undefined) => ({
    ...(nodeAddresses !== undefined ? { nodeAddresses } : {}),
    ...(previous !== undefined ? { previous } : {}),
    progress: (done: number, total: number) => progress.tick(() => `translating: ${done}/${total} services`),
  });

  if (o.dryRun) {
    const { previousIdsFromState, serviceNamesFromState } = await import("../datapath/mapstate.ts");
    let programmed: MapState | undefined;
    try {
      programmed = recon.readPinnedState(cfg);
    } catch (e) {
      // A plan is worth printing even when the node's state cannot be read.
      log.warn(`read current state: ${(e as Error).message} (showing the plan without a diff)`);
    }
    const model = translate(state, cfg, opts(programmed && previousIdsFromState(programmed)));
    markNodeSources(model.frontends);
    await warnModel(model, cfg, log);
    const { checkPlan } = await import("../datapath/plancheck.ts");
    const skipped = checkPlan(model, cfg, programmed);
    if (programmed && cfg.kubeProxyReplacement) {
      // a shrink below a map's content fails here as it would in apply (exit 2)
      const { resizePlan } = await import("../datapath/loader.ts");
      const resize = resizePlan(cfg);
      if (resize.length > 0)
        log.info(
          `would resize maps in place (connections kept): ${resize.map((r) => `${r.name} ${r.from} → ${r.to}`).join(", ")}`,
        );
    }
    if (!cfg.kubeProxyReplacement) log.warn(disabledMessage(o.configPath));
    else if (programmed)
      checkRemovals(serviceNamesFromState(programmed), await modelServices(model), o.guard, o.op);
    return {
      model,
      ...(programmed ? { programmed } : {}),
      skipped,
      disabled: !cfg.kubeProxyReplacement,
    };
  }
  if (!cfg.kubeProxyReplacement) {
    // Translated all the same: bad input still exits 2.
    const model = translate(state, cfg, opts(undefined));
    log.warn(disabledMessage(o.configPath));
    return { model, disabled: true };
  }
  using _lock = await recon.lockState(cfg, log);
  const { previous, services } = recon.readProgrammed(cfg);
  const model = translate(state, cfg, opts(previous));
  markNodeSources(model.frontends);
  await warnModel(model, cfg, log);
  checkRemovals(services, await modelServices(model), o.guard, o.op);
  const applied = await recon.applyModel(model, cfg, { log, progress });
  return { model, applied, disabled: false };
}
