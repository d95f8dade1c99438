/**
 * Incremental translation and the in-memory programmed model against the full path: after every
 * change of a random sequence, IncrementalTranslation's model equals translate() given the ids in
 * use, and the writes ProgrammedModel.change() returns turn the previous map content into exactly
 * what modelToMapState() makes of the full model.
 */
import { describe, expect, test } from "bun:test";
import { defaultConfig } from "../../src/config/config.ts";
import { LB_STATE_MAPS, lb4Key, lb4Service } from "../../src/datapath/lbmaps.ts";
import {
  emptyMapState,
  hex,
  type MapOp,
  type MapState,
  modelToMapState,
  ProgrammedModel,
} from "../../src/datapath/mapstate.ts";
import { InputError } from "../../src/errors.ts";
import type { ClusterState, EndpointSlice, Service } from "../../src/k8s/types.ts";
import type { LbModel, PreviousIds } from "../../src/lb/model.ts";
import { IncrementalTranslation, type ServiceObjects, translate } from "../../src/lb/translate.ts";
import { state as mkState, node, pod } from "../lb/_fixtures.ts";

const cfg = (() => {
  const c = defaultConfig();
  c.nodeName = "node-1";
  return c;
})();

/** A small deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Svc {
  name: string;
  ip: string;
  nodePort?: number;
  udp: boolean;
  local: boolean;
  eps: { ip: string; ready: boolean; terminating: boolean; node: string }[];
}

function objects(s: Svc): { svc: Service; slice: EndpointSlice } {
  const proto = s.udp ? "UDP" : "TCP";
  return {
    svc: {
      kind: "Service",
      metadata: { name: s.name, namespace: "t" },
      spec: {
        type: s.nodePort !== undefined ? "NodePort" : "ClusterIP",
        clusterIP: s.ip,
        ...(s.local ? { externalTrafficPolicy: "Local" } : {}),
        ports: [
          {
            name: "p",
            port: 80,
            targetPort: 8080,
            protocol: proto,
            ...(s.nodePort ? { nodePort: s.nodePort } : {}),
          },
        ],
      },
    },
    slice: {
      kind: "EndpointSlice",
      metadata: { name: `${s.name}-a`, namespace: "t", labels: { "kubernetes.io/service-name": s.name } },
      addressType: "IPv4",
      ports: [{ name: "p", port: 8080, protocol: proto }],
      endpoints: s.eps.map((e) => ({
        addresses: [e.ip],
        conditions: { ready: e.ready, serving: true, terminating: e.terminating },
        nodeName: e.node,
      })),
    },
  };
}

function clusterState(svcs: Map<string, Svc>, hostPort: number | undefined): ClusterState {
  const st = mkState({ nodes: [node("node-1", ["192.168.1.10"])] });
  for (const s of svcs.values()) {
    const o = objects(s);
    st.services.push(o.svc);
    st.endpointSlices.push(o.slice);
  }
  if (hostPort !== undefined)
    st.pods.push(pod("hp", "10.244.9.9", [{ containerPort: 9000, hostPort, protocol: "TCP" }]));
  return st;
}

function idsOf(m: LbModel): PreviousIds {
  const frontends = new Map<string, number>();
  const backends = new Map<string, number>();
  const k = (a: { address: string; port: number; protocol: string }) =>
    `${a.address}:${a.port}/${a.protocol}`;
  for (const f of m.frontends) {
    frontends.set(k(f.frontend), f.id);
    for (const b of [...f.backends, ...(f.internalBackends ?? [])]) backends.set(k(b), b.id);
  }
  return { frontends, backends };
}

function applyOps(st: MapState, ops: MapOp[]): void {
  for (const op of ops) {
    if (op.kind === "update") st[op.map].set(hex(op.key), { key: op.key, value: op.value! });
    else st[op.map].delete(hex(op.key));
  }
}

/**
 * Each map as sorted "key=value" lines, with every frontend's slots renumbered in a canonical
 * order (each region, active and terminating, sorted by backend id): the writes keep backends in
 * their slots (stableSlotOrder), so the daemon's layout may differ from a fresh encoding's while
 * holding the same backends.
 */
