/**
 * Reconcile: programs a desired LbModel into the pinned BPF maps. Reads the maps back, diffs
 * (mapstate.ts), checks capacity before the first write, applies the writes in DESIGN.md's
 * order with batch updates, and on a failed write restores what it had changed.
 */

import { existsSync } from "node:fs";
import type { ConsolaInstance } from "consola";
import type { Config } from "../config/config.ts";
import { EXIT_INPUT, KprError } from "../errors.ts";
import type { LbModel, PreviousIds, ServiceEntryJson } from "../lb/model.ts";
import { log as rootLog } from "../log.ts";
import { Progress } from "../progress.ts";
import { BpfMap } from "./bpf.ts";
import { applyInterrupted, crashPoint, markApplyDone, markApplyStarted } from "./crashmark.ts";
import { LB_STATE_MAPS, type LbStateMap, lb4AffKey, lb4AffVal } from "./lbmaps.ts";
import type { Datapath } from "./loader.ts";
import { type MaglevResult, syncMaglev } from "./maglevmaps.ts";
import {
  alignToState,
  type CurrentView,
  diffMapState,
  type EncodedModel,
  emptyMapState,
  encodedState,
  encodeModel,
  frontendChanges,
  hex,
  type MapOp,
  type MapState,
  mapStateToFrontends,
  peakEntries,
  planFromDigests,
  previousIdsFromBatches,
  serviceNamesFromMeta,
  summarizeOps,
} from "./mapstate.ts";
import { cleanupRemovedUdp } from "./sockterm.ts";
import { checkAttachedMaps } from "./verify.ts";

export { diffMapState, type MapOp, type MapState, modelToMapState } from "./mapstate.ts";

/** What the executor needs of a map (BpfMap has it; tests may wrap one to inject failures). */
export interface MapIo {
  readonly name: string;
  readonly maxEntries: number;
  update(key: Uint8Array, value: Uint8Array): void;
  updateBatch(keys: Uint8Array, values: Uint8Array, count: number): void;
  delete(key: Uint8Array): boolean;
  /** deletes `count` concatenated keys in few syscalls; returns how many existed */
  deleteBatch(keys: Uint8Array, count: number): number;
}

/** What readMapState needs of a map. */
export interface MapReader {
  readonly keySize: number;
  readonly valueStride: number;
  lookupBatch(): { keys: Uint8Array; values: Uint8Array; count: number };
}

/** Path of a pinned map under the bpf root. */
export function mapPinPath(cfg: Config, name: string): string {
  return `${cfg.bpf.root}/maps/${name}`;
}

/** Reads the content of every LB state map (one batch lookup per map). */
export function readMapState(
  maps: Record<LbStateMap, MapReader>,
  only: readonly LbStateMap[] = LB_STATE_MAPS,
): MapState {
  const st = emptyMapState();
  for (const name of only) {
    const m = maps[name];
    const { keys, values, count } = m.lookupBatch();
    const c = st[name];
    for (let i = 0; i < count; i++) {
      // views into the batch buffers (cheap to hex and to decode: see mapstate.ts's Arena)
      const key = keys.subarray(i * m.keySize, (i + 1) * m.keySize);
      const value = values.subarray(i * m.valueStride, (i + 1) * m.valueStride);
      c.set(hex(key), { key, value });
    }
  }
  return st;
}

/** Opens the pinned LB state maps; undefined when kpr has no state under the bpf root. */
export function openPinnedLbMaps(cfg: Config): Record<LbStateMap, BpfMap> | undefined {
  if (!existsSync(mapPinPath(cfg, "kpr_lb4_svc"))) return undefined;
  const out: Partial<Record<LbStateMap, BpfMap>> = {};
  try {
    for (const name of LB_STATE_MAPS) out[name] = BpfMap.openPinned(mapPinPath(cfg, name));
  } catch (e) {
    for (const m of Object.values(out)) m.close();
    throw e;
  }
  return out as Record<LbStateMap, BpfMap>;
}

function closeAll(maps: Record<string, BpfMap> | undefined): void {
  for (const m of Object.values(maps ?? {})) m.close();
}

