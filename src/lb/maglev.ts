/**
 * Maglev consistent hashing as Cilium computes it (pkg/maglev): the seed is `maglev.hashSeed`,
 * 12 bytes in base64 (the same on every node); its first 4 bytes (big endian) seed MurmurHash3
 * x64-128 of each backend's name, whose two halves give the backend's offset (h1 mod M) and skip
 * (h2 mod (M-1) + 1) through the table; the table is filled round robin, each backend taking
 * the next free slot of its permutation. The other 8 bytes seed the datapath's flow hash.
 * Pure: no I/O.
 */

/** Cilium's default `maglev.hashSeed`. */
export const DEFAULT_HASH_SEED = "JLfvgnHc2kaSUFaI";

/** The decoded seed: MurmurHash3 seed for the permutations, jhash seeds for the datapath. */
export interface MaglevSeed {
  murmur: number;
  jhash0: number;
  jhash1: number;
}

/**
 * Decodes a base64 `maglev.hashSeed`; throws an Error saying what was expected (12 bytes of
 * standard base64, e.g. `head -c12 /dev/urandom | base64 -w0`).
 */
export function parseHashSeed(b64: string): MaglevSeed {
  const expected = "12 bytes in standard base64 (head -c12 /dev/urandom | base64 -w0)";
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0)
    throw new Error(`not base64 (expected ${expected})`);
  const d = Buffer.from(b64, "base64");
  if (d.length !== 12) throw new Error(`decodes to ${d.length} bytes (expected ${expected})`);
  const be32 = (o: number) => ((d[o]! << 24) | (d[o + 1]! << 16) | (d[o + 2]! << 8) | d[o + 3]!) >>> 0;
  return { murmur: be32(0), jhash0: be32(4), jhash1: be32(8) };
}

/** MurmurHash3 x64-128 state in 32-bit halves: [h1hi, h1lo, h2hi, h2lo] (no BigInt). */
const H = new Uint32Array(4);
/** the 64-bit value the helpers below return, as hi and lo */
let rh = 0;
let rl = 0;

/** the high 32 bits of the unsigned 64-bit product of two 32-bit words */
function mulhi32(a: number, b: number): number {
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const m1 = a1 * b0;
  const m2 = a0 * b1;
  const t = ((a0 * b0) >>> 16) + (m1 & 0xffff) + (m2 & 0xffff);
  return (a1 * b1 + (m1 >>> 16) + (m2 >>> 16) + (t >>> 16)) >>> 0;
}

function mul64(ah: number, al: number, bh: number, bl: number): void {
  rl = Math.imul(al, bl) >>> 0;
  rh = (mulhi32(al, bl) + Math.imul(ah, bl) + Math.imul(al, bh)) >>> 0;
}

function rotl64(h: number, l: number, r: number): void {
  if (r >= 32) {
    const t = h;
    h = l;
    l = t;
    r -= 32;
  }
  if (r === 0) {
    rh = h;
    rl = l;
    return;
  }
  rh = ((h << r) | (l >>> (32 - r))) >>> 0;
  rl = ((l << r) | (h >>> (32 - r))) >>> 0;
}

function add64(ah: number, al: number, bh: number, bl: number): void {
  const l = (al + bl) >>> 0;
  rh = (ah + bh + (l < al ? 1 : 0)) >>> 0;
  rl = l;
}

function fmix64(h: number, l: number): void {
  l = (l ^ (h >>> 1)) >>> 0;
  mul64(h, l, 0xff51afd7, 0xed558ccd);
  h = rh;
  l = (rl ^ (h >>> 1)) >>> 0;
  mul64(h, l, 0xc4ceb9fe, 0x1a85ec53);
  h = rh;
  rl = (rl ^ (h >>> 1)) >>> 0;
}

const C1H = 0x87c37b91;
const C1L = 0x114253d5;
const C2H = 0x4cf5ad43;
const C2L = 0x2745937f;

/** k1 mix: rotl(k*C1, 31)*C2 (first) or rotl(k*C2, 33)*C1 (second) into rh:rl */
function mixK(kh: number, kl: number, second: boolean): void {
  if (second) {
    mul64(kh, kl, C2H, C2L);
    rotl64(rh, rl, 33);
    mul64(rh, rl, C1H, C1L);
  } else {
    mul64(kh, kl, C1H, C1L);
    rotl64(rh, rl, 31);
    mul64(rh, rl, C2H, C2L);
  }
}

function le32(b: Uint8Array, o: number, n: number): number {
  let v = 0;
  for (let i = Math.min(n, 4) - 1; i >= 0; i--) v = (v << 8) | b[o + i]!;
  return v >>> 0;
}

