/**
 * The datapath's own counters, read from the pinned maps: per-frontend and per-backend packets and
 * bytes (kpr_svc_stats / kpr_be_stats, per-CPU, summed here), the verdict reasons (kpr_reasons),
 * and how full each map is. The one reader every consumer uses (`kpr service list --stats`,
 * `kpr bpf metrics`, the agent's /metrics).
 */
import { existsSync, readdirSync } from "node:fs";
import type { Config } from "../config/config.ts";
import { BpfMap } from "./bpf.ts";
import { REASON_NAMES, stats as statsCodec, u32Id } from "./lbmaps.ts";
import { paths } from "./loader.ts";

/** Packets (tc) or connections/sendmsg calls (socket LB) and bytes, summed over CPUs. */
export interface Traffic {
  packets: bigint;
  bytes: bigint;
}

/** Every counter the datapath keeps. */
export interface Counters {
  /** by frontend id */
  frontends: Map<number, Traffic>;
  /** by backend id */
  backends: Map<number, Traffic>;
  /** verdict reason name → count, in abi.h's order (every reason, zeros included) */
  reasons: { reason: string; count: bigint }[];
}

/** Entries and capacity of one pinned map. */
export interface MapFill {
  name: string;
  entries: number;
  maxEntries: number;
}

function openIfPinned(cfg: Config, name: string): BpfMap | undefined {
  const p = `${paths.maps(cfg)}/${name}`;
  return existsSync(p) ? BpfMap.openPinned(p) : undefined;
}

/** Sums a per-CPU value laid out as nCPU × round8(size) bytes, one u64 field at `off`. */
function sumPerCpu(values: Uint8Array, base: number, stride: number, slot: number, off: number): bigint {
  const dv = new DataView(values.buffer, values.byteOffset, values.byteLength);
  let total = 0n;
  for (let c = 0; c < stride / slot; c++) total += dv.getBigUint64(base + c * slot + off, true);
  return total;
}

function readTraffic(m: BpfMap): Map<number, Traffic> {
  const out = new Map<number, Traffic>();
  const { keys, values, count } = m.lookupBatch();
  const slot = (m.valueSize + 7) & ~7;
  const pOff = statsCodec.fields.find((f) => f.name === "packets")!.offset;
  const bOff = statsCodec.fields.find((f) => f.name === "bytes")!.offset;
  for (let i = 0; i < count; i++) {
    const id = Number(u32Id.decode(keys.subarray(i * m.keySize, (i + 1) * m.keySize)).v);
    const base = i * m.valueStride;
    out.set(id, {
      packets: sumPerCpu(values, base, m.valueStride, slot, pOff),
      bytes: sumPerCpu(values, base, m.valueStride, slot, bOff),
    });
  }
  return out;
}

/** Reads every counter; undefined when kpr has no state under the bpf root. */
export function readCounters(cfg: Config): Counters | undefined {
  const svc = openIfPinned(cfg, "kpr_svc_stats");
  if (!svc) return undefined;
  using _svc = svc;
  using be = openIfPinned(cfg, "kpr_be_stats");
  using rs = openIfPinned(cfg, "kpr_reasons");
  const reasons = REASON_NAMES.map((reason) => ({ reason: reason as string, count: 0n }));
  if (rs) {
    const slot = (rs.valueSize + 7) & ~7;
    for (let i = 0; i < REASON_NAMES.length && i < rs.maxEntries; i++) {
      const v = rs.lookup(u32Id.encode({ v: i }));
      if (v) reasons[i]!.count = sumPerCpu(v, 0, v.length, slot, 0);
    }
  }
  return { frontends: readTraffic(svc), backends: be ? readTraffic(be) : new Map(), reasons };
}

/** Entries and capacity of every map pinned under the bpf root (array maps count as full). */
export function readMapFill(cfg: Config): MapFill[] {
  const dir = paths.maps(cfg);
  if (!existsSync(dir)) return [];
  const out: MapFill[] = [];
  for (const name of readdirSync(dir).sort()) {
    using m = BpfMap.openPinned(`${dir}/${name}`);
    out.push({ name, entries: m.entryCount(), maxEntries: m.maxEntries });
  }
  return out;
}
