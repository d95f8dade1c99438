import { describe, expect, it } from "bun:test";
import { InputError } from "../../src/errors.ts";
import { manifestsFromText } from "../../src/k8s/manifest.ts";
import { l4Key } from "../../src/lb/ip.ts";
import type { LbModel } from "../../src/lb/model.ts";
import { translate } from "../../src/lb/translate.ts";
import { cfg } from "./_fixtures.ts";

/** mulberry32: a small seeded PRNG, so every run generates the same cases. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const RUNS = 1200;

function generator(rnd: () => number) {
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const ip4 = () => `10.${int(3)}.${int(3)}.${int(20)}`;
  const ip6 = () => `fd00::${int(20).toString(16)}`;
  // Mostly valid values, with a few out-of-range ones.
  const port = () =>
    rnd() < 0.03 ? pick([0, 65536 + int(9999)]) : pick([80, 443, 53, 8080, 30000 + int(50)]);
  const proto = () => (rnd() < 0.02 ? "tcp" : pick(["TCP", "UDP", "SCTP", undefined]));
  const nodes = ["node-1", "node-2", undefined];

  const service = (name: string) => {
    const type = pick(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName", undefined]);
    const dual = rnd() < 0.2;
    const nports = 1 + int(3);
    return {
      apiVersion: "v1",
      kind: "Service",
      metadata: {
        name,
        namespace: pick(["default", "x"]),
        ...(rnd() < 0.1 ? { labels: { "service.kubernetes.io/service-proxy-name": "other" } } : {}),
        ...(rnd() < 0.2
          ? {
              annotations: {
                [pick(["service.cilium.io/type", "service.cilium.io/node-selector"])]: pick([
                  "NodePort",
                  "a=b",
                  "x in (y",
                ]),
              },
            }
          : {}),
      },
      spec: {
        type,
        clusterIP: rnd() < 0.05 ? "None" : dual ? ip4() : pick([ip4(), ip6()]),
        ...(dual ? { clusterIPs: [ip4(), ip6()] } : {}),
        ports: Array.from({ length: nports }, (_, i) => ({
          ...(nports > 1 || rnd() < 0.5 ? { name: `p${i}` } : {}),
          port: port(),
          protocol: proto(),
          targetPort: pick([8080, "http", `p${i}`, undefined]),
          ...(type === "NodePort" || type === "LoadBalancer" || rnd() < 0.1
            ? { nodePort: 30000 + int(60) }
            : {}),
        })),
        ...(rnd() < 0.2 ? { externalIPs: [pick([ip4(), ip6(), "1.2.3"])] } : {}),
        ...(rnd() < 0.3 ? { externalTrafficPolicy: pick(["Local", "Cluster"]) } : {}),
        ...(rnd() < 0.2 ? { internalTrafficPolicy: "Local" } : {}),
        ...(rnd() < 0.2
          ? {
              sessionAffinity: "ClientIP",
              sessionAffinityConfig: { clientIP: { timeoutSeconds: pick([0, 60, 90000]) } },
            }
          : {}),
        ...(rnd() < 0.1 ? { loadBalancerSourceRanges: [pick(["10.0.0.0/8", "10.0.0.0/40"])] } : {}),
        ...(rnd() < 0.1 ? { publishNotReadyAddresses: true } : {}),
      },
      ...(type === "LoadBalancer"
        ? {
            status: { loadBalancer: { ingress: [{ ip: ip4(), ipMode: pick(["VIP", "Proxy", undefined]) }] } },
          }
        : {}),
    };
  };
  const endpointSlice = (svc: string, i: number) => {
    const v6 = rnd() < 0.2;
    return {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: `${svc}-${i}`, namespace: "default", labels: { "kubernetes.io/service-name": svc } },
      addressType: v6 ? "IPv6" : "IPv4",
      ports: Array.from({ length: 1 + int(2) }, (_, j) => ({
        name: pick([`p${j}`, "http", ""]),
        port: port(),
        protocol: proto(),
      })),
      endpoints: Array.from({ length: int(4) }, () => ({
        addresses: [v6 ? ip6() : ip4()],
        conditions: {
          ready: pick([true, false, undefined]),
          serving: pick([true, false, undefined]),
          terminating: pick([true, false, undefined]),
        },
        nodeName: pick(nodes),
        ...(rnd() < 0.2 ? { hints: { forZones: [{ name: pick(["a", "b"]) }] } } : {}),
      })),
    };
  };
  const pod = (i: number) => ({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: `pod${i}`, namespace: "default" },
    spec: {
      nodeName: pick(nodes),
      containers: [{ name: "c", ports: [{ containerPort: port(), hostPort: port(), protocol: proto() }] }],
    },
    status: { phase: pick(["Running", "Pending"]), podIP: ip4() },
  });
  const node = {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: "node-1", labels: { "topology.kubernetes.io/zone": "a" } },
    status: { addresses: [{ type: "InternalIP", address: "192.168.50.2" }] },
  };

  const JUNK: unknown[] = [
    null,
    "",
    "x",
    -1,
    0,
    65536,
    1.5,
    true,
    [],
    {},
    "10.0.0.1",
    "fd00::1",
    "None",
    "Local",
    { a: [1] },
  ];
  /** Replaces random values deep in the object with junk of another type or range. */
  const mutate = (v: unknown, depth = 0): unknown => {
    if (rnd() < 0.03 * (depth + 1)) return pick(JUNK);
    if (Array.isArray(v)) return v.map((x) => mutate(x, depth + 1));
    if (v && typeof v === "object") {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) if (rnd() > 0.03) out[k] = mutate(x, depth + 1);
      return out;
    }
    return v;
  };

  return (): string => {
    const names = Array.from({ length: 1 + int(4) }, (_, i) => pick(["web", "dns", "api", `s${i}`]));
    let objs: unknown[] = [
      ...names.map(service),
      ...names.flatMap((n) => Array.from({ length: int(3) }, (_, i) => endpointSlice(n, i))),
      ...Array.from({ length: int(3) }, (_, i) => pod(i)),
      node,
    ];
    if (rnd() < 0.3) objs = objs.map((o) => mutate(o));
    // JSON documents are YAML too and much cheaper to produce; some runs use block YAML and a List.
    const form = rnd();
    let text =
      form < 0.03
        ? JSON.stringify({ apiVersion: "v1", kind: "List", items: objs })
        : form < 0.2
          ? objs.map((o) => Bun.YAML.stringify(o, null, 2)).join("\n---\n")
          : objs.map((o) => JSON.stringify(o)).join("\n---\n");
    if (rnd() < 0.03) {
      // Text damage: a cut or a stray character somewhere.
      const at = int(text.length);
      text =
        rnd() < 0.5
          ? text.slice(0, at)
          : `${text.slice(0, at)}${pick(["{", ":", "\t", "- ", '"', "&a *a"])}${text.slice(at)}`;
    }
    return text;
  };
}