function dump(st: MapState): Record<string, string[]> {
  const svc = new Map<string, { master?: Uint8Array; slots: Map<number, Uint8Array> }>();
  for (const e of st.kpr_lb4_svc.values()) {
    const k = lb4Key.decode(e.key);
    const mk = hex(lb4Key.encode({ ...k, slot: 0 }));
    const g: { master?: Uint8Array; slots: Map<number, Uint8Array> } = svc.get(mk) ?? { slots: new Map() };
    if (k.slot === 0) g.master = e.value;
    else g.slots.set(k.slot, e.value);
    svc.set(mk, g);
  }
  const lines: string[] = [];
  for (const [mk, g] of svc) {
    if (g.master) lines.push(`${mk}=${hex(g.master)}`);
    const active = g.master ? lb4Service.decode(g.master).active_count : 0;
    const vals = [...g.slots.entries()].sort((a, b) => a[0] - b[0]).map(([, v]) => v);
    const a = active === 255 ? vals.length : Math.min(active, vals.length);
    const id = (v: Uint8Array) => lb4Service.decode(v).backend_id;
    const ordered = [
      ...vals.slice(0, a).sort((x, y) => id(x) - id(y)),
      ...vals.slice(a).sort((x, y) => id(x) - id(y)),
    ];
    const key = lb4Key.decode(Buffer.from(mk, "hex"));
    ordered.forEach((v, i) => {
      lines.push(`${hex(lb4Key.encode({ ...key, slot: i + 1 }))}=${hex(v)}`);
    });
  }
  return Object.fromEntries(
    LB_STATE_MAPS.map((m) => [
      m,
      m === "kpr_lb4_svc"
        ? lines.sort()
        : [...st[m].entries()].map(([k, e]) => `${k}=${hex(e.value)}`).sort(),
    ]),
  );
}

