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
  SCOPE,
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
const KEY_SCOPE = fieldOffset(lb4Key, "scope");
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
  if (f.dropNoLocal) flags |= SVC_F.DROP_NO_LOCAL;
  if (f.internalBackends) flags |= SVC_F.TWO_SCOPES;
  return flags;
}

/** The flags of a two-scope frontend's internal master: its kind and behaviour, Cluster scope. */
function internalFlags(f: Frontend): number {
  return frontendFlags(f) & ~(SVC_F.LOCAL_SCOPE | SVC_F.DROP_NO_LOCAL | SVC_F.TWO_SCOPES);
}

/** A frontend's slots (backendSlots) and, for a two-scope one, its internal slots. */
export interface FrontendSlots {
  slots: Backend[];
  activeCount: number;
  internal?: { slots: Backend[]; activeCount: number };
}

/**
 * Backend slots of a frontend: active backends first (model order), then terminating ones, and
 * the master's active_count. With 255 or more active backends the terminating ones are left out
 * (they are only a fallback when none is active) and active_count is saturated.
 */
export function backendSlots(f: Frontend): FrontendSlots {
  const ext = slotsOf(f.backends);
  if (!f.internalBackends) return ext;
  return { ...ext, internal: slotsOf(f.internalBackends) };
}

function slotsOf(list: Backend[]): { slots: Backend[]; activeCount: number } {
  const active = list.filter((b) => b.state === "active");
  const terminating = list.filter((b) => b.state !== "active");
  if (active.length >= ACTIVE_SATURATED) return { slots: active, activeCount: ACTIVE_SATURATED };
  return { slots: [...active, ...terminating], activeCount: active.length };
}

/** Every slot of a frontend, external then internal (a backend may be in both). */
function allSlots(s: FrontendSlots): Backend[] {
  return s.internal ? [...s.slots, ...s.internal.slots] : s.slots;
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
 * flag from Backend.local), reverse NAT, service metadata (with each frontend's digest) and
 * source-range LPM entries. IPv6 frontends are left out (the datapath is IPv4 only) and listed
 * in `skipped`.
 */
export function modelToMapState(model: LbModel, cfg: Config): DesiredState {
  const enc = encodeModel(model, cfg.loadBalancer.algorithm === "maglev");
  return { state: encodedState(enc, enc.frontends, enc.backendIds()), skipped: enc.skipped };
}

// ---- the model encoded per frontend, with digests --------------------------------------------

/** One frontend's desired entries, encoded. */
export interface FrontendEnc {
  id: number;
  /** master key (slot 0) */
  key: Uint8Array;
  master: Uint8Array;
  /** backend id of slot i + 1 */
  backendIds: number[];
  /** a two-scope frontend's internal entries: master key and value, and its slots' backend ids */
  internal?: { key: Uint8Array; master: Uint8Array; backendIds: number[] };
  rnat: Uint8Array;
  /** kpr_svc_meta value, digest included */
  meta: Uint8Array;
  srcrKeys: Uint8Array[];
  /** the digest as two u32 halves (low, high), as stored little-endian in meta */
  digestLo: number;
  digestHi: number;
}

/**
 * Backend id → dense index. Ids are small integers handed out by translate, so an array beats a
 * Map (whose inserts dominated encoding 100k backends); a Map takes any id past the array's reach.
 */
export class IdIndex {
  private dense = new Int32Array(1024).fill(-1);
  private sparse = new Map<number, number>();
  private ids: number[] = [];
  get size(): number {
    return this.ids.length;
  }
  get(id: number): number | undefined {
    if (id < this.dense.length) {
      const j = this.dense[id]!;
      return j < 0 ? undefined : j;
    }
    return this.sparse.get(id);
  }
  has(id: number): boolean {
    return this.get(id) !== undefined;
  }
  /** Adds `id` with the next index (it must be absent); returns the index. */
  add(id: number): number {
    const j = this.ids.length;
    this.ids.push(id);
    if (id < 1 << 22) {
      if (id >= this.dense.length) {
        let n = this.dense.length;
        while (n <= id) n *= 2;
        const grown = new Int32Array(n).fill(-1);
        grown.set(this.dense);
        this.dense = grown;
      }
      this.dense[id] = j;
    } else this.sparse.set(id, j);
    return j;
  }
  /** Ids in index order. */
  keys(): readonly number[] {
    return this.ids;
  }
}

/** A model encoded for the maps: frontends with digests and every backend's value. */
export interface EncodedModel {
  frontends: FrontendEnc[];
  byId: Map<number, FrontendEnc>;
  /** backend id → index into `beValues` (12-byte values) */
  beIndex: IdIndex;
  beValues: Uint8Array;
  backendIds(): Iterable<number>;
  beValue(id: number): Uint8Array | undefined;
  skipped: DesiredState["skipped"];
}

// Offsets of the fields written by hand in hot loops (checked against BTF through the codecs).
const BE_SIZE = lb4Backend.size;
const BE_ADDR = fieldOffset(lb4Backend, "address");
const BE_PORT = fieldOffset(lb4Backend, "port");
const BE_PROTO = fieldOffset(lb4Backend, "proto");
const BE_STATE_OFF = fieldOffset(lb4Backend, "state");
const BE_FLAGS = fieldOffset(lb4Backend, "flags");
/** Offset of kpr_svc_meta.digest. */
export const META_DIGEST = fieldOffset(svcMeta, "digest");
/** Bumped when what a digest covers changes, so old digests never match. */
const DIGEST_VERSION = 3;

/** "a.b.c.d" → its 4 bytes at `out[off]`; false when the text is not a plain dotted quad. */
function putIp4(s: string, out: Uint8Array, off: number): boolean {
  let part = 0;
  let n = 0;
  let digits = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || part > 2) return false;
      out[off + part++] = n;
      n = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      n = n * 10 + (c - 48);
      if (++digits > 3 || n > 255) return false;
    } else return false;
  }
  if (digits === 0 || part !== 3) return false;
  out[off + 3] = n;
  return true;
}

/** Reads the digest of a kpr_svc_meta value (two u32 halves; 0,0 = none). */
export function metaDigest(value: Uint8Array, off = 0): [number, number] {
  const dv = new DataView(value.buffer, value.byteOffset + off, value.byteLength - off);
  return [dv.getUint32(META_DIGEST, true), dv.getUint32(META_DIGEST + 4, true)];
}

