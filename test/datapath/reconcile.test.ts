import { describe, expect, it } from "bun:test";
import { existsSync, mkdirSync, rmdirSync } from "node:fs";
import { type Config, defaultConfig } from "../../src/config/config.ts";
import { BpfMap, MapType } from "../../src/datapath/bpf.ts";
import {
  kprConfig,
  LB_STATE_MAPS,
  type LbStateMap,
  lb4AffKey,
  lb4AffVal,
  lb4Backend,
  lb4Key,
  lb4Service,
  lb4SrcrKey,
  svcMeta,
  u16Id,
  u32Id,
} from "../../src/datapath/lbmaps.ts";
import {
  type CurrentView,
  diffMapState,
  emptyMapState,
  encodeModel,
  type MapOp,
  type MapState,
  mapStateToFrontends,
  modelToMapState,
  ProgrammedModel,
  planFromDigests,
  previousIdsFromState,
  stableSlotOrder,
} from "../../src/datapath/mapstate.ts";
import {
  applyModel,
  checkCapacity,
  executeOps,
  type MapIo,
  openPinnedLbMaps,
  pruneAffinity,
  readCurrentEntries,
  readMapState,
  readPreviousIds,
} from "../../src/datapath/reconcile.ts";
import type { Backend, Frontend, LbModel } from "../../src/lb/model.ts";
import { needs } from "../harness/env.ts";
import { useTopology } from "../harness/netns.ts";

const cfg = defaultConfig();

function be(id: number, address: string, state: Backend["state"] = "active", local = false): Backend {
  return { id, address, port: 8080, protocol: "TCP", state, local };
}

function fe(id: number, address: string, backends: Backend[], extra: Partial<Frontend> = {}): Frontend {
  return {
    id,
    frontend: { address, port: 80, protocol: "TCP" },
    type: "ClusterIP",
    service: "default/web",
    portName: "http",
    backends,
    scope: "Cluster",
    ...extra,
  };
}

function model(...frontends: Frontend[]): LbModel {
  return { node: { name: "node-1", addresses: [], labels: {} }, frontends };
}

const stateOf = (m: LbModel) => modelToMapState(m, cfg).state;

/** An op as text: "update svc 10.96.0.1:80/6#0", "delete be 3", "update rnat 1". */
function describeOp(op: MapOp): string {
  const short = op.map.replace(/^kpr_(lb4_)?/, "");
  let key: string;
  switch (op.map) {
    case "kpr_lb4_svc": {
      const k = lb4Key.decode(op.key);
      key = `${k.address}:${k.dport}/${k.proto}#${k.slot}`;
      break;
    }
    case "kpr_lb4_be":
      key = String(u32Id.decode(op.key).v);
      break;
    case "kpr_lb4_srcr": {
      const k = lb4SrcrKey.decode(op.key);
      key = `${k.rev_nat_id}:${k.address}/${k.prefixlen - 32}`;
      break;
    }
    default:
      key = String(u16Id.decode(op.key).v);
  }
  if (op.map === "kpr_svc_meta" && op.value && svcMeta.decode(op.value).digest === 0n)
    return `clear digest ${key}`;
  return `${op.kind} ${short} ${key}`;
}

