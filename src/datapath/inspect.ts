/**
 * The datapath's dynamic state, decoded for the inspection commands: connection tracking
 * (kpr_ct4), SNAT (kpr_snat4), session affinity (kpr_lb4_aff) and per-service counters. Read
 * from the pinned maps only; nothing is written.
 */
import { existsSync } from "node:fs";
import type { Config } from "../config/config.ts";
import type { EntryWithStats } from "../lb/format.ts";
import { l4Key } from "../lb/ip.ts";
import type { ServiceEntryJson } from "../lb/model.ts";
import { BpfMap } from "./bpf.ts";
import type { Traffic } from "./counters.ts";
import {
  ct4Entry,
  ct4Key,
  lb4AffKey,
  lb4AffVal,
  lb4Backend,
  lb4Revnat,
  protoName,
  snat4Entry,
  u16Id,
  u32Id,
} from "./lbmaps.ts";
import { paths } from "./loader.ts";

/** Seconds on the clock bpf_ktime_get_ns() reads (CLOCK_MONOTONIC). */
export function monotonicNs(): bigint {
  return process.hrtime.bigint();
}

function open(cfg: Config, name: string): BpfMap | undefined {
  const p = `${paths.maps(cfg)}/${name}`;
  return existsSync(p) ? BpfMap.openPinned(p) : undefined;
}

function readAll(cfg: Config, name: string): [Uint8Array, Uint8Array][] {
  const m = open(cfg, name);
  if (!m) return [];
  using _m = m;
  return [...m.entries()];
}

/** Backend id → "addr:port/PROTO", from kpr_lb4_be. */
export function backendNames(cfg: Config): Map<number, string> {
  const out = new Map<number, string>();
  for (const [k, v] of readAll(cfg, "kpr_lb4_be")) {
    const b = lb4Backend.decode(v);
    out.set(Number(u32Id.decode(k).v), `${b.address}:${b.port}/${protoName(b.proto) ?? b.proto}`);
  }
  return out;
}

/** Reverse-NAT id → frontend "addr:port", from kpr_lb4_rnat. */
export function frontendNames(cfg: Config): Map<number, string> {
  const out = new Map<number, string>();
  for (const [k, v] of readAll(cfg, "kpr_lb4_rnat")) {
    const r = lb4Revnat.decode(v);
    out.set(Number(u16Id.decode(k).v), `${r.address}:${r.port}`);
  }
  return out;
}

const ctFlags = (f: number) => [...(f & 1 ? ["snat"] : []), ...(f & 2 ? ["closed"] : [])];
const ageSeconds = (now: bigint, lastNs: bigint) =>
  now > lastNs ? Number((now - lastNs) / 1_000_000n) / 1000 : 0;

/** One connection-tracking entry. */
export interface CtRow {
  /** "ingress": client → frontend as seen on a device; "reply": backend → client (local backends) */
  direction: "ingress" | "reply";
  protocol: string;
  source: string;
  destination: string;
  backendId: number;
  backend: string;
  revNatId: number;
  frontend: string;
  /** ingress+snat: the SNAT source; reply: the frontend to restore */
  nat?: string;
  flags: string[];
  packets: bigint;
  bytes: bigint;
  /** seconds since the last packet */
  idleSeconds: number;
}

/** Every kpr_ct4 entry, oldest activity last. */
export function readCt(cfg: Config, now = monotonicNs()): CtRow[] {
  const bes = backendNames(cfg);
  const fes = frontendNames(cfg);
  const rows = readAll(cfg, "kpr_ct4").map(([k, v]): CtRow => {
    const key = ct4Key.decode(k);
    const e = ct4Entry.decode(v);
    const proto = protoName(key.proto) ?? String(key.proto);
    return {
      direction: key.dir === 0 ? "ingress" : "reply",
      protocol: proto,
      source: `${key.saddr}:${key.sport}`,
      destination: `${key.daddr}:${key.dport}`,
      backendId: e.backend_id,
      backend: bes.get(e.backend_id) ?? `<backend ${e.backend_id} gone>`,
      revNatId: e.rev_nat_id,
      frontend: fes.get(e.rev_nat_id) ?? "",
      ...(e.nat_addr !== "0.0.0.0" ? { nat: `${e.nat_addr}:${e.nat_port}` } : {}),
      flags: ctFlags(e.flags),
      packets: e.packets,
      bytes: e.bytes,
      idleSeconds: ageSeconds(now, e.last_seen_ns),
    };
  });
  return rows.sort((a, b) => a.idleSeconds - b.idleSeconds || a.source.localeCompare(b.source));
}