/** Writes a backend's 12-byte value at `out[o]`. */
function putBackendValue(b: Backend, active: boolean, local: boolean, out: Uint8Array, o: number): void {
  if (!putIp4(b.address, out, o + BE_ADDR))
    throw new KprError(`program backend ${b.id}: "${b.address}" is not an IPv4 address`);
  out[o + BE_PORT] = b.port >> 8;
  out[o + BE_PORT + 1] = b.port & 0xff;
  out[o + BE_PROTO] = PROTO_NUM[b.protocol];
  out[o + BE_STATE_OFF] = active ? BE_STATE.ACTIVE : BE_STATE.TERMINATING;
  out[o + BE_FLAGS] = local ? BE_F.LOCAL : 0;
}

/**
 * How a backend named by several frontends is programmed: active when any of them uses it as
 * active; LOCAL as the active uses say (or, with none active, any use). Counts of uses make it
 * independent of the order the frontends come in.
 */
interface BackendUses {
  all: number;
  active: number;
  localActive: number;
  localAny: number;
}

function usesActive(u: BackendUses): boolean {
  return u.active > 0;
}
function usesLocal(u: BackendUses): boolean {
  return u.active > 0 ? u.localActive > 0 : u.localAny > 0;
}

const NS_FLAGS = SVC_F.NODEPORT | SVC_F.EXTERNALIP | SVC_F.LOADBALANCER | SVC_F.HOSTPORT;

/** Encodes single frontends given their backends' values (shares buffers between calls). */
class FrontendEncoder {
  /** `maglev`: masters of north-south frontends with backends say KPR_ALG_MAGLEV (they get a table) */
  constructor(private readonly maglev = false) {}
  private arena = new Arena();
  private scratch = new Uint8Array(4096);
  private words = new Uint32Array(this.scratch.buffer);

  /** `beWord(id, k)`: word k (0..2) of backend `id`'s value. */
  encode(f: Frontend, sel: FrontendSlots, beWords: Uint32Array, beIdx: (id: number) => number): FrontendEnc {
    const { slots, activeCount } = sel;
    const arena = this.arena;
    const fe = f.frontend;
    const proto = PROTO_NUM[fe.protocol];
    const key = arena.encode(lb4Key, { address: fe.address, dport: fe.port, slot: 0, proto, scope: 0 });
    const master = arena.encode(lb4Service, {
      backend_id: 0,
      affinity_timeout: f.affinityTimeoutSeconds ?? 0,
      count: slots.length,
      rev_nat_id: f.id,
      flags: frontendFlags(f),
      // the frontends syncMaglev (maglevmaps.ts) gives a table: north-south with backends
      algorithm: this.maglev && slots.length > 0 && frontendFlags(f) & NS_FLAGS ? ALG.MAGLEV : ALG.RANDOM,
      active_count: activeCount,
    });
    const rnat = arena.encode(lb4Revnat, { address: fe.address, port: fe.port });
    const meta = arena.encode(svcMeta, {
      name: truncateUtf8(f.service, META_NAME_LEN),
      port_name: truncateUtf8(f.portName, META_PORT_NAME_LEN),
      health_check_port: f.healthCheckNodePort ?? 0,
      reject: f.reject || (slots.length === 0 && !f.dropNoLocal) ? 1 : 0,
      proto,
      address: fe.address,
      port: fe.port,
      digest: 0n,
    });
    const srcrKeys: Uint8Array[] = [];
    let matchesAll = false;
    for (const cidr of f.sourceRanges?.cidrs ?? []) {
      const [addr, lenText] = cidr.split("/");
      if (!addr || !isIp4(addr)) continue; // IPv6 ranges cannot match an IPv4 frontend
      const len = lenText === undefined ? 32 : Number(lenText);
      if (len === 0) matchesAll = true;
      srcrKeys.push(
        lb4SrcrKey.encode({ prefixlen: 32 + len, rev_nat_id: f.id, address: maskIp4(addr, len) }),
      );
    }
    // the node marker (0.0.0.0/32, see abi.h KPR_SRCR_V_NODE); a /0 range already matches all
    if (f.sourceRanges?.nodeSourceInList && !matchesAll)
      srcrKeys.push(lb4SrcrKey.encode({ prefixlen: 64, rev_nat_id: f.id, address: "0.0.0.0" }));
    const backendIds = slots.map((b) => b.id);
    let internal: FrontendEnc["internal"];
    if (sel.internal) {
      const ikey = arena.alloc(key.length);
      ikey.set(key);
      ikey[KEY_SCOPE] = SCOPE.INTERNAL;
      internal = {
        key: ikey,
        master: arena.encode(lb4Service, {
          backend_id: 0,
          affinity_timeout: f.affinityTimeoutSeconds ?? 0,
          count: sel.internal.slots.length,
          rev_nat_id: f.id,
          flags: internalFlags(f),
          algorithm: ALG.RANDOM, // socket LB selects at random
          active_count: sel.internal.activeCount,
        }),
        backendIds: sel.internal.slots.map((b) => b.id),
      };
    }
    // The digest covers which backends a frontend's slots hold, per region (active, terminating)
    // and scope, not their order: the slots are laid out at write time, keeping each backend in
    // the slot it has (stableSlotOrder), so a one-endpoint change rewrites a slot or two.
    const allIds = [...regionsSorted(backendIds, activeCount)];
    if (internal) allIds.push(...regionsSorted(internal.backendIds, sel.internal!.activeCount));

    // digest input: version, key, master, rnat, meta (digest 0), srcr keys, internal key and
    // master, (id, value) per slot (external, then internal); every part is a multiple of 4
    // bytes, so slots are copied as u32 words
    const need =
      4 +
      key.length +
      master.length +
      rnat.length +
      meta.length +
      12 * srcrKeys.length +
      (internal ? internal.key.length + internal.master.length : 0) +
      16 * allIds.length;
    if (need > this.scratch.length) {
      this.scratch = new Uint8Array(need * 2);
      this.words = new Uint32Array(this.scratch.buffer);
    }
    const scratch = this.scratch;
    const words = this.words;
    let p = 0;
    scratch[p++] = DIGEST_VERSION;
    scratch[p++] = 0;
    scratch[p++] = srcrKeys.length & 0xff;
    scratch[p++] = srcrKeys.length >> 8;
    scratch.set(key, p);
    p += key.length;
    scratch.set(master, p);
    p += master.length;
    scratch.set(rnat, p);
    p += rnat.length;
    scratch.set(meta, p);
    p += meta.length;
    for (const k of srcrKeys) {
      scratch.set(k, p);
      p += k.length;
    }
    if (internal) {
      scratch.set(internal.key, p);
      p += internal.key.length;
      scratch.set(internal.master, p);
      p += internal.master.length;
    }
    let w = p >> 2;
    for (let i = 0; i < allIds.length; i++) {
      const o = beIdx(allIds[i]!) * 3; // BE_SIZE is 12 (abi.h asserts it)
      words[w] = allIds[i]!;
      words[w + 1] = beWords[o]!;
      words[w + 2] = beWords[o + 1]!;
      words[w + 3] = beWords[o + 2]!;
      w += 4;
    }
    p = w << 2;
    const h = Bun.hash.wyhash(scratch.subarray(0, p), 0x6b7072n);
    let digestLo = Number(h & 0xffffffffn);
    const digestHi = Number(h >> 32n);
    if (digestLo === 0 && digestHi === 0) digestLo = 1; // 0 means "no digest"
    const dv = new DataView(meta.buffer, meta.byteOffset, meta.byteLength);
    dv.setUint32(META_DIGEST, digestLo, true);
    dv.setUint32(META_DIGEST + 4, digestHi, true);
    const enc: FrontendEnc = { id: f.id, key, master, backendIds, rnat, meta, srcrKeys, digestLo, digestHi };
    if (internal) enc.internal = internal;
    return enc;
  }
}