describe("modelToMapState", () => {
  it("writes the master, active-first slots, backends with LOCAL, revnat, meta and source ranges", () => {
    const f = fe(
      7,
      "10.96.0.10",
      [be(1, "10.244.1.10", "terminating"), be(2, "10.244.1.11", "active", true), be(3, "10.244.1.12")],
      {
        type: "LoadBalancer",
        scope: "Local",
        affinityTimeoutSeconds: 300,
        sourceRanges: { cidrs: ["10.1.2.0/24"], policy: "deny" },
        healthCheckNodePort: 32001,
      },
    );
    const st = stateOf(model(f));
    const svc = [...st.kpr_lb4_svc.values()].map((e) => ({
      k: lb4Key.decode(e.key),
      v: lb4Service.decode(e.value),
    }));
    svc.sort((a, b) => a.k.slot - b.k.slot);
    expect(svc.map((s) => [s.k.slot, s.v.backend_id])).toEqual([
      [0, 0],
      [1, 2],
      [2, 3],
      [3, 1],
    ]);
    expect(svc[0]!.v).toEqual({
      backend_id: 0,
      affinity_timeout: 300,
      count: 3,
      rev_nat_id: 7,
      // LoadBalancer | LOCAL_SCOPE | AFFINITY | SRC_RANGES | SRC_DENY
      flags: (1 << 3) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11),
      algorithm: 0,
      active_count: 2,
    });
    const bes = [...st.kpr_lb4_be.values()].map((e) => [u32Id.decode(e.key).v, lb4Backend.decode(e.value)]);
    expect(bes).toContainEqual([2, { address: "10.244.1.11", port: 8080, proto: 6, state: 0, flags: 1 }]);
    expect(bes).toContainEqual([1, { address: "10.244.1.10", port: 8080, proto: 6, state: 1, flags: 0 }]);
    const meta = svcMeta.decode([...st.kpr_svc_meta.values()][0]!.value);
    expect(meta).toMatchObject({
      name: "default/web",
      port_name: "http",
      health_check_port: 32001,
      reject: 0,
    });
    expect(meta).toMatchObject({ proto: 6, address: "10.96.0.10", port: 80 });
    expect(meta.digest).not.toBe(0n);
    const srcr = [...st.kpr_lb4_srcr.values()].map((e) => lb4SrcrKey.decode(e.key));
    expect(srcr).toEqual([{ prefixlen: 56, rev_nat_id: 7, address: "10.1.2.0" }]);
  });

  it("source ranges: a /0 range and the node marker get their own values (abi.h KPR_SRCR_V_*), and decode back", () => {
    const lbf = (id: number, cidrs: string[], node: boolean) =>
      fe(id, `203.0.113.${id}`, [be(1, "10.244.1.10")], {
        type: "LoadBalancer",
        sourceRanges: { cidrs, policy: "allow", ...(node ? { nodeSourceInList: true } : {}) },
      });
    const m = model(
      lbf(1, ["10.1.0.0/16"], true),
      lbf(2, ["0.0.0.0/0"], true),
      lbf(3, ["10.1.0.0/16"], false),
    );
    const st = stateOf(m);
    const srcr = [...st.kpr_lb4_srcr.values()]
      .map((e) => {
        const k = lb4SrcrKey.decode(e.key);
        return `${k.rev_nat_id} ${k.address}/${k.prefixlen - 32}=${e.value[0]}`;
      })
      .sort();
    // frontend 2's /0 already matches every source: no marker
    expect(srcr).toEqual(["1 0.0.0.0/32=3", "1 10.1.0.0/16=1", "2 0.0.0.0/0=2", "3 10.1.0.0/16=1"]);
    expect(mapStateToFrontends(st).frontends.map((f) => f.sourceRanges)).toEqual([
      { cidrs: ["10.1.0.0/16"], policy: "allow", nodeSourceInList: true },
      { cidrs: ["0.0.0.0/0"], policy: "allow" },
      { cidrs: ["10.1.0.0/16"], policy: "allow" },
    ]);
  });

  it("saturates active_count and drops terminating slots past 254 active backends", () => {
    const backends = Array.from({ length: 300 }, (_, i) => be(i + 1, `10.1.${i >> 8}.${i & 255}`));
    backends.push(be(999, "10.2.0.1", "terminating"));
    const st = stateOf(model(fe(1, "10.96.0.1", backends)));
    const master = lb4Service.decode(
      st.kpr_lb4_svc.get(
        Buffer.from(lb4Key.encode({ address: "10.96.0.1", dport: 80, slot: 0, proto: 6, scope: 0 })).toString(
          "hex",
        ),
      )!.value,
    );
    expect(master.count).toBe(300);
    expect(master.active_count).toBe(255);
  });

  it("marks a frontend without backends as reject and leaves IPv6 frontends out", () => {
    const d = modelToMapState(model(fe(1, "10.96.0.1", [], { reject: true }), fe(2, "fd00::1", [])), cfg);
    expect(d.skipped.map((s) => s.frontend)).toEqual(["[fd00::1]:80/TCP"]);
    expect(d.state.kpr_lb4_svc.size).toBe(1);
    expect(svcMeta.decode([...d.state.kpr_svc_meta.values()][0]!.value).reject).toBe(1);
  });

  it("decodes back into the same frontends, and their ids", () => {
    const m = model(
      fe(1, "10.96.0.1", [be(1, "10.244.0.1"), be(2, "10.244.0.2", "terminating", true)], {
        affinityTimeoutSeconds: 60,
      }),
      fe(2, "192.168.50.2", [be(2, "10.244.0.2", "terminating", true)], {
        type: "NodePort",
        frontend: { address: "192.168.50.2", port: 30080, protocol: "TCP" },
        sourceRanges: { cidrs: ["10.0.0.0/8", "172.16.0.0/12"], policy: "allow" },
        scope: "Local",
        healthCheckNodePort: 31000,
      }),
      fe(3, "10.96.0.3", [], { reject: true, portName: "" }),
    );
    const back = mapStateToFrontends(stateOf(m));
    expect(back.warnings).toEqual([]);
    expect(back.frontends).toEqual(m.frontends);
    const ids = previousIdsFromState(stateOf(m));
    expect([...ids.frontends]).toEqual(
      expect.arrayContaining([
        ["10.96.0.1:80/TCP", 1],
        ["192.168.50.2:30080/TCP", 2],
        ["10.96.0.3:80/TCP", 3],
      ]),
    );
    expect([...ids.backends].sort()).toEqual([
      ["10.244.0.1:8080/TCP", 1],
      ["10.244.0.2:8080/TCP", 2],
    ]);
  });
});