/** One SNAT entry: the reply tuple of a source-NATed flow and what it is translated back to. */
export interface NatRow {
  protocol: string;
  /** backend → node (the reply tuple the entry is keyed by) */
  backend: string;
  natAddress: string;
  client: string;
  frontend: string;
  revNatId: number;
  flags: string[];
  idleSeconds: number;
}

/** Every kpr_snat4 entry. */
export function readNat(cfg: Config, now = monotonicNs()): NatRow[] {
  return readAll(cfg, "kpr_snat4")
    .map(([k, v]): NatRow => {
      const key = ct4Key.decode(k);
      const e = snat4Entry.decode(v);
      return {
        protocol: protoName(key.proto) ?? String(key.proto),
        backend: `${key.saddr}:${key.sport}`,
        natAddress: `${key.daddr}:${key.dport}`,
        client: `${e.client_addr}:${e.client_port}`,
        frontend: `${e.fe_addr}:${e.fe_port}`,
        revNatId: e.rev_nat_id,
        flags: ctFlags(e.flags),
        idleSeconds: ageSeconds(now, e.last_seen_ns),
      };
    })
    .sort((a, b) => a.idleSeconds - b.idleSeconds || a.backend.localeCompare(b.backend));
}

/** One session-affinity entry. */
export interface AffinityRow {
  /** client IPv4 (tc) or "netns:COOKIE" (socket LB) */
  client: string;
  revNatId: number;
  frontend: string;
  backendId: number;
  backend: string;
  /** seconds since the entry was last used */
  idleSeconds: number;
}

function ip4FromLow32(v: bigint): string {
  const n = Number(v & 0xffffffffn);
  // network order in memory: the first octet is the low byte
  return [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, n >>> 24].join(".");
}

/** Every kpr_lb4_aff entry. */
export function readAffinity(cfg: Config, now = monotonicNs()): AffinityRow[] {
  const bes = backendNames(cfg);
  const fes = frontendNames(cfg);
  const nowS = Number(now / 1_000_000_000n);
  return readAll(cfg, "kpr_lb4_aff")
    .map(([k, v]): AffinityRow => {
      const key = lb4AffKey.decode(k);
      const val = lb4AffVal.decode(v);
      return {
        client: key.netns_cookie ? `netns:${key.client}` : ip4FromLow32(key.client),
        revNatId: key.rev_nat_id,
        frontend: fes.get(key.rev_nat_id) ?? "",
        backendId: val.backend_id,
        backend: bes.get(val.backend_id) ?? `<backend ${val.backend_id} gone>`,
        idleSeconds: Math.max(0, nowS - val.last_used),
      };
    })
    .sort((a, b) => a.revNatId - b.revNatId || a.client.localeCompare(b.client));
}

/** A service entry with its counters (frontend id and backend ids looked up in kpr_lb4_be). */
export type ServiceEntryWithStats = EntryWithStats & ServiceEntryJson;

/** Attaches the frontend's and each backend's packets/bytes to the entries. */
export function withStats(
  entries: ServiceEntryJson[],
  frontends: Map<number, Traffic>,
  backends: Map<number, Traffic>,
  backendIds: Map<string, number>,
): ServiceEntryWithStats[] {
  const zero = (): Traffic => ({ packets: 0n, bytes: 0n });
  return entries.map(
    (e): ServiceEntryWithStats => ({
      ...e,
      stats: frontends.get(e.id) ?? zero(),
      backends: e.backends.map((b) => {
        const id = backendIds.get(l4Key(b));
        return { ...b, stats: (id !== undefined ? backends.get(id) : undefined) ?? zero() };
      }),
    }),
  );
}

/** "addr:port/PROTO" → backend id, from kpr_lb4_be. */
export function backendIdsByAddress(cfg: Config): Map<string, number> {
  const out = new Map<string, number>();
  for (const [id, name] of backendNames(cfg)) out.set(name, id);
  return out;
}