/** Ids with each region (slots 1..active, the rest) sorted: the digest's order-free view. */
function regionsSorted(ids: number[], activeCount: number): number[] {
  const a = activeRegion(ids.length, activeCount);
  const byNum = (x: number, y: number) => x - y;
  return [...ids.slice(0, a).sort(byNum), ...ids.slice(a).sort(byNum)];
}

/** How many of `n` slots are active for a master's active_count (255: all; 0: none are). */
function activeRegion(n: number, activeCount: number): number {
  return activeCount === ACTIVE_SATURATED ? n : Math.min(activeCount, n);
}

/**
 * The slot order for backends `want` (active ones first: `activeCount` of them) that keeps every
 * backend in the slot `current` has it in, when that slot is in the region (active or
 * terminating) it belongs to now; the others fill the free slots in `want`'s order. So a
 * one-endpoint change rewrites the slot it leaves or takes, not every slot after it.
 */
export function stableSlotOrder(want: number[], activeCount: number, current: readonly number[]): number[] {
  if (current.length === 0) return want;
  const n = want.length;
  const a = activeRegion(n, activeCount);
  const region = new Map<number, boolean>(); // id → active?
  for (let i = 0; i < n; i++) region.set(want[i]!, i < a);
  const out = new Array<number>(n).fill(0);
  const placed = new Set<number>();
  for (let i = 0; i < Math.min(current.length, n); i++) {
    const id = current[i]!;
    if (region.get(id) === i < a && !placed.has(id)) {
      out[i] = id;
      placed.add(id);
    }
  }
  let ai = 0;
  let ti = a;
  for (let i = 0; i < n; i++) {
    const id = want[i]!;
    if (placed.has(id)) continue;
    if (i < a) {
      while (out[ai] !== 0) ai++;
      out[ai] = id;
    } else {
      while (out[ti] !== 0) ti++;
      out[ti] = id;
    }
  }
  return out;
}

const SVC_ACTIVE = fieldOffset(lb4Service, "active_count");

/** The backend ids in slots 1.. of the frontend whose master key is `key`, in `st` (to the first gap). */
function currentSlotIds(st: MapState, key: Uint8Array): number[] {
  const out: number[] = [];
  const sk = key.slice();
  for (let s = 1; s <= 0xffff; s++) {
    sk[KEY_SLOT] = s & 0xff;
    sk[KEY_SLOT + 1] = s >> 8;
    const e = st.kpr_lb4_svc.get(hex(sk));
    if (!e) break;
    const v = e.value;
    out.push(
      (v[SVC_BACKEND_ID]! |
        (v[SVC_BACKEND_ID + 1]! << 8) |
        (v[SVC_BACKEND_ID + 2]! << 16) |
        (v[SVC_BACKEND_ID + 3]! << 24)) >>>
        0,
    );
  }
  return out;
}

/**
 * `f` with its slots (each scope's) laid out to keep the slots its backends have now:
 * `current(masterKey, internal)` gives the ids in slots 1.. of that scope's entries.
 */
function alignSlots(
  f: FrontendEnc,
  current: (masterKey: Uint8Array, internal: boolean) => readonly number[],
): FrontendEnc {
  const backendIds = stableSlotOrder(f.backendIds, f.master[SVC_ACTIVE]!, current(f.key, false));
  const i = f.internal;
  if (!i) return { ...f, backendIds };
  const ids = stableSlotOrder(i.backendIds, i.master[SVC_ACTIVE]!, current(i.key, true));
  return { ...f, backendIds, internal: { ...i, backendIds: ids } };
}

/** `f` aligned to the slots map content `st` holds for it. */
export function alignToState(f: FrontendEnc, st: MapState): FrontendEnc {
  return alignSlots(f, (key) => currentSlotIds(st, key));
}

/** `f` aligned to the frontend's previous encoding (none: as encoded). */
function alignToPrevious(f: FrontendEnc, prev: FrontendEnc | undefined): FrontendEnc {
  if (!prev) return f;
  return alignSlots(f, (_key, internal) => (internal ? (prev.internal?.backendIds ?? []) : prev.backendIds));
}

function ipv6Skip(f: Frontend): { frontend: string; reason: string } {
  return { frontend: l4Key(f.frontend), reason: "IPv6 frontends are not programmed yet (IPv4 datapath)" };
}

function checkSlots(f: Frontend, n: number): void {
  if (n > 0xffff)
    throw new KprError(
      `program frontend ${l4Key(f.frontend)}: ${n} backends, at most 65535 fit one frontend`,
    );
}