describe("two-scope frontends (eTP=Local external frontends)", () => {
  const np = (id: number, backends: Backend[], internal?: Backend[], extra: Partial<Frontend> = {}) =>
    fe(id, "192.168.50.2", backends, {
      type: "NodePort",
      frontend: { address: "192.168.50.2", port: 30080, protocol: "TCP" },
      scope: "Local",
      ...(internal ? { internalBackends: internal } : {}),
      ...extra,
    });
  const svcEntries = (st: MapState) =>
    [...st.kpr_lb4_svc.values()]
      .map((e) => ({ k: lb4Key.decode(e.key), v: lb4Service.decode(e.value) }))
      .sort((a, b) => a.k.scope - b.k.scope || a.k.slot - b.k.slot);

  it("writes the internal set as its own master and slots (scope 1, same id); the external master says TWO_SCOPES", () => {
    const st = stateOf(
      model(
        np(
          4,
          [be(1, "10.244.1.10", "active", true)],
          [be(1, "10.244.1.10", "active", true), be(2, "10.244.2.10")],
        ),
      ),
    );
    const e = svcEntries(st);
    expect(e.map((x) => [x.k.scope, x.k.slot, x.v.backend_id, x.v.rev_nat_id])).toEqual([
      [0, 0, 0, 4],
      [0, 1, 1, 4],
      [1, 0, 0, 4],
      [1, 1, 1, 4],
      [1, 2, 2, 4],
    ]);
    // NodePort | LOCAL_SCOPE | TWO_SCOPES outside; NodePort alone inside (Cluster scope)
    expect(e[0]!.v.flags).toBe((1 << 1) | (1 << 8) | (1 << 15));
    expect(e[2]!.v).toMatchObject({ flags: 1 << 1, count: 2, active_count: 2, algorithm: 0 });
    expect(st.kpr_lb4_be.size, "each backend once").toBe(2);
  });

  it("an external set that is empty (drop) keeps the internal set", () => {
    const st = stateOf(model(np(4, [], [be(2, "10.244.2.10")], { dropNoLocal: true })));
    const e = svcEntries(st);
    expect(e[0]!.v.flags & (1 << 14), "DROP_NO_LOCAL outside").toBe(1 << 14);
    expect(e[0]!.v.count).toBe(0);
    expect(e.filter((x) => x.k.scope === 1).map((x) => x.v.backend_id)).toEqual([0, 2]);
  });

  it("decodes back into the same frontend with its internalBackends", () => {
    const m = model(
      np(
        4,
        [be(1, "10.244.1.10", "terminating", true)],
        [be(1, "10.244.1.10", "active", true), be(2, "10.244.2.10")],
      ),
    );
    const back = mapStateToFrontends(stateOf(m));
    expect(back.warnings).toEqual([]);
    expect(back.frontends).toEqual(m.frontends);
    expect([...previousIdsFromState(stateOf(m)).frontends]).toEqual([["192.168.50.2:30080/TCP", 4]]);
  });

  it("the digest covers the internal set: a change there alone makes the frontend dirty", () => {
    const a = encodeModel(model(np(4, [be(1, "10.244.1.10")], [be(1, "10.244.1.10"), be(2, "10.244.2.10")])));
    const b = encodeModel(model(np(4, [be(1, "10.244.1.10")], [be(1, "10.244.1.10"), be(3, "10.244.2.11")])));
    expect([a.frontends[0]!.digestLo, a.frontends[0]!.digestHi]).not.toEqual([
      b.frontends[0]!.digestLo,
      b.frontends[0]!.digestHi,
    ]);
  });
});

describe("diffMapState ordering", () => {
  const a = be(1, "10.244.0.1");
  const b = be(2, "10.244.0.2");
  const c = be(3, "10.244.0.3");
  const two = model(fe(1, "10.96.0.1", [a, b]));
  const cases: [string, LbModel, LbModel, string[]][] = [
    ["same input: no ops", two, two, []],
    [
      "new frontend: backends, then revnat, then slots, then the master, then meta (its digest)",
      model(),
      two,
      [
        "update be 1",
        "update be 2",
        "update rnat 1",
        "update svc 10.96.0.1:80/6#1",
        "update svc 10.96.0.1:80/6#2",
        "update svc 10.96.0.1:80/6#0",
        "update svc_meta 1",
      ],
    ],
    [
      "removed frontend: the master first, then slots (highest first), then revnat, then backends, meta last",
      two,
      model(),
      [
        "delete svc 10.96.0.1:80/6#0",
        "delete svc 10.96.0.1:80/6#2",
        "delete svc 10.96.0.1:80/6#1",
        "delete rnat 1",
        "delete be 1",
        "delete be 2",
        "delete svc_meta 1",
      ],
    ],
    [
      "grow: the new backend, its slot, then the master's count",
      two,
      model(fe(1, "10.96.0.1", [a, b, c])),
      [
        "clear digest 1",
        "update be 3",
        "update svc 10.96.0.1:80/6#3",
        "update svc 10.96.0.1:80/6#0",
        "update svc_meta 1",
      ],
    ],
    [
      "shrink in the middle: slot rewritten, master count shrunk, last slot and backend deleted",
      model(fe(1, "10.96.0.1", [a, b, c])),
      model(fe(1, "10.96.0.1", [a, c])),
      [
        "clear digest 1",
        "update svc 10.96.0.1:80/6#2",
        "update svc 10.96.0.1:80/6#0",
        "delete svc 10.96.0.1:80/6#3",
        "delete be 2",
        "update svc_meta 1",
      ],
    ],
    [
      "backend turns terminating: backend state, slots reordered, master active_count",
      two,
      model(fe(1, "10.96.0.1", [be(1, "10.244.0.1", "terminating"), b])),
      [
        "clear digest 1",
        "update be 1",
        "update svc 10.96.0.1:80/6#1",
        "update svc 10.96.0.1:80/6#2",
        "update svc 10.96.0.1:80/6#0",
        "update svc_meta 1",
      ],
    ],
    [
      "backend changes node locality only: one backend write (and the digest)",
      two,
      model(fe(1, "10.96.0.1", [a, be(2, "10.244.0.2", "active", true)])),
      ["clear digest 1", "update be 2", "update svc_meta 1"],
    ],
    [
      "source ranges added: LPM entries before the master's flag",
      two,
      model(fe(1, "10.96.0.1", [a, b], { sourceRanges: { cidrs: ["10.0.0.0/8"], policy: "allow" } })),
      ["clear digest 1", "update srcr 1:10.0.0.0/8", "update svc 10.96.0.1:80/6#0", "update svc_meta 1"],
    ],
    [
      "source ranges removed: the master's flag first, then the LPM entries",
      model(fe(1, "10.96.0.1", [a, b], { sourceRanges: { cidrs: ["10.0.0.0/8"], policy: "allow" } })),
      two,
      ["clear digest 1", "update svc 10.96.0.1:80/6#0", "delete srcr 1:10.0.0.0/8", "update svc_meta 1"],
    ],
  ];
  it.each(cases)("%s", (_name, from, to, want) => {
    expect(diffMapState(stateOf(from), stateOf(to)).map(describeOp)).toEqual(want);
  });

  it("records previous values so a rollback can restore them", () => {
    const ops = diffMapState(stateOf(two), stateOf(model(fe(1, "10.96.0.1", [a, c]))));
    const upd = ops.find((o) => describeOp(o) === "update svc 10.96.0.1:80/6#2")!;
    expect(lb4Service.decode(upd.prev!).backend_id).toBe(2);
    expect(lb4Service.decode(upd.value!).backend_id).toBe(3);
    expect(ops.find((o) => o.kind === "update" && o.map === "kpr_lb4_be")?.prev).toBeUndefined();
  });
});

