/**
 * Maglev tables in the kernel (loadBalancer.algorithm=maglev): for every north-south frontend
 * (NodePort, ExternalIP, LoadBalancer, HostPort) a lookup table over its active backends (all
 * of them when none is active), computed by src/lb/maglev.ts from the backends' address:port in
 * sorted order, so nodes with the same backends build the same table whatever their backend ids.
 * Each table is written into a new inner array map first and then swapped into kpr_lb4_maglev
 * with one update, so the datapath never sees a half-written table. kpr_lb4_mgsig keeps a hash
 * of each table's inputs: a frontend whose backends, table size and seed did not change is not
 * recomputed, across applies. With another algorithm every table is removed.
 */
import type { ConsolaInstance } from "consola";
import type { Config } from "../config/config.ts";
import { maglevTable, parseHashSeed } from "../lb/maglev.ts";
import { BpfMap, MapType } from "./bpf.ts";
import {
  ACTIVE_SATURATED,
  lb4Backend,
  lb4Service,
  maglevCfg,
  SVC_F,
  u16Id,
  u32Id,
  u64Val,
} from "./lbmaps.ts";
import type { EncodedModel } from "./mapstate.ts";

/** BPF_F_INNER_MAP: inner arrays of any size fit the outer map's template. */
const BPF_F_INNER_MAP = 1 << 12;
const NORTH_SOUTH = SVC_F.NODEPORT | SVC_F.EXTERNALIP | SVC_F.LOADBALANCER | SVC_F.HOSTPORT;

/** The maps this module writes (from the loaded datapath). */
export interface MaglevMaps {
  outer: BpfMap;
  cfg: BpfMap;
  sig: BpfMap;
}

/** What syncMaglev did. */
export interface MaglevResult {
  /** tables swapped in */
  written: number;
  /** distinct tables computed and written into a new inner map (equal inputs share one) */
  computed: number;
  /** of `ms`, computing tables in user space */
  computeMs: number;
  /** tables removed (frontend gone, no longer north-south, or algorithm not maglev) */
  removed: number;
  /** frontends whose table was up to date */
  kept: number;
  ms: number;
}

/** The backend ids of a frontend's table in the order of their sorted names, and the names. */
function tableInputs(
  f: EncodedModel["frontends"][number],
  enc: EncodedModel,
): { ids: number[]; names: string[] } {
  const master = lb4Service.decode(f.master);
  let n = master.active_count;
  if (n === ACTIVE_SATURATED || n === 0 || n > f.backendIds.length) n = f.backendIds.length;
  const named: [string, number][] = [];
  for (const id of f.backendIds.slice(0, n)) {
    const v = enc.beValue(id);
    if (!v) continue;
    const be = lb4Backend.decode(v);
    named.push([`${be.address}:${be.port}`, id]);
  }
  named.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return { ids: named.map((x) => x[1]), names: named.map((x) => x[0]) };
}

/**
 * Brings the kernel's Maglev tables in line with `enc` and `cfg`. Returns what it did.
 */
export function syncMaglev(
  maps: MaglevMaps,
  enc: EncodedModel,
  cfg: Config,
  log?: ConsolaInstance,
): MaglevResult {
  const t0 = performance.now();
  const res: MaglevResult = { written: 0, computed: 0, computeMs: 0, removed: 0, kept: 0, ms: 0 };
  const on = cfg.loadBalancer.algorithm === "maglev";
  const m = cfg.maglev.tableSize;
  const seed = parseHashSeed(cfg.maglev.hashSeed);
  const zero = u32Id.encode({ v: 0 });
  const cfgValue = maglevCfg.encode({
    table_size: on ? m : 0,
    seed0: seed.jhash0,
    seed1: seed.jhash1,
    pad: 0,
  });
  const cur = maps.cfg.lookup(zero);
  if (!cur || Buffer.compare(cur, cfgValue) !== 0) maps.cfg.update(zero, cfgValue);

  const want = new Set<number>();
  // what the kernel holds, read once (not two lookups per frontend)
  const inKernel = new Set<number>();
  for (let k = maps.outer.nextKey(); k; k = maps.outer.nextKey(k)) inKernel.add(u16Id.decode(k).v);
  const sigs = new Map<number, bigint>();
  const dump = maps.sig.lookupBatch();
  for (let i = 0; i < dump.count; i++)
    sigs.set(
      u16Id.decode(dump.keys, i * maps.sig.keySize).v,
      u64Val.decode(dump.values, i * maps.sig.valueStride).v,
    );
  const keys = new Uint8Array(m * 4);
  new Uint32Array(keys.buffer).forEach((_, i, a) => {
    a[i] = i;
  });
  // frontends with the same inputs (a NodePort's node address, 0.0.0.0 and 127.0.0.1 entries)
  // share one inner map: it is never written after it is swapped in
  const recent = new Map<bigint, BpfMap>();
  try {
    if (on) {
      for (const f of enc.frontends) {
        const flags = lb4Service.decode(f.master).flags;
        if (!(flags & NORTH_SOUTH) || f.backendIds.length === 0) continue;
        want.add(f.id);
        const { ids, names } = tableInputs(f, enc);
        const sig = Bun.hash.wyhash(`${m}|${cfg.maglev.hashSeed}|${names.join(",")}|${ids.join(",")}`, 0n);
        const key = u16Id.encode({ v: f.id });
        if (sigs.get(f.id) === sig && inKernel.has(f.id)) {
          res.kept++;
          continue;
        }
        let inner = recent.get(sig);
        if (!inner) {
          const c0 = performance.now();
          const table = maglevTable(names, m, seed);
          const values = new Uint32Array(m);
          for (let j = 0; j < m; j++) values[j] = ids[table[j]!]!;
          res.computeMs += performance.now() - c0;
          inner = BpfMap.create({
            name: "kpr_maglev_tbl",
            type: MapType.ARRAY,
            keySize: 4,
            valueSize: 4,
            maxEntries: m,
            flags: BPF_F_INNER_MAP,
          });
          recent.set(sig, inner);
          if (recent.size > 64) {
            const [oldest, map] = recent.entries().next().value!;
            recent.delete(oldest);
            map.close();
          }
          inner.updateBatch(keys, new Uint8Array(values.buffer), m);
          res.computed++;
        }
        maps.outer.update(key, u32Id.encode({ v: inner.fd }));
        maps.sig.update(key, u64Val.encode({ v: sig }));
        res.written++;
      }
    }
  } finally {
    for (const map of recent.values()) map.close();
  }
  for (const [map, ids] of [
    [maps.outer, inKernel],
    [maps.sig, sigs.keys()],
  ] as const) {
    for (const id of ids) {
      if (want.has(id)) continue;
      map.delete(u16Id.encode({ v: id }));
      if (map === maps.outer) res.removed++;
    }
  }
  res.ms = performance.now() - t0;
  if (res.written + res.removed > 0)
    log?.debug(
      `maglev: ${res.written} tables written (${res.computed} distinct, computed in ${Math.round(res.computeMs)} ms), ${res.removed} removed, ${res.kept} kept in ${Math.round(res.ms)} ms`,
    );
  return res;
}
