/**
 * Maglev golden values: tables, offsets/skips and MurmurHash3 halves pinned from the first
 * (BigInt) implementation of src/lb/maglev.ts, so a faster implementation keeps every node's
 * table identical to what earlier kpr versions computed from the same seed.
 */
import { describe, expect, it } from "bun:test";
import { createHash } from "node:crypto";
import {
  DEFAULT_HASH_SEED,
  maglevTable,
  murmur3x64_128,
  offsetSkip,
  parseHashSeed,
} from "../../src/lb/maglev.ts";

const OTHER_SEED = "AAAAAQAAAAIAAAAD";
const range = (n: number, f: (i: number) => string) => Array.from({ length: n }, (_, i) => f(i));

describe("maglev golden values (pinned from the BigInt implementation)", () => {
  it.each([
    [
      DEFAULT_HASH_SEED,
      16381,
      range(10, (i) => `10.128.0.${i + 1}:8080`),
      [9, 4, 3, 3, 0],
      "9f2632db98c1c963",
    ],
    [
      DEFAULT_HASH_SEED,
      251,
      ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"],
      [2, 1, 1, 0, 1],
      "8c383e9791949ad5",
    ],
    [OTHER_SEED, 1021, range(7, (i) => `[fd00::${i + 1}]:443`), [6, 2, 0, 1, 1], "e38e71b1c7e1838a"],
    [
      DEFAULT_HASH_SEED,
      65521,
      range(100, (i) => `172.16.${i >> 8}.${i & 255}:53`),
      [48, 79, 88, 32, 96],
      "fa20b87038df52ee",
    ],
  ] as const)("seed %s, M=%d: entries 0, 1, 2, M/2, M-1 and the table's digest", (seed, m, backends, entries, sha) => {
    const t = maglevTable(backends, m, parseHashSeed(seed));
    const digest = createHash("sha256")
      .update(new Uint8Array(t.buffer, t.byteOffset, t.byteLength))
      .digest("hex");
    expect({ entries: [0, 1, 2, m >> 1, m - 1].map((j) => t[j]), digest: digest.slice(0, 16) }).toEqual({
      entries: [...entries],
      digest: sha,
    });
  });

  it.each([
    ["", "f3d31520ad22ab4c", "5fd10d9c3dde784f", [2373, 8996]],
    ["a", "77c370f7bf2004dd", "f8f9b0f53eabb805", [4825, 11286]],
    ["10.0.0.1:8080", "9f6eb053d8f4b474", "4810cce6b24b0650", [11439, 9877]],
    ["0123456789abcdef", "6cae5a9935396bc4", "1aae75035743844a", [7146, 15831]],
    ["0123456789abcdefXYZ", "360d84a4d00195ea", "bf1b49a7f02ceb44", [7947, 2501]],
    ["x".repeat(33), "2946a1e1e6750359", "756acc912c43d0bc", [2491, 2145]],
  ] as const)("murmur3 and offset/skip of %p at M=16381", (name, h1, h2, os) => {
    const seed = parseHashSeed(DEFAULT_HASH_SEED);
    const [a, b] = murmur3x64_128(new TextEncoder().encode(name), seed.murmur);
    expect({ h1: a.toString(16), h2: b.toString(16), os: offsetSkip(name, 16381, seed) }).toEqual({
      h1,
      h2,
      os: [...os],
    });
  });
});