/** Invariants every successful plan must hold. */
function checkModel(m: LbModel): string | undefined {
  const ids = m.frontends.map((f) => f.id);
  if (new Set(ids).size !== ids.length) return "duplicate frontend id";
  if (ids.some((id, i) => id < 1 || id > 65535 || (i > 0 && id <= ids[i - 1]!)))
    return "frontend ids not sorted in 1..65535";
  const keys = new Set(m.frontends.map((f) => l4Key(f.frontend)));
  if (keys.size !== m.frontends.length) return "duplicate frontend address";
  const beIds = new Map<string, number>();
  for (const f of m.frontends) {
    if ((f.backends.length === 0) !== (f.reject === true)) return `reject flag wrong on ${l4Key(f.frontend)}`;
    for (const b of f.backends) {
      if (b.id < 1) return "backend id < 1";
      if (b.protocol !== f.frontend.protocol) return "backend protocol differs from frontend";
      if (b.address.includes(":") !== f.frontend.address.includes(":"))
        return "backend family differs from frontend";
      const prev = beIds.get(l4Key(b));
      if (prev !== undefined && prev !== b.id) return `backend ${l4Key(b)} has two ids`;
      beIds.set(l4Key(b), b.id);
    }
  }
  if (new Set(beIds.values()).size !== beIds.size) return "two backends share an id";
  return undefined;
}

describe("fuzz: generated and mutated manifests", () => {
  it(`${RUNS} runs each end in a plan or an InputError, plans are valid and deterministic`, () => {
    const gen = generator(prng(0x6b7072));
    const c = cfg();
    const outcomes = { plan: 0, inputError: 0 };
    for (let run = 0; run < RUNS; run++) {
      const text = gen();
      let model: LbModel | undefined;
      try {
        model = translate(manifestsFromText(text, `run${run}.yaml`), c);
      } catch (e) {
        if (!(e instanceof InputError)) {
          throw new Error(`run ${run}: ${(e as Error).stack}\n--- input ---\n${text}`);
        }
        expect(e.problems.length).toBeGreaterThan(0);
        outcomes.inputError++;
        continue;
      }
      const bad = checkModel(model);
      if (bad) throw new Error(`run ${run}: ${bad}\n--- input ---\n${text}`);
      const again = translate(manifestsFromText(text, `run${run}.yaml`), c);
      if (JSON.stringify(again) !== JSON.stringify(model)) throw new Error(`run ${run}: not deterministic`);
      outcomes.plan++;
    }
    // Both outcomes must be well represented, or the generator tests nothing.
    expect(outcomes.plan).toBeGreaterThan(RUNS / 10);
    expect(outcomes.inputError).toBeGreaterThan(RUNS / 10);
  }, 30_000);
});