/** The programmed state read back from the pinned maps; undefined when nothing is pinned. */
export function readPinnedState(cfg: Config): MapState | undefined {
  const maps = openPinnedLbMaps(cfg);
  if (!maps) return undefined;
  try {
    return readMapState(maps);
  } finally {
    closeAll(maps);
  }
}

/**
 * Holds the node's kpr state for one writer: an exclusive lock on the bpf root (created when
 * missing). Take it before reading the state a write is planned from; release with `using`.
 */
export async function lockState(cfg: Config, log?: ConsolaInstance): Promise<Disposable> {
  const { ensureBpffs } = await import("./bpffs.ts");
  const { lockDirectory } = await import("./ffi.ts");
  return lockDirectory(
    cfg.bpf.root,
    () => (log ?? rootLog).info(`waiting for another kpr process that holds ${cfg.bpf.root}`),
    () => void ensureBpffs(cfg.bpf.root),
  );
}

/** Frontend and backend ids programmed on this node (empty maps when nothing is pinned). */
export function readPreviousIds(cfg: Config): PreviousIds {
  const maps = openPinnedLbMaps(cfg);
  if (!maps) return { frontends: new Map(), backends: new Map() };
  try {
    return previousIdsFromBatches(maps.kpr_svc_meta.lookupBatch(), maps.kpr_lb4_be.lookupBatch());
  } finally {
    closeAll(maps);
  }
}

/**
 * What a sync plans from: the ids programmed on this node and the services (kpr_svc_meta names,
 * "ns/name") they belong to, for the wipe guard. Empty when nothing is pinned.
 */
export function readProgrammed(cfg: Config): { previous: PreviousIds; services: Set<string> } {
  const maps = openPinnedLbMaps(cfg);
  if (!maps) return { previous: { frontends: new Map(), backends: new Map() }, services: new Set() };
  try {
    const meta = maps.kpr_svc_meta.lookupBatch();
    return {
      previous: previousIdsFromBatches(meta, maps.kpr_lb4_be.lookupBatch()),
      services: serviceNamesFromMeta(meta),
    };
  } finally {
    closeAll(maps);
  }
}

/** Decodes a programmed state into DESIGN.md's JSON entries (plus the model's extra fields). */
export async function entriesFromState(st: MapState): Promise<ServiceEntryJson[]> {
  const { toServiceEntryJson } = await import("../lb/format.ts");
  const { frontends, warnings } = mapStateToFrontends(st);
  for (const w of warnings) rootLog.withTag("reconcile").warn(`read programmed state: ${w}`);
  return frontends.map(toServiceEntryJson);
}

/**
 * The programmed frontends in DESIGN.md's JSON shape, decoded from the kernel maps; undefined
 * when kpr has no state on this node.
 */
export async function readCurrentEntries(cfg: Config): Promise<ServiceEntryJson[] | undefined> {
  const st = readPinnedState(cfg);
  return st ? entriesFromState(st) : undefined;
}

/**
 * Throws before any write when a map would overflow: upserts land before deletions, so the
 * peak is the current entries plus the added keys.
 */
export function checkCapacity(
  current: MapState | Record<LbStateMap, number>,
  ops: MapOp[],
  maxEntries: Record<LbStateMap, number>,
): void {
  const peak = peakEntries(current, ops);
  const over = LB_STATE_MAPS.filter((m) => peak[m] > maxEntries[m]);
  if (over.length === 0) return;
  const what = over.map((m) => `${m} needs ${peak[m]} entries, holds ${maxEntries[m]}`).join("; ");
  throw new KprError(
    `apply: input too large: ${what} (nothing was changed; ${capacityAdvice(over)})`,
    EXIT_INPUT,
  );
}

function capacityAdvice(over: LbStateMap[]): string {
  const out: string[] = [];
  if (over.includes("kpr_lb4_srcr"))
    out.push("kpr_lb4_srcr has a fixed size: use fewer loadBalancerSourceRanges over all services");
  if (over.some((m) => m !== "kpr_lb4_srcr"))
    out.push(
      "raise bpf.lbMapMax (at most 16777216) and run kpr cleanup so the maps are recreated, or apply fewer services or endpoints",
    );
  return out.join("; ");
}

