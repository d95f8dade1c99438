/**
 * The load-balancing state as map contents (pure, no I/O): the desired content of every LB map
 * from an LbModel, the decoding of map contents back into frontends, and the ordered diff.
 * reconcile.ts does the I/O around it.
 */
import type { Config } from "../config/config.ts";
import { KprError } from "../errors.ts";
import { compareAddr, l4Key } from "../lb/ip.ts";
import type { Backend, Frontend, FrontendType, LbModel, PreviousIds } from "../lb/model.ts";
import {
  ACTIVE_SATURATED,
  ALG,
  BE_F,
  BE_STATE,
  LB_STATE_MAPS,
  type LbStateMap,
  lb4Backend,
  lb4Key,
  lb4Revnat,
  lb4Service,
  lb4SrcrKey,
  META_NAME_LEN,
  META_PORT_NAME_LEN,
  PROTO_NUM,
  protoName,
  SVC_F,
  svcMeta,
  u8Val,
  u16Id,
  u32Id,
} from "./lbmaps.ts";

/** One map entry as raw bytes. */
export interface MapEntry {
  key: Uint8Array;
  value: Uint8Array;
}

/** A map's content: hex of the key → entry (hex makes byte-equal keys equal Map keys). */
export type MapContent = Map<string, MapEntry>;

/** The content of every LB state map. */
export type MapState = Record<LbStateMap, MapContent>;

/** Hex text of bytes (the MapContent key). */
export function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

/** An empty state. */
export function emptyMapState(): MapState {
  return Object.fromEntries(LB_STATE_MAPS.map((m) => [m, new Map()])) as MapState;
}

function put(c: MapContent, key: Uint8Array, value: Uint8Array): void {
  c.set(hex(key), { key, value });
}

/**
 * Hands out zeroed slices of large buffers. Entries are small and numerous: one allocation per
 * entry (and JSC materializing each small array's ArrayBuffer for DataView/Buffer) dominated
 * the cost of programming 100k entries.
 */
class Arena {
  private buf = new Uint8Array(0);
  private off = 0;
  alloc(n: number): Uint8Array {
    if (this.off + n > this.buf.length) {
      this.buf = new Uint8Array(1 << 16);
      this.off = 0;
    }
    const out = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return out;
  }
  encode<T>(
    codec: { size: number; encodeInto(v: T, buf: Uint8Array, off?: number): void },
    v: T,
  ): Uint8Array {
    const b = this.alloc(codec.size);
    codec.encodeInto(v, b, 0);
    return b;
  }
}

function fieldOffset(
  codec: { name: string; fields: readonly { name: string; offset: number }[] },
  name: string,
) {
  const f = codec.fields.find((x) => x.name === name);
  if (!f) throw new KprError(`codec ${codec.name} has no field ${name}`);
  return f.offset;
}
// Slot entries are copies of a template with two fields set (hot loop: no per-entry encode).
const KEY_SLOT = fieldOffset(lb4Key, "slot");
const SVC_BACKEND_ID = fieldOffset(lb4Service, "backend_id");

const TYPE_FLAG: Record<FrontendType, number> = {
  ClusterIP: SVC_F.CLUSTERIP,
  NodePort: SVC_F.NODEPORT,
  ExternalIPs: SVC_F.EXTERNALIP,
  LoadBalancer: SVC_F.LOADBALANCER,
  HostPort: SVC_F.HOSTPORT,
};

/** Frontend kind from master flags (the lowest kind bit), undefined when none is set. */
export function typeFromFlags(flags: number): FrontendType | undefined {
  for (const [t, f] of Object.entries(TYPE_FLAG)) if (flags & f) return t as FrontendType;
  return undefined;
}

/** The service flags kpr programs for a frontend. */
export function frontendFlags(f: Frontend): number {
  let flags = TYPE_FLAG[f.type];
  if (f.scope === "Local") flags |= SVC_F.LOCAL_SCOPE;
  if (f.affinityTimeoutSeconds !== undefined) flags |= SVC_F.AFFINITY;
  if (f.sourceRanges && f.sourceRanges.cidrs.length > 0) {
    flags |= SVC_F.SRC_RANGES;
    if (f.sourceRanges.policy === "deny") flags |= SVC_F.SRC_DENY;
  }
  if (f.frontend.address.startsWith("127.")) flags |= SVC_F.LOOPBACK;
  if (f.frontend.address === "0.0.0.0") flags |= SVC_F.WILDCARD;
  return flags;
}

