/**
 * Which flows and sockets a reconcile's writes make stale (src/datapath/sockterm.ts): the UDP
 * (frontend, backend) pairs removed by a plan, and the CT / SNAT entries that belong to them;
 * then the batched delete on a real LRU map.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Config } from "../../src/config/config.ts";
import { BpfMap, MapType } from "../../src/datapath/bpf.ts";
import {
  ct4Entry,
  ct4Key,
  lb4Backend,
  lb4Key,
  lb4Service,
  snat4Entry,
  u32Id,
} from "../../src/datapath/lbmaps.ts";
import type { MapOp } from "../../src/datapath/mapstate.ts";
import {
  clearConntrack,
  hookedNamespaces,
  type RemovedUdpBackend,
  removedUdpBackends,
  staleCt4Keys,
  staleSnat4Keys,
} from "../../src/datapath/sockterm.ts";
import { needs } from "../harness/env.ts";

const UDP = 17;
const TCP = 6;
const FE = { address: "10.96.0.53", dport: 53 };

/** A slot write of frontend FE (proto, rev_nat_id 7): backend id before → after (0: none). */
function slot(n: number, before: number, after: number, proto = UDP, revNatId = 7): MapOp {
  const key = lb4Key.encode({ ...FE, slot: n, proto, scope: 0 });
  const val = (id: number) =>
    lb4Service.encode({
      backend_id: id,
      affinity_timeout: 0,
      count: 0,
      rev_nat_id: revNatId,
      flags: 0,
      algorithm: 0,
      active_count: 0,
    });
  if (after === 0) return { map: "kpr_lb4_svc", kind: "delete", key, prev: val(before) };
  const op: MapOp = { map: "kpr_lb4_svc", kind: "update", key, value: val(after) };
  if (before) op.prev = val(before);
  return op;
}

/** A kpr_lb4_be write: backend id deleted (address:port as before) or updated. */
function backend(
  id: number,
  address: string,
  port: number,
  kind: "delete" | "update" = "delete",
  proto = UDP,
): MapOp {
  const v = lb4Backend.encode({ address, port, proto, state: 0, flags: 0 });
  const key = u32Id.encode({ v: id });
  return kind === "delete"
    ? { map: "kpr_lb4_be", kind, key, prev: v }
    : { map: "kpr_lb4_be", kind, key, value: v };
}

const a = (id: number, address: string, port = 5353, revNatId = 7): RemovedUdpBackend => ({
  revNatId,
  backendId: id,
  address,
  port,
});

describe("removedUdpBackends: the UDP pairs a plan removes", () => {
  test.each<[string, MapOp[], RemovedUdpBackend[]]>([
    [
      "slots [1,2,3] → [2,3]: backend 1 removed and deleted",
      [slot(1, 1, 2), slot(2, 2, 3), slot(3, 3, 0), backend(1, "10.244.1.10", 5353)],
      [a(1, "10.244.1.10")],
    ],
    [
      "a backend turning terminating moves behind the active ones: nothing removed",
      [slot(1, 1, 2), slot(2, 2, 1)],
      [],
    ],
    ["a backend added: nothing removed", [slot(2, 0, 5), backend(5, "10.244.1.11", 5353, "update")], []],
    [
      "a pod cycles: slot 1 now names the new backend",
      [backend(2, "10.244.1.11", 5353, "update"), slot(1, 1, 2), backend(1, "10.244.1.10", 5353)],
      [a(1, "10.244.1.10")],
    ],
    [
      "the whole frontend goes (its slots are deleted)",
      [slot(2, 4, 0), slot(1, 3, 0), backend(3, "10.244.1.10", 53), backend(4, "10.244.1.11", 53)],
      [a(4, "10.244.1.11", 53), a(3, "10.244.1.10", 53)],
    ],
    [
      "TCP frontends are not looked at",
      [slot(1, 1, 2, TCP), backend(1, "10.244.1.10", 8080, "delete", TCP)],
      [],
    ],
  ])("%s", (_what, ops, want) => {
    expect(removedUdpBackends(ops)).toEqual(want);
  });

  test("a backend that stays programmed for another frontend is found through lookupBackend", () => {
    const looked: number[] = [];
    const got = removedUdpBackends([slot(1, 9, 2)], (id) => {
      looked.push(id);
      return id === 9 ? { address: "10.244.1.12", port: 5353 } : undefined;
    });
    expect({ got, looked }).toEqual({ got: [a(9, "10.244.1.12")], looked: [9] });
  });

  test("a backend nobody can name is left out (nothing to match it by)", () => {
    expect(removedUdpBackends([slot(1, 9, 2)])).toEqual([]);
  });
});