const fieldAt = (c: { fields: readonly { name: string; offset: number }[] }, name: string) =>
  c.fields.find((f) => f.name === name)!.offset;
const AFF_REV_NAT = fieldAt(lb4AffKey, "rev_nat_id");
const AFF_BACKEND = fieldAt(lb4AffVal, "backend_id");

/** How many entries one batch syscall carries (also the progress granularity). */
const BATCH = 4096;

interface OpGroup {
  map: LbStateMap;
  kind: "update" | "delete";
  ops: MapOp[];
}

function groupOps(ops: MapOp[]): OpGroup[] {
  const groups: OpGroup[] = [];
  for (const op of ops) {
    const last = groups[groups.length - 1];
    if (last && last.map === op.map && last.kind === op.kind && last.ops.length < BATCH) last.ops.push(op);
    else groups.push({ map: op.map, kind: op.kind, ops: [op] });
  }
  return groups;
}

function runGroup(g: OpGroup, m: MapIo): void {
  if (g.kind === "delete") {
    if (g.ops.length === 1) {
      m.delete(g.ops[0]!.key);
      return;
    }
    const ks = g.ops[0]!.key.length;
    const keys = new Uint8Array(g.ops.length * ks);
    g.ops.forEach((op, i) => {
      keys.set(op.key, i * ks);
    });
    m.deleteBatch(keys, g.ops.length);
    return;
  }
  if (g.ops.length === 1) {
    m.update(g.ops[0]!.key, g.ops[0]!.value!);
    return;
  }
  const ks = g.ops[0]!.key.length;
  const vs = g.ops[0]!.value!.length;
  const keys = new Uint8Array(g.ops.length * ks);
  const values = new Uint8Array(g.ops.length * vs);
  g.ops.forEach((op, i) => {
    keys.set(op.key, i * ks);
    values.set(op.value!, i * vs);
  });
  m.updateBatch(keys, values, g.ops.length);
}

/** Undoes ops (newest first): restores previous values, deletes added keys. Returns failures. */
function rollback(done: MapOp[], maps: Record<LbStateMap, MapIo>): string[] {
  const failures: string[] = [];
  for (let i = done.length - 1; i >= 0; i--) {
    const op = done[i]!;
    try {
      if (op.prev) maps[op.map].update(op.key, op.prev);
      else maps[op.map].delete(op.key);
    } catch (e) {
      failures.push(`${op.map} key ${hex(op.key)}: ${(e as Error).message}`);
    }
  }
  return failures;
}

/**
 * Runs `ops` in order (batched per map and kind). On a failed write, rolls back every write of
 * this run (the failing batch included, as it may have been partly applied) and throws a
 * KprError saying so. Returns the number of writes.
 */
export function executeOps(
  ops: MapOp[],
  maps: Record<LbStateMap, MapIo>,
  opts: { log?: ConsolaInstance; progress?: Progress } = {},
): number {
  // the run's own progress (after 1 s of writes) unless the caller's covers a longer run
  const progress = opts.progress ?? (opts.log ? new Progress(opts.log, performance.now(), 1000) : undefined);
  const done: MapOp[] = [];
  let groupsDone = 0;
  for (const g of groupOps(ops)) {
    try {
      runGroup(g, maps[g.map]);
    } catch (e) {
      const attempted = [...done, ...g.ops];
      const failures = rollback(attempted, maps);
      const cause = (e as Error).message;
      if (failures.length === 0)
        throw new KprError(
          `apply: ${g.kind} ${g.map} failed: ${cause} (rolled back ${attempted.length} writes: the maps are as they were before this apply)`,
        );
      throw new KprError(
        `apply: ${g.kind} ${g.map} failed: ${cause} (rollback incomplete: ${failures.length} of ${attempted.length} entries could not be restored, first: ${failures[0]}; run kpr apply again)`,
      );
    }
    done.push(...g.ops);
    crashPoint(++groupsDone);
    progress?.tick(() => `programming maps: ${done.length}/${ops.length} writes`);
  }
  // every write is in: flows and connected sockets still aimed at removed UDP backends move on
  cleanupRemovedUdp(ops, maps, opts.log);
  return done.length;
}