/**
 * Encodes `model` frontend by frontend. Each frontend's digest covers every byte it programs:
 * master key and value, slots (backend ids), reverse NAT, metadata, source ranges and the values
 * of the backends its slots name, so equal digests mean equal entries. `maglev`: masters of
 * north-south frontends with backends say KPR_ALG_MAGLEV (syncMaglev gives them a table).
 */
export function encodeModel(model: LbModel, maglev = false): EncodedModel {
  const skipped: DesiredState["skipped"] = [];
  // backends first: a backend shared by several frontends is terminating for one only if it is
  // for all, and its value is part of each frontend's digest
  const beIndex = new IdIndex();
  const beList: Backend[] = [];
  const uses: BackendUses[] = [];
  const v4: { f: Frontend; sel: FrontendSlots }[] = [];
  for (const f of model.frontends) {
    if (!isIp4(f.frontend.address)) {
      skipped.push(ipv6Skip(f));
      continue;
    }
    const sel = backendSlots(f);
    checkSlots(f, sel.slots.length);
    if (sel.internal) checkSlots(f, sel.internal.slots.length);
    const slots = allSlots(sel);
    for (let i = 0; i < slots.length; i++) {
      const b = slots[i]!;
      let j = beIndex.get(b.id);
      if (j === undefined) {
        j = beIndex.add(b.id);
        beList.push(b);
        uses.push({ all: 0, active: 0, localActive: 0, localAny: 0 });
      } else {
        const seen = beList[j]!;
        if (
          seen !== b &&
          (seen.address !== b.address || seen.port !== b.port || seen.protocol !== b.protocol)
        )
          throw new KprError(`program backend ${b.id}: id names both ${l4Key(seen)} and ${l4Key(b)}`);
      }
      countUse(uses[j]!, b, 1);
    }
    v4.push({ f, sel });
  }
  // 12-byte values, read back as three u32 words when hashed
  const beValues = new Uint8Array(beList.length * BE_SIZE);
  const beWords = new Uint32Array(beValues.buffer);
  for (let bi = 0; bi < beList.length; bi++)
    putBackendValue(beList[bi]!, usesActive(uses[bi]!), usesLocal(uses[bi]!), beValues, bi * BE_SIZE);

  const encoder = new FrontendEncoder(maglev);
  const beIdx = (id: number) => beIndex.get(id)!;
  const frontends: FrontendEnc[] = [];
  const byId = new Map<number, FrontendEnc>();
  for (const { f, sel } of v4) {
    const enc = encoder.encode(f, sel, beWords, beIdx);
    frontends.push(enc);
    byId.set(f.id, enc);
  }
  return {
    frontends,
    byId,
    beIndex,
    beValues,
    backendIds: () => beIndex.keys(),
    beValue: (id) => {
      const i = beIndex.get(id);
      return i === undefined ? undefined : beValues.subarray(i * BE_SIZE, (i + 1) * BE_SIZE);
    },
    skipped,
  };
}

function countUse(u: BackendUses, b: Backend, n: 1 | -1): void {
  u.all += n;
  if (b.state === "active") {
    u.active += n;
    if (b.local) u.localActive += n;
  }
  if (b.local) u.localAny += n;
}

// Slot values carry only what the datapath reads (backend_id) plus rev_nat_id for inspection,
// so a change of the master's count or flags does not rewrite every slot.
const SVC_REV_NAT = fieldOffset(lb4Service, "rev_nat_id");

/** Adds one frontend's entries to `st` (key views share the encoded buffers). */
function addFrontend(st: MapState, f: FrontendEnc, arena: Arena): void {
  addSlots(st, f.id, f.key, f.master, f.backendIds, arena);
  if (f.internal) addSlots(st, f.id, f.internal.key, f.internal.master, f.internal.backendIds, arena);
  const idKey = arena.encode(u16Id, { v: f.id });
  put(st.kpr_lb4_rnat, idKey, f.rnat);
  put(st.kpr_svc_meta, idKey, f.meta);
  for (const k of f.srcrKeys) put(st.kpr_lb4_srcr, k, SRCR_VALUES[srcrKind(k)]);
}

/** A master and its slots (one scope of a frontend). */
function addSlots(
  st: MapState,
  id: number,
  masterKey: Uint8Array,
  master: Uint8Array,
  backendIds: number[],
  arena: Arena,
): void {
  put(st.kpr_lb4_svc, masterKey, master);
  for (let i = 0; i < backendIds.length; i++) {
    const key = arena.alloc(masterKey.length);
    key.set(masterKey);
    key[KEY_SLOT] = (i + 1) & 0xff;
    key[KEY_SLOT + 1] = (i + 1) >> 8;
    const value = arena.alloc(lb4Service.size);
    const be = backendIds[i]!;
    for (let j = 0; j < 4; j++) value[SVC_BACKEND_ID + j] = (be >>> (8 * j)) & 0xff;
    value[SVC_REV_NAT] = id & 0xff;
    value[SVC_REV_NAT + 1] = id >> 8;
    put(st.kpr_lb4_svc, key, value);
  }
}

/** What a kpr_lb4_srcr key is (its value follows from it: abi.h KPR_SRCR_V_*). */
function srcrKind(key: Uint8Array): "range" | "all" | "node" {
  const k = lb4SrcrKey.decode(key);
  if (k.prefixlen === 32) return "all";
  if (k.prefixlen === 64 && k.address === "0.0.0.0") return "node";
  return "range";
}
const SRCR_VALUES = {
  range: u8Val.encode({ v: 1 }),
  all: u8Val.encode({ v: 2 }),
  node: u8Val.encode({ v: 3 }),
} as const;

/** The map content of some frontends and backends of an encoded model. */
export function encodedState(
  enc: EncodedModel,
  frontends: Iterable<FrontendEnc>,
  backends: Iterable<number>,
): MapState {
  const st = emptyMapState();
  const arena = new Arena();
  for (const f of frontends) addFrontend(st, f, arena);
  for (const id of backends) {
    const v = enc.beValue(id);
    if (v) put(st.kpr_lb4_be, arena.encode(u32Id, { v: id }), v);
  }
  return st;
}

function maskIp4(addr: string, len: number): string {
  const parts = addr.split(".").map(Number);
  const n = ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
  const m = len === 0 ? 0 : (n & (0xffffffff << (32 - len))) >>> 0;
  return [m >>> 24, (m >>> 16) & 255, (m >>> 8) & 255, m & 255].join(".");
}