/**
 * Backend slots of a frontend: active backends first (model order), then terminating ones, and
 * the master's active_count. With 255 or more active backends the terminating ones are left out
 * (they are only a fallback when none is active) and active_count is saturated.
 */
export function backendSlots(f: Frontend): { slots: Backend[]; activeCount: number } {
  const active = f.backends.filter((b) => b.state === "active");
  const terminating = f.backends.filter((b) => b.state !== "active");
  if (active.length >= ACTIVE_SATURATED) return { slots: active, activeCount: ACTIVE_SATURATED };
  return { slots: [...active, ...terminating], activeCount: active.length };
}

function isIp4(a: string): boolean {
  return !a.includes(":");
}

/** Result of modelToMapState: the content and the frontends left out (with why). */
export interface DesiredState {
  state: MapState;
  skipped: { frontend: string; reason: string }[];
}

/**
 * The desired content of every LB map for `model`: master and slot entries, backends (LOCAL
 * flag from Backend.local), reverse NAT, service metadata and source-range LPM entries. IPv6
 * frontends are left out (the datapath is IPv4 only) and listed in `skipped`.
 */
export function modelToMapState(model: LbModel, _cfg: Config): DesiredState {
  const st = emptyMapState();
  const skipped: DesiredState["skipped"] = [];
  const backends = new Map<number, Backend>();
  const arena = new Arena();
  for (const f of model.frontends) {
    const fe = f.frontend;
    if (!isIp4(fe.address)) {
      skipped.push({ frontend: l4Key(fe), reason: "IPv6 frontends are not programmed yet (IPv4 datapath)" });
      continue;
    }
    const proto = PROTO_NUM[fe.protocol];
    const { slots, activeCount } = backendSlots(f);
    if (slots.length > 0xffff)
      throw new KprError(
        `program frontend ${l4Key(fe)}: ${slots.length} backends, at most 65535 fit one frontend`,
      );
    const flags = frontendFlags(f);
    const masterKey = arena.encode(lb4Key, { address: fe.address, dport: fe.port, slot: 0, proto, scope: 0 });
    put(
      st.kpr_lb4_svc,
      masterKey,
      arena.encode(lb4Service, {
        backend_id: 0,
        affinity_timeout: f.affinityTimeoutSeconds ?? 0,
        count: slots.length,
        rev_nat_id: f.id,
        flags,
        // The datapath selects at random for every algorithm (no Maglev tables yet): say so
        // honestly in the maps rather than promise consistent hashing.
        algorithm: ALG.RANDOM,
        active_count: activeCount,
      }),
    );
    // Slots carry only what the datapath reads (backend_id) plus rev_nat_id for inspection, so a
    // change of the master's count or flags does not rewrite every slot.
    const slotValue = lb4Service.encode({
      backend_id: 0,
      affinity_timeout: 0,
      count: 0,
      rev_nat_id: f.id,
      flags: 0,
      algorithm: 0,
      active_count: 0,
    });
    slots.forEach((b, i) => {
      const key = arena.alloc(masterKey.length);
      key.set(masterKey);
      key[KEY_SLOT] = (i + 1) & 0xff;
      key[KEY_SLOT + 1] = (i + 1) >> 8;
      const value = arena.alloc(slotValue.length);
      value.set(slotValue);
      for (let j = 0; j < 4; j++) value[SVC_BACKEND_ID + j] = (b.id >>> (8 * j)) & 0xff;
      put(st.kpr_lb4_svc, key, value);
      const seen = backends.get(b.id);
      if (seen && (seen.address !== b.address || seen.port !== b.port || seen.protocol !== b.protocol))
        throw new KprError(`program backend ${b.id}: id names both ${l4Key(seen)} and ${l4Key(b)}`);
      // a backend shared by several frontends is terminating for one only if it is for all
      if (!seen || (seen.state !== "active" && b.state === "active")) backends.set(b.id, b);
    });
    put(
      st.kpr_lb4_rnat,
      arena.encode(u16Id, { v: f.id }),
      arena.encode(lb4Revnat, { address: fe.address, port: fe.port }),
    );
    put(
      st.kpr_svc_meta,
      arena.encode(u16Id, { v: f.id }),
      arena.encode(svcMeta, {
        name: truncateUtf8(f.service, META_NAME_LEN),
        port_name: truncateUtf8(f.portName, META_PORT_NAME_LEN),
        health_check_port: f.healthCheckNodePort ?? 0,
        reject: f.reject || slots.length === 0 ? 1 : 0,
      }),
    );
    for (const cidr of f.sourceRanges?.cidrs ?? []) {
      const [addr, lenText] = cidr.split("/");
      if (!addr || !isIp4(addr)) continue; // IPv6 ranges cannot match an IPv4 frontend
      const len = lenText === undefined ? 32 : Number(lenText);
      put(
        st.kpr_lb4_srcr,
        lb4SrcrKey.encode({ prefixlen: 32 + len, rev_nat_id: f.id, address: maskIp4(addr, len) }),
        u8Val.encode({ v: 1 }),
      );
    }
  }
  for (const b of backends.values()) {
    put(
      st.kpr_lb4_be,
      arena.encode(u32Id, { v: b.id }),
      arena.encode(lb4Backend, {
        address: b.address,
        port: b.port,
        proto: PROTO_NUM[b.protocol],
        state: b.state === "active" ? BE_STATE.ACTIVE : BE_STATE.TERMINATING,
        flags: b.local ? BE_F.LOCAL : 0,
      }),
    );
  }
  return { state: st, skipped };
}