/** Result of applyModel. */
export interface ApplyResult {
  changed: boolean;
  summary: string;
  /** map writes done */
  writes: number;
  /** the writes planned (and done), in order */
  ops: MapOp[];
  /** how the plan was made: from per-frontend digests, or by diffing every entry */
  planned: "digests" | "full";
  /** program / link / config changes done by the loader */
  datapathChanges: string[];
  skipped: { frontend: string; reason: string }[];
  /** wall time of applyModel */
  ms: number;
  /** the loaded datapath, when the caller asked to keep it open (`keepDatapath`) */
  datapath?: Datapath;
}

/** A CurrentView over the pinned maps: two batch reads, the rest looked up on demand. */
function pinnedView(maps: Record<LbStateMap, BpfMap>): CurrentView {
  return {
    meta: maps.kpr_svc_meta.lookupBatch(),
    lookupBe: (k) => maps.kpr_lb4_be.lookup(k),
    beKeys: () => maps.kpr_lb4_be.lookupBatch(),
    srcr: () => readMapState(maps, ["kpr_lb4_srcr"]).kpr_lb4_srcr,
    lookupSvc: (k) => maps.kpr_lb4_svc.lookup(k),
    lookupRnat: (k) => maps.kpr_lb4_rnat.lookup(k),
  };
}

/**
 * Above this many frontends out of date, diffing every entry costs less than looking the
 * changed ones up one by one.
 */
function maxDirty(enc: EncodedModel): number {
  return Math.max(256, enc.frontends.length >> 1);
}

/**
 * Programs `model` into this node: ensures bpffs, loads and attaches the programs (loader.ts;
 * skipped when the pinned links run the embedded objects), plans the writes and applies them.
 * The plan looks only at frontends whose stored digest (kpr_svc_meta) differs from the desired
 * one, and diffs every entry when there is no usable digest for most of them (first apply).
 * Same input twice → no writes. The caller prints `summary`; progress of long runs (> 1 s)
 * goes to `log`.
 */
