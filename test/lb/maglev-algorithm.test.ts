/**
 * The master entry's `algorithm` (struct kpr_lb4_service) says KPR_ALG_MAGLEV exactly for the
 * frontends syncMaglev gives a table (north-south with backends) when loadBalancer.algorithm is
 * maglev, and KPR_ALG_RANDOM otherwise.
 */
import { describe, expect, it } from "bun:test";
import { defaultConfig } from "../../src/config/config.ts";
import { ALG, lb4Service } from "../../src/datapath/lbmaps.ts";
import { encodeModel, modelToMapState } from "../../src/datapath/mapstate.ts";
import type { Backend, Frontend, LbModel } from "../../src/lb/model.ts";

const be = (id: number): Backend => ({
  id,
  address: `10.0.0.${id}`,
  port: 8080,
  protocol: "TCP",
  state: "active",
  local: false,
});
const fe = (id: number, type: Frontend["type"], backends: Backend[]): Frontend => ({
  id,
  frontend: { address: `192.0.2.${id}`, port: 80, protocol: "TCP" },
  type,
  service: "default/web",
  portName: "http",
  backends,
  scope: "Cluster",
});
const model: LbModel = {
  node: { name: "node-1", addresses: [], labels: {} },
  frontends: [
    fe(1, "ClusterIP", [be(1), be(2)]),
    fe(2, "NodePort", [be(1), be(2)]),
    fe(3, "LoadBalancer", [be(3)]),
    fe(4, "ExternalIPs", [be(4)]),
    fe(5, "NodePort", []),
  ],
};
const algorithms = (maglev: boolean) =>
  Object.fromEntries(
    encodeModel(model, maglev).frontends.map((f) => [f.id, lb4Service.decode(f.master).algorithm]),
  );

describe("master entry algorithm", () => {
  it("maglev: north-south frontends with backends say MAGLEV; ClusterIP and empty ones RANDOM", () => {
    expect(algorithms(true)).toEqual({
      1: ALG.RANDOM,
      2: ALG.MAGLEV,
      3: ALG.MAGLEV,
      4: ALG.MAGLEV,
      5: ALG.RANDOM,
    });
  });

  it("random: every master says RANDOM", () => {
    expect(Object.values(algorithms(false))).toEqual([0, 0, 0, 0, 0].map(() => ALG.RANDOM));
  });

  it("modelToMapState follows loadBalancer.algorithm", () => {
    const cfg = defaultConfig();
    const masters = (algorithm: "random" | "maglev") =>
      [
        ...modelToMapState(model, {
          ...cfg,
          loadBalancer: { ...cfg.loadBalancer, algorithm },
        }).state.kpr_lb4_svc.values(),
      ]
        .map((e) => lb4Service.decode(e.value))
        .filter((s) => s.backend_id === 0)
        .map((s) => s.algorithm)
        .sort();
    expect({ random: masters("random"), maglev: masters("maglev") }).toEqual({
      random: [0, 0, 0, 0, 0],
      maglev: [0, 0, 1, 1, 1],
    });
  });
});