function maskIp4(addr: string, len: number): string {
  const parts = addr.split(".").map(Number);
  const n = ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
  const m = len === 0 ? 0 : (n & (0xffffffff << (32 - len))) >>> 0;
  return [m >>> 24, (m >>> 16) & 255, (m >>> 8) & 255, m & 255].join(".");
}

function truncateUtf8(s: string, max: number): string {
  let out = s;
  while (new TextEncoder().encode(out).length > max) out = out.slice(0, -1);
  return out;
}

// ---- decoding ------------------------------------------------------------------------------

/** Problems found while decoding (dangling slot, missing backend): reported, not fatal. */
export interface DecodeResult {
  frontends: Frontend[];
  warnings: string[];
}

/**
 * Decodes map contents back into frontends (the model shape; nodeName/zone are not stored).
 * Backends come back in model order (address, port); sorted by frontend id.
 */
export function mapStateToFrontends(st: MapState): DecodeResult {
  const warnings: string[] = [];
  const bes = new Map<number, ReturnType<typeof lb4Backend.decode>>();
  for (const e of st.kpr_lb4_be.values()) bes.set(u32Id.decode(e.key).v, lb4Backend.decode(e.value));
  const metas = new Map<number, ReturnType<typeof svcMeta.decode>>();
  for (const e of st.kpr_svc_meta.values()) metas.set(u16Id.decode(e.key).v, svcMeta.decode(e.value));
  const ranges = new Map<number, string[]>();
  for (const e of st.kpr_lb4_srcr.values()) {
    const k = lb4SrcrKey.decode(e.key);
    const list = ranges.get(k.rev_nat_id) ?? [];
    list.push(`${k.address}/${k.prefixlen - 32}`);
    ranges.set(k.rev_nat_id, list);
  }
  const slots = new Map<string, Map<number, number>>(); // frontend key hex (slot 0) → slot → backend id
  const masters: { key: ReturnType<typeof lb4Key.decode>; val: ReturnType<typeof lb4Service.decode> }[] = [];
  for (const e of st.kpr_lb4_svc.values()) {
    const k = lb4Key.decode(e.key);
    const v = lb4Service.decode(e.value);
    if (k.slot === 0) {
      masters.push({ key: k, val: v });
      continue;
    }
    const fk = hex(lb4Key.encode({ ...k, slot: 0 }));
    const m = slots.get(fk) ?? new Map<number, number>();
    m.set(k.slot, v.backend_id);
    slots.set(fk, m);
  }
  const out: Frontend[] = [];
  for (const { key, val } of masters) {
    const protocol = protoName(key.proto);
    const fe = `${key.address}:${key.dport}/${protocol ?? key.proto}`;
    const type = typeFromFlags(val.flags);
    if (!protocol || !type) {
      warnings.push(`frontend ${fe}: unknown protocol or type flags 0x${val.flags.toString(16)}`);
      continue;
    }
    const mySlots = slots.get(hex(lb4Key.encode({ ...key, slot: 0 }))) ?? new Map<number, number>();
    const backends: Backend[] = [];
    for (let s = 1; s <= val.count; s++) {
      const id = mySlots.get(s);
      if (id === undefined) {
        warnings.push(`frontend ${fe}: slot ${s} of ${val.count} is missing`);
        continue;
      }
      const b = bes.get(id);
      if (!b) {
        warnings.push(`frontend ${fe}: slot ${s} names backend ${id}, which is missing`);
        continue;
      }
      const bp = protoName(b.proto) ?? protocol;
      // slot position decides the state this frontend uses (active_count), as the datapath does
      const active = val.active_count === ACTIVE_SATURATED || s <= val.active_count;
      backends.push({
        id,
        address: b.address,
        port: b.port,
        protocol: bp,
        state: active ? "active" : "terminating",
        local: (b.flags & BE_F.LOCAL) !== 0,
      });
    }
    backends.sort((a, b) => compareAddr(a.address, b.address) || a.port - b.port);
    const meta = metas.get(val.rev_nat_id);
    const f: Frontend = {
      id: val.rev_nat_id,
      frontend: { address: key.address, port: key.dport, protocol },
      type,
      service: meta?.name ?? "",
      portName: meta?.port_name ?? "",
      backends,
      scope: val.flags & SVC_F.LOCAL_SCOPE ? "Local" : "Cluster",
    };
    if (val.flags & SVC_F.AFFINITY) f.affinityTimeoutSeconds = val.affinity_timeout;
    if (val.flags & SVC_F.SRC_RANGES)
      f.sourceRanges = {
        cidrs: (ranges.get(val.rev_nat_id) ?? []).sort(),
        policy: val.flags & SVC_F.SRC_DENY ? "deny" : "allow",
      };
    if (meta?.health_check_port) f.healthCheckNodePort = meta.health_check_port;
    if (meta?.reject) f.reject = true;
    out.push(f);
  }
  out.sort((a, b) => a.id - b.id);
  return { frontends: out, warnings };
}