const utf8 = new TextEncoder();

function truncateUtf8(s: string, max: number): string {
  if (s.length * 3 <= max) return s; // fits whatever the characters
  let out = s;
  while (utf8.encode(out).length > max) out = out.slice(0, -1);
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
  const nodeMarked = new Set<number>();
  for (const e of st.kpr_lb4_srcr.values()) {
    const k = lb4SrcrKey.decode(e.key);
    if (srcrKind(e.key) === "node") {
      nodeMarked.add(k.rev_nat_id);
      continue;
    }
    const list = ranges.get(k.rev_nat_id) ?? [];
    list.push(`${k.address}/${k.prefixlen - 32}`);
    ranges.set(k.rev_nat_id, list);
  }
  const slots = new Map<string, Map<number, number>>(); // frontend key hex (slot 0) → slot → backend id
  type Master = { key: ReturnType<typeof lb4Key.decode>; val: ReturnType<typeof lb4Service.decode> };
  const masters: Master[] = [];
  /** internal masters by their external master's key hex */
  const internals = new Map<string, Master>();
  for (const e of st.kpr_lb4_svc.values()) {
    const k = lb4Key.decode(e.key);
    const v = lb4Service.decode(e.value);
    if (k.slot === 0) {
      if (k.scope === SCOPE.INTERNAL)
        internals.set(hex(lb4Key.encode({ ...k, scope: SCOPE.EXTERNAL })), { key: k, val: v });
      else masters.push({ key: k, val: v });
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
    const backendsOf = (m: Master, what: string): Backend[] => {
      const mySlots = slots.get(hex(lb4Key.encode({ ...m.key, slot: 0 }))) ?? new Map<number, number>();
      const backends: Backend[] = [];
      for (let s = 1; s <= m.val.count; s++) {
        const id = mySlots.get(s);
        if (id === undefined) {
          warnings.push(`frontend ${fe}: ${what}slot ${s} of ${m.val.count} is missing`);
          continue;
        }
        const b = bes.get(id);
        if (!b) {
          warnings.push(`frontend ${fe}: ${what}slot ${s} names backend ${id}, which is missing`);
          continue;
        }
        const bp = protoName(b.proto) ?? protocol;
        // slot position decides the state this frontend uses (active_count), as the datapath does
        const active = m.val.active_count === ACTIVE_SATURATED || s <= m.val.active_count;
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
      return backends;
    };
    const backends = backendsOf({ key, val }, "");
    const internal = internals.get(hex(lb4Key.encode({ ...key, slot: 0 })));
    if (internal && !(val.flags & SVC_F.TWO_SCOPES))
      warnings.push(`frontend ${fe}: internal-scope entries without the two-scope flag (left over)`);
    if (!internal && val.flags & SVC_F.TWO_SCOPES)
      warnings.push(`frontend ${fe}: two-scope flag without internal-scope entries`);
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
        ...(nodeMarked.has(val.rev_nat_id) ? { nodeSourceInList: true } : {}),
      };
    if (meta?.health_check_port) f.healthCheckNodePort = meta.health_check_port;
    if (meta?.reject) f.reject = true;
    if (val.flags & SVC_F.DROP_NO_LOCAL) f.dropNoLocal = true;
    if (internal && val.flags & SVC_F.TWO_SCOPES) f.internalBackends = backendsOf(internal, "internal ");
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
    if (k.slot !== 0 || k.scope !== SCOPE.EXTERNAL) continue;
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

const META_PROTO = fieldOffset(svcMeta, "proto");
const META_ADDR = fieldOffset(svcMeta, "address");
const META_PORT = fieldOffset(svcMeta, "port");

/** A batch read: `count` keys and values packed at keySize / valueStride. */
export interface Batch {
  keys: Uint8Array;
  values: Uint8Array;
  count: number;
}

/** "a.b.c.d:port/PROTO" of an IPv4 address and network-order port at `off` and `portOff`. */
function l4KeyAt(b: Uint8Array, off: number, portOff: number, proto: number): string | undefined {
  const protocol = protoName(proto);
  if (!protocol) return undefined;
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}:${(b[portOff]! << 8) | b[portOff + 1]!}/${protocol}`;
}

/**
 * Ids programmed on the node from batch reads of kpr_svc_meta (each entry names its frontend's
 * key) and kpr_lb4_be, decoded in place: a re-apply learns the ids it keeps without reading the
 * service map (100k backends in a few tens of ms).
 */
export function previousIdsFromBatches(meta: Batch, be: Batch): PreviousIds {
  return {
    frontends: idsByL4Key(meta, 2, META_ADDR, META_PORT, META_PROTO),
    backends: idsByL4Key(be, 4, BE_ADDR, BE_PORT, BE_PROTO),
  };
}

const utf8d = new TextDecoder();
const META_NAME = fieldOffset(svcMeta, "name");

/** The service names ("ns/name", truncated as stored) of a kpr_svc_meta batch read. */
export function serviceNamesFromMeta(meta: Batch): Set<string> {
  const out = new Set<string>();
  const stride = svcMeta.size;
  for (let i = 0; i < meta.count; i++) {
    const o = i * stride + META_NAME;
    let end = o;
    while (end < o + META_NAME_LEN && meta.values[end] !== 0) end++;
    out.add(utf8d.decode(meta.values.subarray(o, end)));
  }
  return out;
}

/** The service names of a programmed state's kpr_svc_meta entries. */
export function serviceNamesFromState(st: MapState): Set<string> {
  const out = new Set<string>();
  for (const e of st.kpr_svc_meta.values()) out.add(svcMeta.decode(e.value).name);
  return out;
}

/** The name kpr_svc_meta stores for a service name (truncated to its field). */
export function storedServiceName(name: string): string {
  return truncateUtf8(name, META_NAME_LEN);
}

/** "address:port/PROTO" → id of each entry of a batch whose key is a little-endian id. */
function idsByL4Key(
  b: Batch,
  keySize: 2 | 4,
  addrOff: number,
  portOff: number,
  protoOff: number,
): Map<string, number> {
  const out = new Map<string, number>();
  const stride = b.values.length / Math.max(b.count, 1);
  const keys = new DataView(b.keys.buffer, b.keys.byteOffset, b.keys.byteLength);
  for (let i = 0; i < b.count; i++) {
    const o = i * stride;
    const key = l4KeyAt(b.values, o + addrOff, o + portOff, b.values[o + protoOff]!);
    if (key) out.set(key, keySize === 2 ? keys.getUint16(i * 2, true) : keys.getUint32(i * 4, true));
  }
  return out;
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
 * reverse-NAT/source ranges before the master that uses them, slots before the master's count;
 * deletions in reverse: masters (count shrunk or frontend gone), then slots, then per-frontend
 * data, then backends no longer referenced. Metadata (user space only) goes last, both ways: its
 * digest vouches for the frontend's entries, so it is written only once they are in place, and
 * a removed frontend's metadata outlives its entries (an interrupted apply is finished by the
 * next one, which finds the frontend through it).
 */
function phase(op: MapOp): number {
  if (op.map === "kpr_svc_meta") return 8;
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

/** phase() of slot deletions. */
const SLOT_DELETES = 5;

function byKey(a: { k: string }, b: { k: string }): number {
  return a.k < b.k ? -1 : a.k > b.k ? 1 : 0;
}

/**
 * Slot deletions per frontend, highest slot first: an apply stopped among them leaves slots
 * 1..n (after the master's count), which the next apply finds by reading up to the first gap.
 */
function bySlotDescending(a: { op: MapOp; k: string }, b: { op: MapOp; k: string }): number {
  const fa = a.k.slice(0, 12) + a.k.slice(16);
  const fb = b.k.slice(0, 12) + b.k.slice(16);
  if (fa !== fb) return fa < fb ? -1 : 1;
  const slot = (op: MapOp) => op.key[KEY_SLOT]! | (op.key[KEY_SLOT + 1]! << 8);
  return slot(b.op) - slot(a.op);
}

/** The ordered writes that turn `current` into `desired` (empty when they are equal). */
export function diffMapState(current: MapState, desired: MapState): MapOp[] {
  // buckets by phase; within a phase, map order then key bytes, so plans are deterministic
  const buckets: { op: MapOp; k: string }[][][] = Array.from({ length: 9 }, () =>
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
  buckets.forEach((perMap, ph) => {
    for (const list of perMap) {
      list.sort(ph === SLOT_DELETES ? bySlotDescending : byKey);
      for (const x of list) out.push(x.op);
    }
  });
  return withDigestsCleared(out);
}

/**
 * Prepends, for every frontend whose metadata a plan rewrites, a write of its current metadata
 * with the digest cleared: should the apply stop half-way (killed), the next one does not take
 * the half-written frontend for up to date.
 */
function withDigestsCleared(ops: MapOp[]): MapOp[] {
  const clear: MapOp[] = [];
  for (const op of ops) {
    if (op.map !== "kpr_svc_meta" || op.kind !== "update" || !op.prev) continue;
    const [lo, hi] = metaDigest(op.prev);
    if (lo === 0 && hi === 0) continue;
    const value = op.prev.slice();
    value.fill(0, META_DIGEST, META_DIGEST + 8);
    clear.push({ map: "kpr_svc_meta", kind: "update", key: op.key, value, prev: op.prev });
  }
  return clear.length === 0 ? ops : [...clear, ...ops];
}

// ---- planning from digests ---------------------------------------------------------------------

/** What planFromDigests needs of the programmed state (the pinned maps, or a MapState read earlier). */
export interface CurrentView {
  /** every kpr_svc_meta entry: keys (u16 ids) and values, concatenated */
  meta: { keys: Uint8Array; values: Uint8Array; count: number };
  lookupBe(key: Uint8Array): Uint8Array | undefined;
  /** every kpr_lb4_be key (u32 ids), read only to finish an interrupted apply */
  beKeys(): { keys: Uint8Array; count: number };
  /** every kpr_lb4_srcr entry (small: only frontends with source ranges have any) */
  srcr(): MapContent;
  lookupSvc(key: Uint8Array): Uint8Array | undefined;
  lookupRnat(key: Uint8Array): Uint8Array | undefined;
}

/** A plan and the entry counts it starts from (for the capacity check). */
export interface DigestPlan {
  ops: MapOp[];
  /** entries each map holds before the plan runs */
  counts: Record<LbStateMap, number>;
  /** frontends whose digest did not match (diffed entry by entry) */
  dirty: number;
}

/**
 * Plans the writes that turn the programmed state into `enc` looking only at frontends whose
 * stored digest differs from the desired one (or is missing), plus every backend. A frontend
 * whose digest matches is taken as programmed: its digest covers all its entries, and is written
 * after them. Returns undefined when more than `maxDirty` frontends need a diff (the caller then
 * diffs everything).
 */
export function planFromDigests(
  enc: EncodedModel,
  cur: CurrentView,
  maxDirty: number,
): DigestPlan | undefined {
  const metaSize = svcMeta.size;
  const clean = new Set<number>();
  const dirtyCurrent = new Map<number, Uint8Array>(); // id → current meta value
  const { meta } = cur;
  // An apply that stopped half-way (a cleared digest, or metadata whose master is gone) may
  // have left backends that no slot names any more: then every backend is looked at.
  let interrupted = false;
  const mdv = new DataView(meta.values.buffer, meta.values.byteOffset, meta.values.byteLength);
  for (let i = 0; i < meta.count; i++) {
    const id = meta.keys[2 * i]! | (meta.keys[2 * i + 1]! << 8);
    const o = i * metaSize + META_DIGEST;
    const lo = mdv.getUint32(o, true);
    const hi = mdv.getUint32(o + 4, true);
    const want = enc.byId.get(id);
    if (want && (lo !== 0 || hi !== 0) && want.digestLo === lo && want.digestHi === hi) clean.add(id);
    else {
      if (lo === 0 && hi === 0) interrupted = true;
      dirtyCurrent.set(id, meta.values.subarray(i * metaSize, (i + 1) * metaSize));
      if (dirtyCurrent.size > maxDirty) return undefined;
    }
  }
  const dirtyDesired = enc.frontends.filter((f) => !clean.has(f.id));
  if (dirtyDesired.length > maxDirty || dirtyCurrent.size + dirtyDesired.length > 2 * maxDirty)
    return undefined;

  // The dirty frontends' current entries: found by the key stored in their metadata and by the
  // key they are to have (an entry there may belong to a frontend without metadata).
  const current = emptyMapState();
  const seenKeys = new Set<string>();
  const readFrontend = (key: Uint8Array, slotsAtLeast: number, programmed: boolean) => {
    const k = hex(key);
    if (seenKeys.has(k)) return;
    seenKeys.add(k);
    const master = cur.lookupSvc(key);
    let count = slotsAtLeast;
    if (master) {
      const m = lb4Service.decode(master);
      if (clean.has(m.rev_nat_id)) return; // an up-to-date frontend's entry: not ours to diff
      current.kpr_lb4_svc.set(k, { key: key.slice(), value: master });
      count = Math.max(count, m.count);
    } else if (programmed) interrupted = true;
    // Slots past the count are read until the first gap: an interrupted apply leaves them
    // after shrinking or deleting the master (slots are deleted highest first, see diffMapState).
    for (let s = 1; s <= 0xffff; s++) {
      const sk = key.slice();
      sk[KEY_SLOT] = s & 0xff;
      sk[KEY_SLOT + 1] = s >> 8;
      const v = cur.lookupSvc(sk);
      if (v) current.kpr_lb4_svc.set(hex(sk), { key: sk, value: v });
      else if (s > count) break;
    }
  };
  const idKey = (id: number) => new Uint8Array([id & 0xff, id >> 8]);
  for (const [id, value] of dirtyCurrent) {
    const m = svcMeta.decode(value);
    const want = enc.byId.get(id);
    if (protoName(m.proto)) {
      const k = { address: m.address, dport: m.port, slot: 0, proto: m.proto };
      readFrontend(lb4Key.encode({ ...k, scope: SCOPE.EXTERNAL }), want?.backendIds.length ?? 0, true);
      // internal-scope entries, if it has (or had) any
      readFrontend(
        lb4Key.encode({ ...k, scope: SCOPE.INTERNAL }),
        want?.internal?.backendIds.length ?? 0,
        false,
      );
    }
    const k = idKey(id);
    current.kpr_svc_meta.set(hex(k), { key: k, value });
  }
  const dirtyIds = new Set<number>(dirtyCurrent.keys());
  for (const f of dirtyDesired) {
    readFrontend(f.key, f.backendIds.length, false);
    if (f.internal) readFrontend(f.internal.key, f.internal.backendIds.length, false);
    dirtyIds.add(f.id);
  }
  for (const id of dirtyIds) {
    const k = idKey(id);
    const r = cur.lookupRnat(k);
    if (r) current.kpr_lb4_rnat.set(hex(k), { key: k, value: r });
  }
  const srcr = cur.srcr();
  for (const [k, e] of srcr)
    if (dirtyIds.has(lb4SrcrKey.decode(e.key).rev_nat_id)) current.kpr_lb4_srcr.set(k, e);

  // Backends: those the dirty frontends name, now or before. Any other backend is named by an
  // up-to-date frontend, whose digest covers the backend's value.
  const candidates = new Set<number>();
  for (const f of dirtyDesired) {
    for (const id of f.backendIds) candidates.add(id);
    if (f.internal) for (const id of f.internal.backendIds) candidates.add(id);
  }
  for (const e of current.kpr_lb4_svc.values())
    if (!isMasterKey(e.key)) candidates.add(lb4Service.decode(e.value).backend_id);
  if (interrupted) {
    const { keys, count } = cur.beKeys();
    const kdv = new DataView(keys.buffer, keys.byteOffset, keys.byteLength);
    for (let i = 0; i < count; i++) {
      const id = kdv.getUint32(i * 4, true);
      if (!enc.beIndex.has(id)) candidates.add(id);
    }
  }
  const desiredBe: number[] = [];
  let beCount = enc.beIndex.size;
  for (const id of candidates) {
    const key = u32Id.encode({ v: id });
    const have = cur.lookupBe(key);
    const want = enc.beValue(id);
    if (want && !have) beCount--;
    if (have && !want) beCount++;
    if (have && want && bytesEqual(have, want)) continue;
    if (have) current.kpr_lb4_be.set(hex(key), { key, value: have });
    if (want) desiredBe.push(id);
  }
  const desired = encodedState(
    enc,
    dirtyDesired.map((f) => alignToState(f, current)),
    desiredBe,
  );
  const ops = diffMapState(current, desired);
  let svcCount = current.kpr_lb4_svc.size;
  for (const id of clean) {
    const f = enc.byId.get(id)!;
    svcCount += 1 + f.backendIds.length + (f.internal ? 1 + f.internal.backendIds.length : 0);
  }
  const counts: Record<LbStateMap, number> = {
    kpr_lb4_svc: svcCount,
    kpr_lb4_be: beCount,
    kpr_lb4_rnat: clean.size + current.kpr_lb4_rnat.size,
    kpr_svc_meta: meta.count,
    kpr_lb4_srcr: srcr.size,
  };
  return { ops, counts, dirty: dirtyIds.size };
}

/** Entries each map holds at its fullest while `ops` run: upserts land before deletions. */
export function peakEntries(
  current: MapState | Record<LbStateMap, number>,
  ops: MapOp[],
): Record<LbStateMap, number> {
  const peak = Object.fromEntries(
    LB_STATE_MAPS.map((m) => {
      const c = current[m];
      return [m, typeof c === "number" ? c : c.size];
    }),
  ) as Record<LbStateMap, number>;
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

// ---- the daemon's programmed model -------------------------------------------------------------

/** A backend of the programmed model: its uses and the value they make. */
interface BackendRec {
  b: Backend;
  uses: BackendUses;
  /** index into the value buffer */
  idx: number;
}

/**
 * The model programmed on the node, kept in memory as map entries (the daemon's copy, so a
 * change is diffed against memory rather than re-read from the kernel): each IPv4 frontend's
 * encoding and every backend with the uses that decide its value. `change()` turns the frontends
 * one update replaced into the ordered writes of the entries that differ, and takes them in.
 */
export class ProgrammedModel {
  private fe = new Map<number, { f: Frontend; enc: FrontendEnc }>();
  private be = new Map<number, BackendRec>();
  private values = new Uint8Array(BE_SIZE * 1024);
  private words = new Uint32Array(this.values.buffer);
  private freeIdx: number[] = [];
  private nextIdx = 0;
  private encoder: FrontendEncoder;
  private readonly idxOf = (id: number) => this.be.get(id)!.idx;

  /** `maglev`: encode masters as encodeModel(model, maglev) does. */
  constructor(maglev = false) {
    this.encoder = new FrontendEncoder(maglev);
  }

  /** The programmed model of `model` (every frontend counted as added). */
  static of(model: LbModel, maglev = false): ProgrammedModel {
    const p = new ProgrammedModel(maglev);
    p.change({ removed: [], added: model.frontends });
    return p;
  }

  /** Frontends and backends held. */
  get sizes(): { frontends: number; backends: number } {
    return { frontends: this.fe.size, backends: this.be.size };
  }

  private slotIndex(): number {
    const i = this.freeIdx.pop();
    if (i !== undefined) return i;
    if ((this.nextIdx + 1) * BE_SIZE > this.values.length) {
      const grown = new Uint8Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
      this.words = new Uint32Array(grown.buffer);
    }
    return this.nextIdx++;
  }

  private value(r: BackendRec): Uint8Array {
    return this.values.subarray(r.idx * BE_SIZE, (r.idx + 1) * BE_SIZE);
  }

  /**
   * Takes in one update (the frontends it removed and those it added; a frontend id may be in
   * both) and returns the writes that program it, in DESIGN.md's order, plus the frontends left
   * out (IPv6). Throws (before changing anything) when a frontend cannot be encoded.
   */
  change(delta: { removed: readonly Frontend[]; added: readonly Frontend[] }): {
    ops: MapOp[];
    skipped: DesiredState["skipped"];
  } {
    const skipped: DesiredState["skipped"] = [];
    const removed: { f: Frontend; enc: FrontendEnc }[] = [];
    for (const f of delta.removed) {
      const r = this.fe.get(f.id);
      if (r && r.f === f) removed.push(r);
    }
    const added: { f: Frontend; sel: FrontendSlots; slots: Backend[] }[] = [];
    for (const f of delta.added) {
      if (!isIp4(f.frontend.address)) {
        skipped.push(ipv6Skip(f));
        continue;
      }
      const sel = backendSlots(f);
      checkSlots(f, sel.slots.length);
      if (sel.internal) checkSlots(f, sel.internal.slots.length);
      const slots = allSlots(sel);
      for (const b of slots)
        if (!putIp4(b.address, new Uint8Array(4), 0))
          throw new KprError(`program backend ${b.id}: "${b.address}" is not an IPv4 address`);
      added.push({ f, sel, slots });
    }

    const current = emptyMapState();
    const desired = emptyMapState();
    const arena = new Arena();
    // backends whose uses change: their value before (undefined: not programmed)
    const touched = new Map<number, Uint8Array | undefined>();
    const touch = (id: number) => {
      if (touched.has(id)) return;
      const r = this.be.get(id);
      touched.set(id, r ? this.value(r).slice() : undefined);
    };
    for (const { f, enc } of removed) {
      addFrontend(current, enc, arena);
      this.fe.delete(f.id);
      for (const b of allSlots(backendSlots(f))) {
        touch(b.id);
        countUse(this.be.get(b.id)!.uses, b, -1);
      }
    }
    const addedUses = new Map<number, number>();
    for (const { slots } of added)
      for (const b of slots) {
        touch(b.id);
        let r = this.be.get(b.id);
        if (!r) {
          r = { b, uses: { all: 0, active: 0, localActive: 0, localAny: 0 }, idx: this.slotIndex() };
          this.be.set(b.id, r);
        }
        countUse(r.uses, b, 1);
        addedUses.set(b.id, (addedUses.get(b.id) ?? 0) + 1);
      }
    // new values; a backend whose value changed while frontends outside this update name it
    // makes them re-encoded (their digest covers it)
    const revalue = new Set<number>();
    for (const [id, before] of touched) {
      const r = this.be.get(id)!;
      if (r.uses.all === 0) {
        if (before) {
          const key = arena.encode(u32Id, { v: id });
          put(current.kpr_lb4_be, key, before);
        }
        continue;
      }
      putBackendValue(r.b, usesActive(r.uses), usesLocal(r.uses), this.values, r.idx * BE_SIZE);
      const now = this.value(r);
      if (before && bytesEqual(before, now)) continue;
      const key = arena.encode(u32Id, { v: id });
      if (before) put(current.kpr_lb4_be, key, before);
      put(desired.kpr_lb4_be, key, now.slice());
      if (before && r.uses.all > (addedUses.get(id) ?? 0)) revalue.add(id);
    }
    if (revalue.size > 0)
      for (const [id, r] of this.fe)
        if (
          r.enc.backendIds.some((b) => revalue.has(b)) ||
          r.enc.internal?.backendIds.some((b) => revalue.has(b))
        ) {
          addFrontend(current, r.enc, arena);
          r.enc = alignToPrevious(this.encoder.encode(r.f, backendSlots(r.f), this.words, this.idxOf), r.enc);
          addFrontend(desired, r.enc, arena);
          this.fe.set(id, r);
        }
    const removedEnc = new Map(removed.map((r) => [r.f.id, r.enc]));
    for (const { f, sel } of added) {
      const enc = alignToPrevious(this.encoder.encode(f, sel, this.words, this.idxOf), removedEnc.get(f.id));
      addFrontend(desired, enc, arena);
      this.fe.set(f.id, { f, enc });
    }
    for (const [id] of touched) {
      const r = this.be.get(id)!;
      if (r.uses.all === 0) {
        this.be.delete(id);
        this.values.fill(0, r.idx * BE_SIZE, (r.idx + 1) * BE_SIZE);
        this.freeIdx.push(r.idx);
      }
    }
    return { ops: diffMapState(current, desired), skipped };
  }

  /** Whether a backend id is programmed. */
  hasBackend(id: number): boolean {
    return this.be.has(id);
  }

  /** Whether a frontend id is programmed. */
  hasFrontend(id: number): boolean {
    return this.fe.has(id);
  }

  /** The whole programmed content (for checks: equals modelToMapState of the same model). */
  state(): MapState {
    const st = emptyMapState();
    const arena = new Arena();
    for (const { enc } of this.fe.values()) addFrontend(st, enc, arena);
    for (const [id, r] of this.be) put(st.kpr_lb4_be, arena.encode(u32Id, { v: id }), this.value(r).slice());
    return st;
  }
}
