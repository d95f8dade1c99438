/**
 * syncMaglev (src/datapath/maglevmaps.ts) against the loaded datapath's maps: tables written for
 * north-south frontends only, equal inputs sharing one computation, nothing rewritten when
 * nothing changed, only the changed frontend rewritten, gone frontends and a switch back to
 * `random` removing their tables and signatures.
 */
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { rmSync } from "node:fs";
import { type Config, defaultConfig } from "../../src/config/config.ts";
import { u16Id } from "../../src/datapath/lbmaps.ts";
import { syncMaglev } from "../../src/datapath/maglevmaps.ts";
import { encodeModel } from "../../src/datapath/mapstate.ts";
import type { Backend, Frontend, LbModel } from "../../src/lb/model.ts";
import { buildObjects } from "../bpf/_assert_case.ts";
import { Lab } from "../bpf/_lab.ts";
import { needs } from "../harness/env.ts";
import { ensureBpffs } from "../harness/netns.ts";

const skip = needs({ root: true, tools: ["clang"] }, "syncMaglev against real maps");

const be = (id: number): Backend => ({
  id,
  address: `10.244.0.${id}`,
  port: 8080,
  protocol: "TCP",
  state: "active",
  local: false,
});
const fe = (id: number, type: Frontend["type"], address: string, backends: Backend[]): Frontend => ({
  id,
  frontend: { address, port: 30080, protocol: "TCP" },
  type,
  service: `default/web-${id}`,
  portName: "http",
  backends,
  scope: "Cluster",
});
const model = (...frontends: Frontend[]): LbModel => ({
  node: { name: "node-1", addresses: [], labels: {} },
  frontends,
});

describe.skipIf(!!skip)("syncMaglev", () => {
  const dir = `/sys/fs/bpf/kpr-test-mgs-${Math.random().toString(36).slice(2, 8)}`;
  let lab: Lab;
  beforeAll(() => {
    buildObjects();
    ensureBpffs();
    lab = Lab.open("tc", dir);
  });
  afterAll(() => {
    lab?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("writes, keeps, rewrites only what changed and removes what is gone", () => {
    const base = defaultConfig();
    const cfg = (algorithm: "random" | "maglev"): Config => ({
      ...base,
      loadBalancer: { ...base.loadBalancer, algorithm },
      maglev: { ...base.maglev, tableSize: 1021 },
    });
    const maps = {
      outer: lab.obj.map("kpr_lb4_maglev"),
      cfg: lab.obj.map("kpr_maglev_cfg"),
      sig: lab.obj.map("kpr_lb4_mgsig"),
    };
    const ids = (map: typeof maps.outer) => {
      const out: number[] = [];
      for (let k = map.nextKey(); k; k = map.nextKey(k)) out.push(u16Id.decode(k).v);
      return out.sort((a, b) => a - b);
    };
    const sync = (m: LbModel, algorithm: "random" | "maglev") => {
      const r = syncMaglev(maps, encodeModel(m, algorithm === "maglev"), cfg(algorithm));
      return {
        written: r.written,
        computed: r.computed,
        kept: r.kept,
        removed: r.removed,
        outer: ids(maps.outer),
        sig: ids(maps.sig),
      };
    };
    const bs = [be(1), be(2), be(3)];
    const first = model(
      fe(1, "ClusterIP", "10.96.0.1", bs),
      fe(2, "NodePort", "192.168.77.1", bs),
      fe(3, "NodePort", "0.0.0.0", bs),
      fe(4, "LoadBalancer", "192.0.2.4", [be(4), be(5)]),
      fe(5, "ExternalIPs", "192.0.2.5", [be(6)]),
    );
    expect({ step: "first", ...sync(first, "maglev") }).toEqual({
      step: "first",
      written: 4,
      computed: 3,
      kept: 0,
      removed: 0,
      outer: [2, 3, 4, 5],
      sig: [2, 3, 4, 5],
    });
    expect({ step: "unchanged", ...sync(first, "maglev") }).toEqual({
      step: "unchanged",
      written: 0,
      computed: 0,
      kept: 4,
      removed: 0,
      outer: [2, 3, 4, 5],
      sig: [2, 3, 4, 5],
    });
    const second = model(
      fe(1, "ClusterIP", "10.96.0.1", bs),
      fe(2, "NodePort", "192.168.77.1", bs),
      fe(3, "NodePort", "0.0.0.0", bs),
      fe(4, "LoadBalancer", "192.0.2.4", [be(4)]),
    );
    expect({ step: "one changed, one gone", ...sync(second, "maglev") }).toEqual({
      step: "one changed, one gone",
      written: 1,
      computed: 1,
      kept: 2,
      removed: 1,
      outer: [2, 3, 4],
      sig: [2, 3, 4],
    });
    expect({ step: "random", ...sync(second, "random") }).toEqual({
      step: "random",
      written: 0,
      computed: 0,
      kept: 0,
      removed: 3,
      outer: [],
      sig: [],
    });
  });
});