describe("checkCapacity", () => {
  const max = (n: number) =>
    Object.fromEntries(LB_STATE_MAPS.map((m) => [m, n])) as Record<LbStateMap, number>;
  it("rejects a plan whose peak does not fit, naming the map, before any write", () => {
    const desired = stateOf(
      model(fe(1, "10.96.0.1", [be(1, "10.0.0.1"), be(2, "10.0.0.2"), be(3, "10.0.0.3")])),
    );
    const ops = diffMapState(emptyMapState(), desired);
    expect(() => checkCapacity(emptyMapState(), ops, max(3))).toThrow(
      /kpr_lb4_svc needs 4 entries, holds 3.*nothing was changed/,
    );
    expect(() => checkCapacity(emptyMapState(), ops, max(4))).not.toThrow();
  });

  it("counts upserts before deletions (replacing every frontend needs room for both)", () => {
    const from = stateOf(model(fe(1, "10.96.0.1", [])));
    const ops = diffMapState(from, stateOf(model(fe(2, "10.96.0.2", []))));
    expect(() => checkCapacity(from, ops, max(1))).toThrow(/kpr_lb4_svc needs 2 entries, holds 1/);
  });
});

const skipKernel = needs({ root: true }, "reconcile against kernel maps");

/** Real BPF hash/LPM maps shaped like the LB maps (not pinned; closed by the test). */
function kernelMaps(maxEntries = 1024): Record<LbStateMap, BpfMap> {
  const mk = (name: LbStateMap, keySize: number, valueSize: number, type: number = MapType.HASH) =>
    BpfMap.create({ name, type, keySize, valueSize, maxEntries });
  return {
    kpr_lb4_svc: mk("kpr_lb4_svc", 12, 16),
    kpr_lb4_be: mk("kpr_lb4_be", 4, 12),
    kpr_lb4_rnat: mk("kpr_lb4_rnat", 2, 8),
    kpr_svc_meta: mk("kpr_svc_meta", 2, 152),
    kpr_lb4_srcr: mk("kpr_lb4_srcr", 12, 1, MapType.LPM_TRIE),
  };
}

/** Wraps maps so that the n-th write call (update, batch or delete) throws. */
function failingAt(
  maps: Record<LbStateMap, BpfMap>,
  n: number,
): { maps: Record<LbStateMap, MapIo>; calls: () => number } {
  let calls = 0;
  const tick = () => {
    calls++;
    if (calls === n) throw new Error("injected write failure");
  };
  const out = {} as Record<LbStateMap, MapIo>;
  for (const name of LB_STATE_MAPS) {
    const m = maps[name];
    out[name] = {
      name,
      maxEntries: m.maxEntries,
      update: (k, v) => {
        tick();
        m.update(k, v);
      },
      updateBatch: (k, v, c) => {
        // the failing batch writes half of its entries first, as a partial kernel batch would
        if (calls + 1 === n) {
          const half = Math.max(1, c >> 1);
          m.updateBatch(k.subarray(0, half * m.keySize), v.subarray(0, half * m.valueSize), half);
        }
        tick();
        m.updateBatch(k, v, c);
      },
      delete: (k) => {
        tick();
        return m.delete(k);
      },
      deleteBatch: (k, c) => {
        // the failing batch deletes half of its keys first, as a partial kernel batch would
        if (calls + 1 === n)
          m.deleteBatch(k.subarray(0, Math.max(1, c >> 1) * m.keySize), Math.max(1, c >> 1));
        tick();
        return m.deleteBatch(k, c);
      },
    };
  }
  return { maps: out, calls: () => calls };
}

function asPlain(st: MapState): Record<string, string[]> {
  return Object.fromEntries(
    LB_STATE_MAPS.map((m) => [
      m,
      [...st[m].entries()].map(([k, e]) => `${k}=${Buffer.from(e.value).toString("hex")}`).sort(),
    ]),
  );
}

