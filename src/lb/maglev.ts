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

const M64 = (1n << 64n) - 1n;
const C1 = 0x87c37b91114253d5n;
const C2 = 0x4cf5ad432745937fn;

const rotl64 = (x: bigint, r: bigint): bigint => ((x << r) | (x >> (64n - r))) & M64;

function fmix64(k: bigint): bigint {
  k ^= k >> 33n;
  k = (k * 0xff51afd7ed558ccdn) & M64;
  k ^= k >> 33n;
  k = (k * 0xc4ceb9fe1a85ec53n) & M64;
  k ^= k >> 33n;
  return k;
}

function le64(b: Uint8Array, o: number, n = 8): bigint {
  let v = 0n;
  for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[o + i]!);
  return v;
}

/** MurmurHash3 x64-128 of data with a 32-bit seed: [h1, h2] (Cilium's murmur3.Hash128). */
export function murmur3x64_128(data: Uint8Array, seed: number): [bigint, bigint] {
  let h1 = BigInt(seed >>> 0);
  let h2 = h1;
  const blocks = Math.floor(data.length / 16);
  for (let i = 0; i < blocks; i++) {
    let k1 = le64(data, i * 16);
    let k2 = le64(data, i * 16 + 8);
    k1 = (rotl64((k1 * C1) & M64, 31n) * C2) & M64;
    h1 ^= k1;
    h1 = (((rotl64(h1, 27n) + h2) & M64) * 5n + 0x52dce729n) & M64;
    k2 = (rotl64((k2 * C2) & M64, 33n) * C1) & M64;
    h2 ^= k2;
    h2 = (((rotl64(h2, 31n) + h1) & M64) * 5n + 0x38495ab5n) & M64;
  }
  const tail = blocks * 16;
  const rest = data.length - tail;
  if (rest > 8) {
    const k2 = le64(data, tail + 8, rest - 8);
    h2 ^= (rotl64((k2 * C2) & M64, 33n) * C1) & M64;
  }
  if (rest > 0) {
    const k1 = le64(data, tail, Math.min(rest, 8));
    h1 ^= (rotl64((k1 * C1) & M64, 31n) * C2) & M64;
  }
  const len = BigInt(data.length);
  h1 ^= len;
  h2 ^= len;
  h1 = (h1 + h2) & M64;
  h2 = (h2 + h1) & M64;
  h1 = fmix64(h1);
  h2 = fmix64(h2);
  h1 = (h1 + h2) & M64;
  h2 = (h2 + h1) & M64;
  return [h1, h2];
}

const utf8 = new TextEncoder();

/** A backend's offset and skip in a table of size m (m prime). */
export function offsetSkip(backend: string, m: number, seed: MaglevSeed): [number, number] {
  const [h1, h2] = murmur3x64_128(utf8.encode(backend), seed.murmur);
  const M = BigInt(m);
  return [Number(h1 % M), Number(h2 % (M - 1n)) + 1];
}

/**
 * The lookup table of size m for `backends` (names, e.g. "10.0.0.1:8080"): entry j is the index
 * in `backends` of the backend for hash j. Empty when there are no backends.
 */
export function maglevTable(backends: readonly string[], m: number, seed: MaglevSeed): Int32Array {
  const n = backends.length;
  if (n === 0) return new Int32Array(0);
  const skip = new Int32Array(n);
  const pos = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const [o, s] = offsetSkip(backends[i]!, m, seed);
    pos[i] = o;
    skip[i] = s;
  }
  const entry = new Int32Array(m).fill(-1);
  for (let filled = 0, i = 0; filled < m; filled++, i = i + 1 === n ? 0 : i + 1) {
    let c = pos[i]!;
    const s = skip[i]!;
    while (entry[c]! >= 0) {
      c += s;
      if (c >= m) c -= m;
    }
    entry[c] = i;
    c += s;
    pos[i] = c >= m ? c - m : c;
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