/** Concatenated batch of (key, value) pairs. */
function batch(entries: [Uint8Array, Uint8Array][]) {
  const ks = entries[0]![0].length;
  const vs = entries[0]![1].length;
  const keys = new Uint8Array(entries.length * ks);
  const values = new Uint8Array(entries.length * vs);
  entries.forEach(([k, v], i) => {
    keys.set(k, i * ks);
    values.set(v, i * vs);
  });
  return { keys, values, count: entries.length };
}

const ctKey = (saddr: string, daddr: string, sport: number, dport: number, proto: number, dir: number) =>
  ct4Key.encode({ saddr, daddr, sport, dport, proto, dir });
const ctVal = (backend_id: number, rev_nat_id: number) =>
  ct4Entry.encode({
    last_seen_ns: 1n,
    packets: 1n,
    bytes: 1n,
    backend_id,
    nat_addr: "0.0.0.0",
    nat_port: 0,
    rev_nat_id,
    flags: 0,
  });
const snatVal = (rev_nat_id: number) =>
  snat4Entry.encode({
    last_seen_ns: 1n,
    client_addr: "192.168.50.1",
    fe_addr: "192.168.50.2",
    client_port: 40000,
    fe_port: 30053,
    rev_nat_id,
    flags: 0,
  });

/** Indices of the entries whose keys came back. */
function picked(keys: Uint8Array, all: Uint8Array, size: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < keys.length / size; i++) {
    const k = keys.subarray(i * size, (i + 1) * size);
    for (let j = 0; j < all.length / size; j++)
      if (all.subarray(j * size, (j + 1) * size).every((b, x) => b === k[x])) out.push(j);
  }
  return out;
}

describe("CT and SNAT entries of removed pairs", () => {
  const removed = [a(1, "10.244.2.10", 5353, 7)];

  test("kpr_ct4: both directions of the pair's UDP flows, nothing else", () => {
    const b = batch([
      [ctKey("192.168.50.1", "192.168.50.2", 40000, 30053, UDP, 0), ctVal(1, 7)], // 0: ingress, the pair
      [ctKey("10.244.2.10", "192.168.50.1", 5353, 40000, UDP, 1), ctVal(1, 7)], // 1: reply, the pair
      [ctKey("192.168.50.1", "192.168.50.2", 40001, 30053, UDP, 0), ctVal(2, 7)], // 2: other backend
      [ctKey("192.168.50.1", "192.168.50.2", 40002, 30054, UDP, 0), ctVal(1, 8)], // 3: other frontend, same backend
      [ctKey("192.168.50.1", "192.168.50.2", 40003, 30053, TCP, 0), ctVal(1, 7)], // 4: TCP
    ]);
    expect(picked(staleCt4Keys(b, removed, ct4Entry.size), b.keys, ct4Key.size)).toEqual([0, 1]);
  });

  test("kpr_snat4: UDP reply entries from the backend's address:port for that frontend", () => {
    const b = batch([
      [ctKey("10.244.2.10", "192.168.50.2", 5353, 61000, UDP, 1), snatVal(7)], // 0: the pair
      [ctKey("10.244.2.10", "192.168.50.2", 5353, 61001, UDP, 1), snatVal(8)], // 1: other frontend
      [ctKey("10.244.2.11", "192.168.50.2", 5353, 61002, UDP, 1), snatVal(7)], // 2: other backend
      [ctKey("10.244.2.10", "192.168.50.2", 5354, 61003, UDP, 1), snatVal(7)], // 3: other port
      [ctKey("10.244.2.10", "192.168.50.2", 5353, 61004, TCP, 1), snatVal(7)], // 4: TCP
    ]);
    expect(picked(staleSnat4Keys(b, removed, snat4Entry.size), b.keys, ct4Key.size)).toEqual([0]);
  });

  test("no removed pairs: nothing selected", () => {
    const b = batch([[ctKey("192.168.50.1", "192.168.50.2", 40000, 30053, UDP, 0), ctVal(1, 7)]]);
    expect(staleCt4Keys(b, [], ct4Entry.size).length).toBe(0);
  });
});