describe("incremental translation equals the full translation", () => {
  test.each([1, 2, 3, 4, 5])("random sequence, seed %i (300 changes)", (seed) => {
    const r = rng(seed);
    const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)]!;
    const svcs = new Map<string, Svc>();
    let nextSvc = 0;
    let nextIp = 1;
    const podIp = () => `10.244.${(nextIp >> 8) & 255}.${nextIp++ & 255}`;
    const newSvc = (): Svc => {
      const i = nextSvc++;
      const eps = Array.from({ length: 1 + Math.floor(r() * 4) }, () => ({
        ip: podIp(),
        ready: true,
        terminating: false,
        node: r() < 0.4 ? "node-1" : "node-2",
      }));
      return {
        name: `s${i}`,
        ip: `10.96.${i >> 8}.${(i & 255) + 1}`,
        ...(r() < 0.3 ? { nodePort: 30000 + i } : {}),
        udp: r() < 0.2,
        local: r() < 0.2,
        eps,
      };
    };
    for (let i = 0; i < 20; i++) {
      const s = newSvc();
      svcs.set(`t/${s.name}`, s);
    }
    let hostPort: number | undefined = 8081;
    let st = clusterState(svcs, hostPort);
    let full = translate(st, cfg);
    const inc = IncrementalTranslation.seed(full, cfg);
    const prog = ProgrammedModel.of(full);
    const kernel = emptyMapState();
    applyOps(
      kernel,
      ProgrammedModel.of({ node: full.node, frontends: [] }).change({ removed: [], added: full.frontends })
        .ops,
    );
    expect(dump(kernel), "seeded content").toEqual(dump(modelToMapState(full, cfg).state));

    let checked = 0;
    for (let step = 0; step < 300; step++) {
      const changed = new Set<string>();
      let pods = false;
      const kind = r();
      const keys = [...svcs.keys()];
      if (kind < 0.35 && keys.length > 0) {
        const k = pick(keys);
        const s = svcs.get(k)!;
        const e = pick(s.eps);
        if (e) e.ip = podIp();
        changed.add(k);
      } else if (kind < 0.5 && keys.length > 0) {
        const k = pick(keys);
        const e = pick(svcs.get(k)!.eps);
        if (e) {
          e.ready = !e.ready;
          e.terminating = !e.ready && r() < 0.7;
        }
        changed.add(k);
      } else if (kind < 0.6) {
        const s = newSvc();
        svcs.set(`t/${s.name}`, s);
        changed.add(`t/${s.name}`);
      } else if (kind < 0.7 && keys.length > 0) {
        const k = pick(keys);
        svcs.delete(k);
        changed.add(k);
      } else if (kind < 0.8 && keys.length > 1) {
        // two services share a backend address (same target port): one value, two users
        const a = svcs.get(pick(keys))!;
        const bk = pick(keys);
        const b = svcs.get(bk)!;
        if (a.eps[0] && a.udp === b.udp) {
          b.eps.push({ ...a.eps[0], ready: r() < 0.5 });
          changed.add(bk);
        }
      } else if (kind < 0.87 && keys.length > 0) {
        const k = pick(keys);
        const s = svcs.get(k)!;
        s.eps = [];
        changed.add(k);
      } else if (kind < 0.93) {
        hostPort = hostPort === undefined ? 8081 + Math.floor(r() * 3) : undefined;
        pods = true;
      } else if (keys.length > 0) {
        // a conflict: a second service claims another's ClusterIP (rejected, nothing changes)
        const k = pick(keys);
        const s = newSvc();
        s.ip = svcs.get(k)!.ip;
        s.udp = svcs.get(k)!.udp;
        const next = clusterState(new Map([...svcs, [`t/${s.name}`, s]]), hostPort);
        const objs = objectsOf(next, `t/${s.name}`);
        expect(() => inc.update(new Map([[`t/${s.name}`, objs]])), "conflict").toThrow(InputError);
        expect(() => translate(next, cfg, { previous: idsOf(full) }), "full: conflict").toThrow(InputError);
        nextSvc--;
        continue;
      }
      if (changed.size === 0 && !pods) continue;
      st = clusterState(svcs, hostPort);
      const want = translate(st, cfg, { previous: idsOf(full) });
      const delta = inc.update(
        new Map([...changed].map((k) => [k, objectsOf(st, k)])),
        pods ? st.pods : undefined,
      );
      const got = inc.model();
      expect(got, `step ${step}: model`).toEqual(want);
      applyOps(kernel, prog.change(delta).ops);
      expect(dump(kernel), `step ${step}: map content after the writes`).toEqual(
        dump(modelToMapState(want, cfg).state),
      );
      full = want;
      checked++;
    }
    expect(checked, "changes checked").toBeGreaterThan(200);
    expect(dump(prog.state()), "the programmed model's own content").toEqual(dump(kernel));
  });

  test("ids stay stable and unique; a departing id is reused only in a later update", () => {
    const svcs = new Map<string, Svc>();
    for (let i = 0; i < 3; i++)
      svcs.set(`t/s${i}`, {
        name: `s${i}`,
        ip: `10.96.0.${i + 1}`,
        udp: false,
        local: false,
        eps: [{ ip: `10.244.0.${i + 1}`, ready: true, terminating: false, node: "node-1" }],
      });
    let st = clusterState(svcs, undefined);
    const inc = IncrementalTranslation.seed(translate(st, cfg), cfg);
    const before = inc.model().frontends.map((f) => [f.service, f.id]);
    expect(before, "initial ids").toEqual([
      ["t/s0", 1],
      ["t/s1", 2],
      ["t/s2", 3],
    ]);
    svcs.delete("t/s1");
    svcs.set("t/s9", { ...svcs.get("t/s0")!, name: "s9", ip: "10.96.0.9" });
    st = clusterState(svcs, undefined);
    inc.update(new Map(["t/s1", "t/s9"].map((k) => [k, objectsOf(st, k)])));
    expect(
      inc.model().frontends.map((f) => [f.service, f.id]),
      "s1's id is not reused in its round",
    ).toEqual([
      ["t/s0", 1],
      ["t/s2", 3],
      ["t/s9", 4],
    ]);
    svcs.set("t/s8", { ...svcs.get("t/s0")!, name: "s8", ip: "10.96.0.8" });
    st = clusterState(svcs, undefined);
    inc.update(new Map([["t/s8", objectsOf(st, "t/s8")]]));
    expect(
      inc.model().frontends.map((f) => [f.service, f.id]),
      "then it is",
    ).toEqual([
      ["t/s0", 1],
      ["t/s8", 2],
      ["t/s2", 3],
      ["t/s9", 4],
    ]);
    const backendIds = inc.model().frontends.flatMap((f) => f.backends.map((b) => b.id));
    expect(backendIds, "s8 and s9 share s0's backend (one id)").toEqual([1, 1, 3, 1]);
  });
});

function objectsOf(st: ClusterState, key: string): ServiceObjects {
  const [ns, name] = key.split("/");
  return {
    services: st.services.filter((s) => s.metadata.namespace === ns && s.metadata.name === name),
    endpointSlices: st.endpointSlices.filter(
      (s) => s.metadata.namespace === ns && s.metadata.labels?.["kubernetes.io/service-name"] === name,
    ),
    endpoints: [],
  };
}