/** Frontend and backend ids in use (keys "address:port/PROTO"), for translate's `previous`. */
export function previousIdsFromState(st: MapState): PreviousIds {
  const frontends = new Map<string, number>();
  const backends = new Map<string, number>();
  for (const e of st.kpr_lb4_svc.values()) {
    const k = lb4Key.decode(e.key);
    if (k.slot !== 0) continue;
    const protocol = protoName(k.proto);
    if (protocol)
      frontends.set(
        l4Key({ address: k.address, port: k.dport, protocol }),
        lb4Service.decode(e.value).rev_nat_id,
      );
  }
  for (const e of st.kpr_lb4_be.values()) {
    const b = lb4Backend.decode(e.value);
    const protocol = protoName(b.proto);
    if (protocol) backends.set(l4Key({ address: b.address, port: b.port, protocol }), u32Id.decode(e.key).v);
  }
  return { frontends, backends };
}

// ---- diff ----------------------------------------------------------------------------------

/** One map write. `prev` is the value before (undefined: the key was absent). */
export interface MapOp {
  map: LbStateMap;
  kind: "update" | "delete";
  key: Uint8Array;
  /** new value (update only) */
  value?: Uint8Array;
  prev?: Uint8Array;
}

function isMasterKey(key: Uint8Array): boolean {
  // struct kpr_lb4_key.slot: u16 host order at offset 6
  return key[6] === 0 && key[7] === 0;
}