const skipKernel = needs({ root: true }, "sockterm clearConntrack on kernel LRU maps");

describe.skipIf(!!skipKernel)("clearConntrack on kernel LRU maps", () => {
  test("deletes the removed pairs' CT and SNAT entries (batch read, batched delete), keeps the rest", () => {
    using ct = BpfMap.create({
      name: "kpr_t_ct",
      type: MapType.LRU_HASH,
      keySize: 16,
      valueSize: 40,
      maxEntries: 64,
    });
    using snat = BpfMap.create({
      name: "kpr_t_snat",
      type: MapType.LRU_HASH,
      keySize: 16,
      valueSize: 24,
      maxEntries: 64,
    });
    const ctKeys: Uint8Array[] = [];
    for (let i = 0; i < 10; i++) {
      const k = ctKey("192.168.50.1", "192.168.50.2", 40000 + i, 30053, UDP, 0);
      ctKeys.push(k);
      // even ports: the removed backend 1 of frontend 7; odd: backend 2
      ct.update(k, ctVal(i % 2 === 0 ? 1 : 2, 7));
    }
    const snatKeys = [
      ctKey("10.244.2.10", "192.168.50.2", 5353, 61000, UDP, 1),
      ctKey("10.244.2.11", "192.168.50.2", 5353, 61001, UDP, 1),
    ];
    for (const k of snatKeys) snat.update(k, snatVal(7));
    const n = clearConntrack(ct, snat, [a(1, "10.244.2.10", 5353, 7)]);
    const left = (m: BpfMap, ks: Uint8Array[]) =>
      ks.map((k, i) => (m.lookup(k) ? i : -1)).filter((i) => i >= 0);
    expect({ n, ct: left(ct, ctKeys), snat: left(snat, snatKeys) }).toEqual({
      n: { ct: 5, snat: 1 },
      ct: [1, 3, 5, 7, 9],
      snat: [1],
    });
  });
});

describe("hookedNamespaces: where the socket iterator runs", () => {
  const cfg = (hostNamespaceOnly: boolean, cgroupRoot: string) =>
    ({ socketLB: { enabled: true, hostNamespaceOnly }, cgroup: { root: cgroupRoot } }) as unknown as Config;

  test("hostNamespaceOnly: kpr's own namespace only", () => {
    expect(hookedNamespaces(cfg(true, "/nonexistent"), ["/nonexistent"])).toEqual([
      { path: undefined, what: "kpr's" },
    ]);
  });

  test("a pinned namespace that is kpr's own is not searched twice; missing dirs are skipped", () => {
    const dir = mkdtempSync(join(tmpdir(), "kpr-netns-"));
    try {
      symlinkSync("/proc/thread-self/ns/net", join(dir, "self"));
      symlinkSync("/proc/self/ns/net", join(dir, "self-too"));
      expect(hookedNamespaces(cfg(false, "/nonexistent"), [dir, "/nonexistent"])).toEqual([
        { path: undefined, what: "kpr's" },
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