describe.skipIf(!!skipKernel)("executeOps on kernel maps", () => {
  const m1 = model(
    fe(1, "10.96.0.1", [be(1, "10.244.0.1"), be(2, "10.244.0.2")], {
      sourceRanges: { cidrs: ["10.0.0.0/8", "192.168.0.0/16", "172.16.5.0/24"], policy: "allow" },
    }),
    fe(2, "10.96.0.2", [be(2, "10.244.0.2")]),
  );
  const m2 = model(
    fe(1, "10.96.0.1", [be(2, "10.244.0.2"), be(3, "10.244.0.3"), be(4, "10.244.0.4")]),
    fe(3, "10.96.0.3", [be(4, "10.244.0.4")]),
  );

  it("programs a plan and reads back exactly the desired state", () => {
    const maps = kernelMaps();
    try {
      const n = executeOps(diffMapState(emptyMapState(), stateOf(m1)), maps);
      expect(n).toBeGreaterThan(0);
      expect(asPlain(readMapState(maps))).toEqual(asPlain(stateOf(m1)));
      executeOps(diffMapState(readMapState(maps), stateOf(m2)), maps);
      expect(asPlain(readMapState(maps))).toEqual(asPlain(stateOf(m2)));
      expect(diffMapState(readMapState(maps), stateOf(m2))).toEqual([]);
    } finally {
      for (const m of Object.values(maps)) m.close();
    }
  });

  it("removing every frontend is a few batched deletes, not one syscall per entry", () => {
    const maps = kernelMaps(8192);
    try {
      const many = model(
        ...Array.from({ length: 600 }, (_, i) =>
          fe(i + 1, `10.96.${i >> 8}.${i & 255}`, [
            be(i + 1, `10.244.${i >> 8}.${i & 255}`),
            be(9999, "10.245.0.1"),
          ]),
        ),
      );
      executeOps(diffMapState(emptyMapState(), stateOf(many)), maps);
      const { maps: io, calls } = failingAt(maps, -1);
      const ops = diffMapState(readMapState(maps), emptyMapState());
      expect(executeOps(ops, io), "writes").toBe(ops.length);
      expect(ops.length, "entries removed").toBeGreaterThan(3000);
      // one call per (map, kind) group of up to 4096 entries
      expect(calls(), "write calls for removing 600 frontends").toBeLessThanOrEqual(10);
      expect(Object.values(readMapState(maps)).map((c) => c.size)).toEqual([0, 0, 0, 0, 0]);
    } finally {
      for (const m of Object.values(maps)) m.close();
    }
  });

  it("pruneAffinity drops exactly the entries of gone frontends or backends, in batches", () => {
    const aff = BpfMap.create({
      name: "kpr_lb4_aff",
      type: MapType.LRU_HASH,
      keySize: 16,
      valueSize: 8,
      maxEntries: 8192,
    });
    try {
      for (let i = 0; i < 3000; i++)
        aff.update(
          lb4AffKey.encode({ client: BigInt(i + 1), rev_nat_id: (i % 7) + 1, netns_cookie: 0 }),
          lb4AffVal.encode({ backend_id: (i % 5) + 1, last_used: 1 }),
        );
      // frontend 3 and backend 2 are gone
      const removed = pruneAffinity(aff, (fe, be) => fe !== 3 && be !== 2);
      const left = aff.lookupBatch();
      const kept = Array.from({ length: left.count }, (_, j) => ({
        k: lb4AffKey.decode(left.keys.subarray(j * 16, j * 16 + 16)),
        v: lb4AffVal.decode(left.values.subarray(j * 8, j * 8 + 8)),
      }));
      const want = Array.from({ length: 3000 }, (_, i) => i).filter(
        (i) => (i % 7) + 1 !== 3 && (i % 5) + 1 !== 2,
      );
      expect(removed + left.count).toBe(3000);
      expect(kept.map((e) => Number(e.k.client) - 1).sort((a, b) => a - b)).toEqual(want);
    } finally {
      aff.close();
    }
  });

  it("a real kernel error mid-way (map full, capacity check bypassed) is rolled back", () => {
    const maps = kernelMaps(6);
    try {
      executeOps(diffMapState(emptyMapState(), stateOf(m1)), maps);
      const before = asPlain(readMapState(maps));
      const ops = diffMapState(readMapState(maps), stateOf(m2));
      // the backends fit, the service map overflows after some writes went in
      expect(() => executeOps(ops, maps)).toThrow(
        /update kpr_lb4_svc failed: .*E2BIG.*rolled back \d+ writes/,
      );
      expect(asPlain(readMapState(maps))).toEqual(before);
    } finally {
      for (const m of Object.values(maps)) m.close();
    }
  });

  const plan = diffMapState(stateOf(m1), stateOf(m2));
  // every write position of the plan's batches, from the first to the last
  it.each(Array.from({ length: 8 }, (_, i) => i + 1))("a write failing at call %i is rolled back", (n) => {
    const maps = kernelMaps();
    try {
      executeOps(diffMapState(emptyMapState(), stateOf(m1)), maps);
      const before = asPlain(readMapState(maps));
      const { maps: io, calls } = failingAt(maps, n);
      const ops = diffMapState(readMapState(maps), stateOf(m2));
      expect(ops.length).toBe(plan.length);
      expect(() => executeOps(ops, io)).toThrow(/injected write failure \(rolled back \d+ writes/);
      expect(calls()).toBeGreaterThanOrEqual(n);
      expect(asPlain(readMapState(maps))).toEqual(before);
    } finally {
      for (const m of Object.values(maps)) m.close();
    }
  });
});

const skipApply = needs({ root: true, bpfObjects: ["sock", "tc"] }, "applyModel in-process");

describe.skipIf(!!skipApply)("applyModel (socket LB only, no devices)", () => {
  const topo = useTopology();
  const config = (): Config => ({
    ...defaultConfig(),
    devices: [],
    bpf: { root: topo().bpfRoot, lbMapMax: 64 },
    cgroup: { root: topo().cgroupDir },
  });
  const quiet = { log: { info() {}, warn() {}, debug() {} } as never };
  const m1 = model(fe(1, "10.96.0.1", [be(1, "10.244.0.1"), be(2, "10.244.0.2")]));

  it("reads nothing before the first apply", async () => {
    expect(await readCurrentEntries(config())).toBeUndefined();
    expect(readPreviousIds(config()).frontends.size).toBe(0);
  });

  it("programs, then reports no changes for the same input", async () => {
    const r1 = await applyModel(m1, config(), quiet);
    expect(r1.changed).toBe(true);
    expect(r1.datapathChanges).toEqual(
      expect.arrayContaining(["attached cgroup connect4", "config updated"]),
    );
    for (const hook of ["connect4", "sendmsg4", "recvmsg4", "getpeername4"])
      expect(existsSync(`${topo().bpfRoot}/links/cgroup-${hook}`)).toBe(true);
    const r2 = await applyModel(m1, config(), quiet);
    expect(r2).toMatchObject({ changed: false, writes: 0, datapathChanges: [] });
    expect(r2.summary).toMatch(/^no changes/);
    const entries = await readCurrentEntries(config());
    expect(entries?.map((e) => [e.id, e.frontend.address, e.backends.map((x) => x.address)])).toEqual([
      [1, "10.96.0.1", ["10.244.0.1", "10.244.0.2"]],
    ]);
    expect([...readPreviousIds(config()).backends]).toEqual(
      expect.arrayContaining([
        ["10.244.0.1:8080/TCP", 1],
        ["10.244.0.2:8080/TCP", 2],
      ]),
    );
  });

  it("stops on a capacity error before writing anything", async () => {
    const big = model(
      ...Array.from({ length: 40 }, (_, i) =>
        fe(i + 1, `10.96.1.${i + 1}`, [be(i + 1, `10.244.1.${i + 1}`)]),
      ),
    );
    await expect(applyModel(big, config(), quiet)).rejects.toThrow(/kpr_lb4_svc needs \d+ entries, holds 64/);
    const entries = await readCurrentEntries(config());
    expect(entries?.length).toBe(1);
  });

  it("a changed cgroup.root moves the socket hooks to the new cgroup", async () => {
    const moved = `${topo().cgroupDir}-moved`;
    mkdirSync(moved);
    const show = (dir: string) => Bun.spawnSync(["bpftool", "cgroup", "show", dir]).stdout.toString();
    try {
      await applyModel(m1, config(), quiet);
      expect(show(topo().cgroupDir), "hooks on the first cgroup").toContain("kpr_sock4_connect");
      const r = await applyModel(m1, { ...config(), cgroup: { root: moved } }, quiet);
      expect(r.datapathChanges, "reported").toEqual(expect.arrayContaining(["attached cgroup connect4"]));
      expect(
        {
          old: show(topo().cgroupDir).includes("kpr_sock4_connect"),
          moved: show(moved).includes("kpr_sock4_connect"),
        },
        "where connect4 runs after the move",
      ).toEqual({ old: false, moved: true });
      await applyModel(m1, config(), quiet);
      expect(show(moved), "moved back").not.toContain("kpr_sock4_connect");
    } finally {
      rmdirSync(moved);
    }
  });

  it("turns socket LB off: cgroup links detached", async () => {
    const c = config();
    c.socketLB.enabled = false;
    const r = await applyModel(m1, c, quiet);
    expect(r.datapathChanges).toEqual(expect.arrayContaining(["detached cgroup-connect4", "config updated"]));
    expect(existsSync(`${topo().bpfRoot}/links/cgroup-connect4`)).toBe(false);
  });
});

describe.skipIf(!!skipApply)("applyModel plans from per-frontend digests", () => {
  const topo = useTopology();
  const config = (): Config => ({
    ...defaultConfig(),
    devices: [],
    socketLB: { ...defaultConfig().socketLB, enabled: false },
    bpf: { root: topo().bpfRoot, lbMapMax: 8192 },
    cgroup: { root: topo().cgroupDir },
  });
  const quiet = { log: { info() {}, warn() {}, debug() {} } as never };
  const ip = (n: number) => `10.${128 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;
  /** 300 frontends × 4 backends; `moved` frontends get endpoint 0 at a new address (new id). */
  const services = (moved: number[] = [], extra: Partial<Record<number, Partial<Frontend>>> = {}): LbModel =>
    model(
      ...Array.from({ length: 300 }, (_, s) =>
        fe(
          s + 1,
          `10.96.${s >> 8}.${s & 255}`,
          Array.from({ length: 4 }, (_, e) =>
            moved.includes(s + 1) && e === 0
              ? be(100000 + s, ip(200000 + s))
              : be(s * 4 + e + 1, ip(s * 4 + e)),
          ),
          extra[s + 1] ?? {},
        ),
      ),
    );
  const pinnedState = () => {
    const maps = openPinnedLbMaps(config())!;
    try {
      return readMapState(maps);
    } finally {
      for (const m of Object.values(maps)) m.close();
    }
  };
  /** rev-NAT ids (and backend ids) an op touches. */
  const touched = (ops: MapOp[]) => {
    const ids = new Set<number>();
    const bes = new Set<number>();
    for (const op of ops) {
      if (op.map === "kpr_lb4_be") bes.add(u32Id.decode(op.key).v);
      else if (op.map === "kpr_lb4_svc") ids.add(lb4Service.decode((op.value ?? op.prev)!).rev_nat_id);
      else if (op.map === "kpr_lb4_srcr") ids.add(lb4SrcrKey.decode(op.key).rev_nat_id);
      else ids.add(u16Id.decode(op.key).v);
    }
    return { ids: [...ids].sort((a, b) => a - b), bes: [...bes].sort((a, b) => a - b) };
  };

  it("first apply diffs everything; a change at a few frontends writes only theirs, equal to a full apply", async () => {
    const r0 = await applyModel(services(), config(), quiet);
    expect(r0.planned, "first apply").toBe("full");
    expect(asPlain(pinnedState()), "after the first apply").toEqual(asPlain(stateOf(services())));

    const m1 = services([7, 150, 299], { 42: { sourceRanges: { cidrs: ["10.0.0.0/8"], policy: "allow" } } });
    const r1 = await applyModel(m1, config(), quiet);
    expect(r1.planned, "re-apply").toBe("digests");
    expect(touched(r1.ops), "entries written").toEqual({
      ids: [7, 42, 150, 299],
      bes: [25, 597, 1193, 100006, 100149, 100298],
    });
    expect(asPlain(pinnedState()), "maps after the re-apply").toEqual(asPlain(stateOf(m1)));
    expect(r1.summary).toMatch(
      /^300 frontends, 1200 backends programmed \(frontends \+0 ~4 -0; backends \+3 ~0 -3; \d+ map writes\) in [\d.]+ ms$/,
    );

    // back, with one frontend gone and one new
    const m2 = model(
      ...services().frontends.filter((f) => f.id !== 10),
      fe(301, "10.96.9.1", [be(1, ip(0))]),
    );
    const r2 = await applyModel(m2, config(), quiet);
    expect(r2.planned).toBe("digests");
    expect(touched(r2.ops).ids).toEqual([7, 10, 42, 150, 299, 301]);
    expect(asPlain(pinnedState()), "maps after removing and adding").toEqual(asPlain(stateOf(m2)));

    const r3 = await applyModel(m2, config(), quiet);
    expect(r3).toMatchObject({ changed: false, writes: 0, planned: "digests" });
    expect(r3.summary).toMatch(/^no changes .*; checked in [\d.]+ ms$/);
  });

  it("diffs a frontend without a digest entry by entry (and repairs it)", async () => {
    const m = services();
    await applyModel(m, config(), quiet);
    const maps = openPinnedLbMaps(config())!;
    try {
      // frontend 5: slot 2 names a wrong backend, its digest cleared; frontend 6: slot 2 wrong too,
      // its digest left (trusted: not looked at)
      for (const id of [5, 6]) {
        const key = lb4Key.encode({ address: `10.96.0.${id - 1}`, dport: 80, slot: 2, proto: 6, scope: 0 });
        maps.kpr_lb4_svc.update(
          key,
          lb4Service.encode({ ...lb4Service.decode(maps.kpr_lb4_svc.lookup(key)!), backend_id: 1 }),
        );
      }
      const mk = u16Id.encode({ v: 5 });
      maps.kpr_svc_meta.update(
        mk,
        svcMeta.encode({ ...svcMeta.decode(maps.kpr_svc_meta.lookup(mk)!), digest: 0n }),
      );
    } finally {
      for (const x of Object.values(maps)) x.close();
    }
    const r = await applyModel(m, config(), quiet);
    expect(r.planned).toBe("digests");
    expect(touched(r.ops).ids, "only the frontend without a digest").toEqual([5]);
    const slot2 = (id: number) =>
      lb4Service.decode(
        pinnedState().kpr_lb4_svc.get(
          Buffer.from(
            lb4Key.encode({ address: `10.96.0.${id - 1}`, dport: 80, slot: 2, proto: 6, scope: 0 }),
          ).toString("hex"),
        )!.value,
      ).backend_id;
    expect(slot2(5), "frontend 5 repaired").toBe(4 * 4 + 2);
    expect(slot2(6), "frontend 6's digest is trusted (only a full diff would see it)").toBe(1);
    expect(svcMeta.decode(pinnedState().kpr_svc_meta.get("0500")!.value).digest).not.toBe(0n);
  });

  it("skips loading the objects while the pinned links run them, and reloads once the digest is gone", async () => {
    const c = config();
    const m = services();
    await applyModel(m, c, quiet);
    const { datapathDigest } = await import("../../src/datapath/loader.ts");
    const cfgMap = BpfMap.openPinned(`${c.bpf.root}/maps/kpr_config`);
    try {
      const read = () => kprConfig.decode(cfgMap.lookup(u32Id.encode({ v: 0 }))!).datapath_digest;
      expect(read(), "digest stored").toBe(await datapathDigest(c));
      cfgMap.update(
        u32Id.encode({ v: 0 }),
        kprConfig.encode({
          ...kprConfig.decode(cfgMap.lookup(u32Id.encode({ v: 0 }))!),
          datapath_digest: 0n,
        }),
      );
      const r = await applyModel(m, c, quiet);
      expect(r.datapathChanges, "same programs: nothing to replace").toEqual([]);
      expect(read(), "digest stored again after a load").toBe(await datapathDigest(c));
      const other = { ...c, bpf: { ...c.bpf, lbMapMax: 4096 } };
      expect(await datapathDigest(other)).not.toBe(await datapathDigest(c));
    } finally {
      cfgMap.close();
    }
  });
});

describe("planFromDigests after an interrupted apply", () => {
  /** A CurrentView over a MapState (what pinnedView reads from the kernel). */
  const viewOf = (st: MapState): CurrentView => {
    const batch = (c: MapState[LbStateMap]) => {
      const list = [...c.values()];
      const ks = list[0]?.key.length ?? 0;
      const vs = list[0]?.value.length ?? 0;
      const keys = new Uint8Array(list.length * ks);
      const values = new Uint8Array(list.length * vs);
      list.forEach((e, i) => {
        keys.set(e.key, i * ks);
        values.set(e.value, i * vs);
      });
      return { keys, values, count: list.length };
    };
    const get = (c: MapState[LbStateMap], k: Uint8Array) => c.get(Buffer.from(k).toString("hex"))?.value;
    return {
      meta: batch(st.kpr_svc_meta),
      beKeys: () => batch(st.kpr_lb4_be),
      lookupBe: (k) => get(st.kpr_lb4_be, k),
      srcr: () => st.kpr_lb4_srcr,
      lookupSvc: (k) => get(st.kpr_lb4_svc, k),
      lookupRnat: (k) => get(st.kpr_lb4_rnat, k),
    };
  };
  /** `st` with `ops` done (a copy). */
  const run = (st: MapState, ops: MapOp[]): MapState => {
    const out = emptyMapState();
    for (const m of LB_STATE_MAPS) for (const [k, e] of st[m]) out[m].set(k, e);
    for (const op of ops) {
      const k = Buffer.from(op.key).toString("hex");
      if (op.kind === "delete") out[op.map].delete(k);
      else out[op.map].set(k, { key: op.key, value: op.value! });
    }
    return out;
  };
  const bs = (...ids: number[]) => ids.map((i) => be(i, `10.244.0.${i}`));
  const other = fe(2, "10.96.0.2", bs(9));
  const cases: [string, LbModel, LbModel][] = [
    ["frontend removed", model(fe(1, "10.96.0.1", bs(1, 2, 3, 4)), other), model(other)],
    [
      "frontend shrunk",
      model(fe(1, "10.96.0.1", bs(1, 2, 3, 4)), other),
      model(fe(1, "10.96.0.1", bs(1, 2)), other),
    ],
    [
      "backends replaced",
      model(fe(1, "10.96.0.1", bs(1, 2, 3)), other),
      model(fe(1, "10.96.0.1", bs(5)), other),
    ],
    [
      "a frontend becomes two-scope",
      model(fe(1, "10.96.0.1", bs(1, 2, 3), { type: "NodePort" }), other),
      model(
        fe(1, "10.96.0.1", bs(1), { type: "NodePort", scope: "Local", internalBackends: bs(1, 2, 3) }),
        other,
      ),
    ],
    [
      "a two-scope frontend becomes one-scope",
      model(
        fe(1, "10.96.0.1", bs(1), { type: "NodePort", scope: "Local", internalBackends: bs(1, 2, 3, 4) }),
        other,
      ),
      model(fe(1, "10.96.0.1", bs(1, 2), { type: "NodePort" }), other),
    ],
    [
      "a two-scope frontend removed",
      model(
        fe(1, "10.96.0.1", bs(1), { type: "NodePort", scope: "Local", internalBackends: bs(1, 2, 3) }),
        other,
      ),
      model(other),
    ],
    [
      "a two-scope frontend's internal set replaced",
      model(
        fe(1, "10.96.0.1", bs(1), { type: "NodePort", scope: "Local", internalBackends: bs(1, 2, 3) }),
        other,
      ),
      model(
        fe(1, "10.96.0.1", bs(1), { type: "NodePort", scope: "Local", internalBackends: bs(1, 6) }),
        other,
      ),
    ],
  ];
  it("a one-endpoint change rewrites the slot it takes, not every slot after it (kpr apply and the daemon)", () => {
    const fifty = (swap: boolean) =>
      model(
        fe(
          1,
          "10.96.0.1",
          Array.from({ length: 50 }, (_, i) =>
            swap && i === 3 ? be(100, "10.244.0.200") : be(i + 1, `10.244.0.${i + 1}`),
          ),
        ),
      );
    const start = stateOf(fifty(false));
    const svcWrites = (ops: MapOp[]) => ops.filter((o) => o.map === "kpr_lb4_svc").map(describeOp);
    // kpr apply: planned from the digests against the programmed maps
    const plan = planFromDigests(encodeModel(fifty(true)), viewOf(start), 256)!;
    expect(svcWrites(plan.ops), "kpr apply's service-map writes").toEqual(["update svc 10.96.0.1:80/6#4"]);
    const after = run(start, plan.ops);
    expect(mapStateToFrontends(after).frontends, "the same frontend as a fresh apply").toEqual(
      mapStateToFrontends(stateOf(fifty(true))).frontends,
    );
    // the daemon: its in-memory model
    const m0 = fifty(false);
    const prog = ProgrammedModel.of(m0);
    const d = prog.change({ removed: m0.frontends, added: fifty(true).frontends });
    expect(svcWrites(d.ops), "the daemon's service-map writes").toEqual(["update svc 10.96.0.1:80/6#4"]);
  });

  it("stableSlotOrder keeps slots, fills the free ones, and keeps active before terminating", () => {
    expect(stableSlotOrder([1, 2, 4, 5], 4, [1, 2, 3, 4, 5]), "one removed: the last moves in").toEqual([
      1, 2, 5, 4,
    ]);
    expect(stableSlotOrder([1, 2, 3, 9], 4, [1, 2, 3]), "one added: appended").toEqual([1, 2, 3, 9]);
    expect(
      stableSlotOrder([2, 3, 1], 2, [1, 2, 3]),
      "1 turned terminating: it leaves the active region",
    ).toEqual([3, 2, 1]);
    expect(stableSlotOrder([1, 2], 2, []), "nothing programmed").toEqual([1, 2]);
  });

  it.each(cases)("%s: the next apply finishes the work wherever the last one stopped", (_n, from, to) => {
    const start = stateOf(from);
    const ops = diffMapState(start, stateOf(to));
    for (let cut = 0; cut <= ops.length; cut++) {
      const partial = run(start, ops.slice(0, cut));
      const plan = planFromDigests(encodeModel(to), viewOf(partial), 256)!;
      expect(plan, `plan after ${cut} of ${ops.length} writes`).toBeDefined();
      expect(asPlain(run(partial, plan.ops)), `state after ${cut} of ${ops.length} writes`).toEqual(
        asPlain(stateOf(to)),
      );
    }
  });
});