/**
 * Phase of an op (DESIGN.md's update order): new backends before the slots that name them,
 * reverse-NAT/metadata/source ranges before the master that uses them, slots before the
 * master's count; deletions in reverse: masters (count shrunk or frontend gone), then slots,
 * then per-frontend data, then backends no longer referenced.
 */
function phase(op: MapOp): number {
  const svc = op.map === "kpr_lb4_svc";
  if (op.kind === "update") {
    if (op.map === "kpr_lb4_be") return 0;
    if (!svc) return 1;
    return isMasterKey(op.key) ? 3 : 2;
  }
  if (svc) return isMasterKey(op.key) ? 4 : 5;
  if (op.map === "kpr_lb4_be") return 7;
  return 6;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The ordered writes that turn `current` into `desired` (empty when they are equal). */
export function diffMapState(current: MapState, desired: MapState): MapOp[] {
  // buckets by phase; within a phase, map order then key bytes, so plans are deterministic
  const buckets: { op: MapOp; k: string }[][][] = Array.from({ length: 8 }, () =>
    LB_STATE_MAPS.map(() => []),
  );
  LB_STATE_MAPS.forEach((map, mi) => {
    const cur = current[map];
    const want = desired[map];
    for (const [k, e] of want) {
      const prev = cur.get(k);
      if (prev && bytesEqual(prev.value, e.value)) continue;
      const op: MapOp = { map, kind: "update", key: e.key, value: e.value };
      if (prev) op.prev = prev.value;
      buckets[phase(op)]![mi]!.push({ op, k });
    }
    for (const [k, e] of cur) {
      if (want.has(k)) continue;
      const op: MapOp = { map, kind: "delete", key: e.key, prev: e.value };
      buckets[phase(op)]![mi]!.push({ op, k });
    }
  });
  const out: MapOp[] = [];
  for (const perMap of buckets)
    for (const list of perMap) {
      list.sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));
      for (const x of list) out.push(x.op);
    }
  return out;
}

/** Entries each map holds at its fullest while `ops` run: upserts land before deletions. */
export function peakEntries(current: MapState, ops: MapOp[]): Record<LbStateMap, number> {
  const peak = Object.fromEntries(LB_STATE_MAPS.map((m) => [m, current[m].size])) as Record<
    LbStateMap,
    number
  >;
  for (const op of ops) if (op.kind === "update" && !op.prev) peak[op.map]++;
  return peak;
}

/** Counts of a plan for summaries: per map, added / changed / removed. */
export function summarizeOps(
  ops: MapOp[],
): Record<LbStateMap, { added: number; changed: number; removed: number }> {
  const s = Object.fromEntries(LB_STATE_MAPS.map((m) => [m, { added: 0, changed: 0, removed: 0 }])) as Record<
    LbStateMap,
    { added: number; changed: number; removed: number }
  >;
  for (const op of ops) {
    const c = s[op.map];
    if (op.kind === "delete") c.removed++;
    else if (op.prev) c.changed++;
    else c.added++;
  }
  return s;
}

/** Frontends (by rev-NAT id) added, changed and removed by a plan. */
export function frontendChanges(ops: MapOp[]): { added: number; changed: number; removed: number } {
  const added = new Set<number>();
  const removed = new Set<number>();
  const touched = new Set<number>();
  for (const op of ops) {
    let id: number;
    if (op.map === "kpr_lb4_svc") {
      id = lb4Service.decode((op.value ?? op.prev)!).rev_nat_id;
      if (isMasterKey(op.key) && op.kind === "delete") removed.add(id);
      else if (isMasterKey(op.key) && !op.prev) added.add(id);
    } else if (op.map === "kpr_lb4_be") continue;
    else id = op.key[0]! | (op.key[1]! << 8); // u16 rev_nat_id (srcr: prefixlen first)
    if (op.map === "kpr_lb4_srcr") id = lb4SrcrKey.decode(op.key).rev_nat_id;
    touched.add(id);
  }
  let changed = 0;
  for (const id of touched) if (!added.has(id) && !removed.has(id)) changed++;
  return { added: added.size, changed, removed: removed.size };
}