export async function applyModel(
  model: LbModel,
  cfg: Config,
  opts: {
    log?: ConsolaInstance;
    /** an open datapath to program (not loaded again, left open) */
    datapath?: Datapath;
    /** keep the datapath this call loads open and return it (the daemon programs it on) */
    keepDatapath?: boolean;
    /** progress lines of a long apply */
    progress?: Progress;
  } = {},
): Promise<ApplyResult> {
  const log = opts.log ?? rootLog.withTag("reconcile");
  const t0 = performance.now();
  const { ensureBpffs } = await import("./bpffs.ts");
  const { loadDatapath, lbMapMaxEntries } = await import("./loader.ts");
  const enc = encodeModel(model, cfg.loadBalancer.algorithm === "maglev");
  for (const s of enc.skipped) log.warn(`skipped frontend ${s.frontend}: ${s.reason}`);
  ensureBpffs(cfg.bpf.root);

  // Plan and capacity check before anything is written (maps, programs or config).
  const pinned = openPinnedLbMaps(cfg);
  let ops: MapOp[];
  let counts: MapState | Record<LbStateMap, number>;
  let maxEntries: Record<LbStateMap, number>;
  let planned: ApplyResult["planned"] = "digests";
  try {
    // the sizes the maps have once loadDatapath has run (it resizes pinned maps to the config's)
    maxEntries = lbMapMaxEntries(cfg);
    const view = pinned && !applyInterrupted(cfg.bpf.root) ? pinnedView(pinned) : undefined;
    const plan = view ? planFromDigests(enc, view, maxDirty(enc)) : undefined;
    if (plan) {
      ops = plan.ops;
      counts = plan.counts;
    } else {
      planned = "full";
      const current = pinned ? readMapState(pinned) : emptyMapState();
      ops = diffMapState(
        current,
        encodedState(
          enc,
          enc.frontends.map((f) => alignToState(f, current)),
          enc.backendIds(),
        ),
      );
      counts = current;
    }
  } finally {
    closeAll(pinned);
  }
  checkCapacity(counts, ops, maxEntries);
  const planMs = performance.now() - t0;
  if (planMs > 1000)
    log.info(`planned ${ops.length} map writes in ${Math.round(planMs)} ms; loading the datapath`);

  const dp = opts.datapath ?? (await loadDatapath(cfg, { log }));
  const keep = opts.datapath !== undefined || opts.keepDatapath === true;
  let writes = 0;
  let maglev: MaglevResult | undefined;
  try {
    checkAttachedMaps(cfg.bpf.root);
    if (ops.length > 0) markApplyStarted(cfg.bpf.root);
    writes = executeOps(ops, dp.lbMaps, { log, ...(opts.progress ? { progress: opts.progress } : {}) });
    if (ops.some((o) => o.kind === "delete"))
      pruneAffinity(dp.map("kpr_lb4_aff"), (fe, be) => enc.byId.has(fe) && enc.beIndex.has(be));
    maglev = syncMaglev(
      { outer: dp.map("kpr_lb4_maglev"), cfg: dp.map("kpr_maglev_cfg"), sig: dp.map("kpr_lb4_mgsig") },
      enc,
      cfg,
      log,
    );
    markApplyDone(cfg.bpf.root);
  } catch (e) {
    if (opts.keepDatapath && !opts.datapath) dp.close();
    throw e;
  } finally {
    if (!keep) dp.close();
  }
  const dpChanges = opts.datapath ? [] : dp.changes;
  const ms = performance.now() - t0;
  const fc = frontendChanges(ops);
  const s = summarizeOps(ops);
  const nBackends = enc.beIndex.size;
  const nFrontends = enc.frontends.length;
  const maglevChanged = (maglev?.written ?? 0) + (maglev?.removed ?? 0) > 0;
  const changed = writes > 0 || dpChanges.length > 0 || maglevChanged;
  const detail = [
    `frontends +${fc.added} ~${fc.changed} -${fc.removed}`,
    `backends +${s.kpr_lb4_be.added} ~${s.kpr_lb4_be.changed} -${s.kpr_lb4_be.removed}`,
    `${writes} map writes`,
    ...(maglevChanged ? [`maglev tables +${maglev!.written} -${maglev!.removed}`] : []),
    ...dpChanges,
  ];
  const took = ms < 10 ? ms.toFixed(1) : String(Math.round(ms));
  const summary = changed
    ? `${nFrontends} frontends, ${nBackends} backends programmed (${detail.join("; ")}) in ${took} ms`
    : `no changes (${nFrontends} frontends, ${nBackends} backends programmed); checked in ${took} ms`;
  return {
    changed,
    summary,
    writes,
    ops,
    planned,
    datapathChanges: dpChanges,
    skipped: enc.skipped,
    ms,
    ...(opts.keepDatapath && !opts.datapath ? { datapath: dp } : {}),
  };
}

/**
 * Drops session-affinity entries that `keep` (frontend id, backend id) rejects: those whose frontend or backend is gone, so a returning id never
 * inherits a stale choice (the datapath checks slots only for small frontends).
 */
export function pruneAffinity(aff: BpfMap, keep: (frontendId: number, backendId: number) => boolean): number {
  // one batch read and one batch delete, not two syscalls per entry (up to 262,144 clients)
  const { keys, values, count } = aff.lookupBatch();
  const ks = aff.keySize;
  const vs = aff.valueStride;
  const kdv = new DataView(keys.buffer, keys.byteOffset, keys.byteLength);
  const vdv = new DataView(values.buffer, values.byteOffset, values.byteLength);
  const stale = new Uint8Array(count * ks);
  let n = 0;
  for (let i = 0; i < count; i++) {
    const revNat = kdv.getUint16(i * ks + AFF_REV_NAT, true);
    const backend = vdv.getUint32(i * vs + AFF_BACKEND, true);
    if (keep(revNat, backend)) continue;
    stale.set(keys.subarray(i * ks, (i + 1) * ks), n * ks);
    n++;
  }
  return n === 0 ? 0 : aff.deleteBatch(stale, n);
}
