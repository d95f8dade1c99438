/**
 * Maglev selection in the tc/XDP core (bpf/lib/maglev.h) with tables built by src/lb/maglev.ts
 * and swapped in the way src/datapath/maglevmaps.ts does: two "nodes" (two sets of maps) with
 * the same backends under different backend ids send every flow to the same backend address;
 * flows spread over the backends; with session affinity a client's flows stay together.
 */
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { rmSync } from "node:fs";
import { BpfMap, MapType } from "../../src/datapath/bpf.ts";
import { maglevCfg, u16Id, u32Id } from "../../src/datapath/lbmaps.ts";
import { DEFAULT_HASH_SEED, maglevTable, parseHashSeed } from "../../src/lb/maglev.ts";
import { needs } from "../harness/env.ts";
import { ensureBpffs } from "../harness/netns.ts";
import { buildPacket, parsePacket } from "../harness/packet.ts";
import { buildObjects } from "./_assert_case.ts";
import { Lab, XDP_ACT } from "./_lab.ts";

const skip = needs({ root: true, tools: ["clang"] }, "Maglev datapath tests");
const M = 1021;
const SEED = parseHashSeed(DEFAULT_HASH_SEED);
const NODE = "192.168.77.1";
const ADDRS = ["10.244.1.5", "10.244.1.6", "10.244.2.7", "10.244.3.8", "10.244.3.9"];

/** Programs one NodePort (rev 7) whose backends get the ids `ids[i]` for ADDRS[i], and its table. */
function program(lab: Lab, ids: number[], affinity = false): void {
  lab.reset();
  lab.addService({
    address: NODE,
    port: 30080,
    revNatId: 7,
    flags: affinity ? ["NODEPORT", "AFFINITY"] : ["NODEPORT"],
    affinityTimeout: affinity ? 600 : 0,
    backends: ADDRS.map((a, i) => ({ id: ids[i]!, address: a, port: 8080, local: true })),
  });
  const named = ADDRS.map((a, i) => [`${a}:8080`, ids[i]!] as const).sort((x, y) => (x[0] < y[0] ? -1 : 1));
  const table = maglevTable(
    named.map((n) => n[0]),
    M,
    SEED,
  );
  const values = new Uint32Array(M);
  for (let j = 0; j < M; j++) values[j] = named[table[j]!]![1];
  const keys = new Uint32Array(M).map((_, i) => i);
  using inner = BpfMap.create({
    name: "kpr_maglev_tbl",
    type: MapType.ARRAY,
    keySize: 4,
    valueSize: 4,
    maxEntries: M,
    flags: 1 << 12,
  });
  inner.updateBatch(new Uint8Array(keys.buffer), new Uint8Array(values.buffer), M);
  lab.obj.map("kpr_lb4_maglev").update(u16Id.encode({ v: 7 }), u32Id.encode({ v: inner.fd }));
  lab.obj
    .map("kpr_maglev_cfg")
    .update(
      u32Id.encode({ v: 0 }),
      maglevCfg.encode({ table_size: M, seed0: SEED.jhash0, seed1: SEED.jhash1, pad: 0 }),
    );
}

/** The backend address each flow (client, sport) is DNATed to by prog. */
function chosen(lab: Lab, prog: string, flows: [string, number][]): string[] {
  return flows.map(([src, sport]) => {
    const r = lab.run(
      prog,
      buildPacket({
        eth: { src: "02:00:00:00:00:aa", dst: "02:00:00:00:00:01" },
        ip4: { src, dst: NODE, ttl: 64, id: 1 },
        tcp: { sport, dport: 30080, seq: 1, flags: "S" },
      }),
    );
    if (prog === "kpr_xdp" ? r.retval !== XDP_ACT.XDP_PASS : r.retval !== 0) return `verdict ${r.retval}`;
    return parsePacket(r.data).ip4?.dst ?? "?";
  });
}

describe.skipIf(!!skip)("Maglev in the datapath", () => {
  const dirs = [0, 1].map((i) => `/sys/fs/bpf/kpr-test-mg${i}-${Math.random().toString(36).slice(2, 8)}`);
  let nodeA: Lab;
  let nodeB: Lab;
  const flows: [string, number][] = Array.from({ length: 200 }, (_, i) => [
    `198.51.100.${1 + (i % 50)}`,
    40000 + i,
  ]);

  beforeAll(() => {
    buildObjects();
    ensureBpffs();
    nodeA = Lab.open("tc", dirs[0], ["xdp"]);
    nodeB = Lab.open("tc", dirs[1], ["xdp"]);
  });
  afterAll(() => {
    nodeA?.close();
    nodeB?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("two nodes with different backend ids pick the same backend for every flow (tc and XDP)", () => {
    program(nodeA, [11, 12, 13, 14, 15]);
    program(nodeB, [305, 201, 999, 42, 7]);
    const a = chosen(nodeA, "kpr_tc_ingress", flows);
    program(nodeA, [11, 12, 13, 14, 15]);
    const ax = chosen(nodeA, "kpr_xdp", flows);
    const b = chosen(nodeB, "kpr_tc_ingress", flows);
    expect({
      sameOnBothNodes: a.every((x, i) => x === b[i]),
      sameInXdp: a.every((x, i) => x === ax[i]),
    }).toEqual({
      sameOnBothNodes: true,
      sameInXdp: true,
    });
    const spread = new Set(a);
    expect({ allBackends: [...spread].sort() }).toEqual({ allBackends: [...ADDRS].sort() });
  });

  it("with session affinity a client's flows all go to one backend, the same on both nodes", () => {
    program(nodeA, [11, 12, 13, 14, 15], true);
    program(nodeB, [305, 201, 999, 42, 7], true);
    const oneClient: [string, number][] = Array.from({ length: 20 }, (_, i) => ["203.0.113.77", 41000 + i]);
    const a = chosen(nodeA, "kpr_tc_ingress", oneClient);
    const b = chosen(nodeB, "kpr_tc_ingress", oneClient);
    expect({ backendsA: new Set(a).size, sameOnB: a.every((x, i) => x === b[i]) }).toEqual({
      backendsA: 1,
      sameOnB: true,
    });
  });

  it("a frontend without a table selects at random (all backends reachable)", () => {
    program(nodeA, [11, 12, 13, 14, 15]);
    nodeA.obj.map("kpr_lb4_maglev").delete(u16Id.encode({ v: 7 }));
    expect(new Set(chosen(nodeA, "kpr_tc_ingress", flows)).size).toBe(ADDRS.length);
  });
});