/** MurmurHash3 x64-128 of data[0, len) into H */
function murmur(data: Uint8Array, len: number, seed: number): void {
  let h1h = 0;
  let h1l = seed >>> 0;
  let h2h = 0;
  let h2l = h1l;
  const blocks = len >>> 4;
  for (let i = 0; i < blocks; i++) {
    const o = i * 16;
    mixK(le32(data, o + 4, 4), le32(data, o, 4), false);
    h1h = (h1h ^ rh) >>> 0;
    h1l = (h1l ^ rl) >>> 0;
    rotl64(h1h, h1l, 27);
    add64(rh, rl, h2h, h2l);
    mul64(rh, rl, 0, 5);
    add64(rh, rl, 0, 0x52dce729);
    h1h = rh;
    h1l = rl;
    mixK(le32(data, o + 12, 4), le32(data, o + 8, 4), true);
    h2h = (h2h ^ rh) >>> 0;
    h2l = (h2l ^ rl) >>> 0;
    rotl64(h2h, h2l, 31);
    add64(rh, rl, h1h, h1l);
    mul64(rh, rl, 0, 5);
    add64(rh, rl, 0, 0x38495ab5);
    h2h = rh;
    h2l = rl;
  }
  const tail = blocks * 16;
  const rest = len - tail;
  if (rest > 8) {
    const n = rest - 8;
    mixK(n > 4 ? le32(data, tail + 12, n - 4) : 0, le32(data, tail + 8, n), true);
    h2h = (h2h ^ rh) >>> 0;
    h2l = (h2l ^ rl) >>> 0;
  }
  if (rest > 0) {
    const n = Math.min(rest, 8);
    mixK(n > 4 ? le32(data, tail + 4, n - 4) : 0, le32(data, tail, n), false);
    h1h = (h1h ^ rh) >>> 0;
    h1l = (h1l ^ rl) >>> 0;
  }
  h1l = (h1l ^ len) >>> 0;
  h2l = (h2l ^ len) >>> 0;
  add64(h1h, h1l, h2h, h2l);
  h1h = rh;
  h1l = rl;
  add64(h2h, h2l, h1h, h1l);
  h2h = rh;
  h2l = rl;
  fmix64(h1h, h1l);
  h1h = rh;
  h1l = rl;
  fmix64(h2h, h2l);
  h2h = rh;
  h2l = rl;
  add64(h1h, h1l, h2h, h2l);
  h1h = rh;
  h1l = rl;
  add64(h2h, h2l, h1h, h1l);
  H[0] = h1h;
  H[1] = h1l;
  H[2] = rh;
  H[3] = rl;
}

/** MurmurHash3 x64-128 of data with a 32-bit seed: [h1, h2] (Cilium's murmur3.Hash128). */
export function murmur3x64_128(data: Uint8Array, seed: number): [bigint, bigint] {
  murmur(data, data.length, seed);
  const big = (hi: number, lo: number) => (BigInt(hi) << 32n) | BigInt(lo);
  return [big(H[0]!, H[1]!), big(H[2]!, H[3]!)];
}

const utf8 = new TextEncoder();
let nameBuf = new Uint8Array(256);

/** (hi·2^32 + lo) mod m for m < 2^21 (every product stays exact in a double) */
const mod64 = (hi: number, lo: number, m: number): number => ((hi % m) * (0x100000000 % m) + (lo % m)) % m;

function hashName(backend: string, seed: number): void {
  if (backend.length * 3 > nameBuf.length) nameBuf = new Uint8Array(backend.length * 3);
  const { written } = utf8.encodeInto(backend, nameBuf);
  murmur(nameBuf, written, seed);
}

/** A backend's offset and skip in a table of size m (m prime). */
export function offsetSkip(backend: string, m: number, seed: MaglevSeed): [number, number] {
  hashName(backend, seed.murmur);
  return [mod64(H[0]!, H[1]!, m), mod64(H[2]!, H[3]!, m - 1) + 1];
}

let pos = new Int32Array(16);
let step = new Int32Array(16);
let taken = new Uint8Array(0);

/**
 * The lookup table of size m for `backends` (names, e.g. "10.0.0.1:8080"): entry j is the index
 * in `backends` of the backend for hash j. Empty when there are no backends.
 */
export function maglevTable(backends: readonly string[], m: number, seed: MaglevSeed): Int32Array {
  const n = backends.length;
  if (n === 0) return new Int32Array(0);
  if (pos.length < n) {
    pos = new Int32Array(n);
    step = new Int32Array(n);
  }
  for (let i = 0; i < n; i++) {
    hashName(backends[i]!, seed.murmur);
    pos[i] = mod64(H[0]!, H[1]!, m);
    step[i] = mod64(H[2]!, H[3]!, m - 1) + 1 - m;
  }
  if (taken.length < m) taken = new Uint8Array(m);
  else taken.fill(0, 0, m);
  const entry = new Int32Array(m);
  // c += step - m, then + m when negative: the wrap without a branch the CPU cannot predict
  let i = 0;
  for (let filled = 0; filled < m; filled++) {
    let c = pos[i]!;
    const s = step[i]!;
    while (taken[c] !== 0) {
      c += s;
      c += m & (c >> 31);
    }
    taken[c] = 1;
    entry[c] = i;
    c += s;
    pos[i] = c + (m & (c >> 31));
    if (++i === n) i = 0;
  }
  return entry;
}

/**
 * Tables by frontend, recomputed only when a frontend's backend list, the size or the seed
 * changes (apply runs with thousands of frontends; most do not change between runs).
 */
export class MaglevTables {
  private readonly cache = new Map<string, { sig: string; table: Int32Array }>();
  /** tables computed (not taken from the cache) since construction */
  computed = 0;

  constructor(
    readonly m: number,
    readonly seed: MaglevSeed,
  ) {}

  /** The table of frontend `key` over `backends` (the same order gives the same indices). */
  table(key: string, backends: readonly string[]): Int32Array {
    const sig = backends.join(",");
    const hit = this.cache.get(key);
    if (hit && hit.sig === sig) return hit.table;
    const table = maglevTable(backends, this.m, this.seed);
    this.computed++;
    this.cache.set(key, { sig, table });
    return table;
  }

  /** Forgets frontends not in `keep` (removed services). */
  retain(keep: ReadonlySet<string>): void {
    for (const k of this.cache.keys()) if (!keep.has(k)) this.cache.delete(k);
  }
}
