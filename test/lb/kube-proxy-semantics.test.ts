/**
 * Translation rules held against kube-proxy's own sources and test tables (kubernetes/kubernetes
 * master). Each case names where it comes from: a case transcribed from a kube-proxy test table
 * cites the test and the case name; a case derived from kube-proxy code (where the test table
 * was not available) cites the function it follows.
 */
import { describe, expect, test } from "bun:test";
import type { Config } from "../../src/config/config.ts";
import type { ClusterState, Endpoint, EndpointPort, Endpoints } from "../../src/k8s/types.ts";
import { l4Key } from "../../src/lb/ip.ts";
import { IncrementalTranslation, translate } from "../../src/lb/translate.ts";
import { cfg, NODE, node, plan, slice, state, svc } from "./_fixtures.ts";

const ZONE = "topology.kubernetes.io/zone";
const PROXY_NAME = "service.kubernetes.io/service-proxy-name";

describe("leading zeros are decimal, as netutils.ParseIPSloppy / ParseCIDRSloppy read them", () => {
  // nftables/proxier_test.go TestBadIPs: "bad" IPs and CIDRs in Services/Endpoints are rewritten
  // to be "good" (its NodePort 3001 is inside this config's range).
  test("nftables/proxier_test.go TestBadIPs", () => {
    const s = state({
      services: [
        svc(
          "svc1",
          {
            type: "LoadBalancer",
            clusterIP: "172.30.0.041",
            ports: [{ name: "p80", port: 80, protocol: "TCP", nodePort: 3001 }],
            externalIPs: ["192.168.099.022"],
            loadBalancerSourceRanges: ["203.0.113.000/025"],
          },
          { status: { loadBalancer: { ingress: [{ ip: "1.2.3.004" }] } } },
        ),
      ],
      endpointSlices: [
        slice(
          "svc1",
          "svc1-1",
          [{ name: "p80", port: 80, protocol: "TCP" }],
          [{ addresses: ["10.180.00.001"] }],
        ),
      ],
    });
    const c = cfg((c) => {
      c.nodePort.range = [3000, 32767];
    });
    const m = translate(s, c);
    expect(plan(s, c)).toEqual([
      "ClusterIP 172.30.0.41:80/TCP => 10.180.0.1:80/TCP",
      "ExternalIPs 192.168.99.22:80/TCP => 10.180.0.1:80/TCP",
      "LoadBalancer 1.2.3.4:80/TCP => 10.180.0.1:80/TCP [src=allow:203.0.113.0/25]",
      "NodePort 0.0.0.0:3001/TCP => 10.180.0.1:80/TCP",
      "NodePort 127.0.0.1:3001/TCP => 10.180.0.1:80/TCP",
    ]);
    expect(m.warnings).toEqual([
      'svc1.yaml:1: Service default/svc1: spec.clusterIP: "172.30.0.041" has leading zeros: read as decimal 172.30.0.41, as kube-proxy\'s legacy parser reads it',
      'svc1.yaml:1: Service default/svc1: spec.externalIPs[0]: "192.168.099.022" has leading zeros: read as decimal 192.168.99.22, as kube-proxy\'s legacy parser reads it',
      'svc1.yaml:1: Service default/svc1: status.loadBalancer.ingress[0].ip: "1.2.3.004" has leading zeros: read as decimal 1.2.3.4, as kube-proxy\'s legacy parser reads it',
      'svc1.yaml:1: Service default/svc1: spec.loadBalancerSourceRanges[0]: "203.0.113.000/025" has leading zeros: read as decimal 203.0.113.0/25, as kube-proxy\'s legacy parser reads it',
      'svc1-1.yaml:1: EndpointSlice default/svc1-1: endpoints[0].addresses[0]: "10.180.00.001" has leading zeros: read as decimal 10.180.0.1, as kube-proxy\'s legacy parser reads it',
    ]);
  });

  // serviceport.go newBaseServiceInfo: clusterIPs go through ParseIPSloppy too (dual-stack).
  test("serviceport.go: clusterIPs[] and the legacy Endpoints object, with leading zeros", () => {
    const legacy: Endpoints = {
      kind: "Endpoints",
      metadata: { name: "web", namespace: "default" },
      subsets: [{ addresses: [{ ip: "10.244.001.010" }], ports: [{ port: 8080 }] }],
      source: { file: "web-ep.yaml", line: 3 },
    };
    const s = state({
      services: [svc("web", { clusterIPs: ["10.96.000.001"], clusterIP: undefined })],
      endpoints: [legacy],
    });
    const m = translate(s, cfg());
    expect(plan(s)).toEqual(["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP"]);
    expect(m.warnings).toEqual([
      'web.yaml:1: Service default/web: spec.clusterIPs[0]: "10.96.000.001" has leading zeros: read as decimal 10.96.0.1, as kube-proxy\'s legacy parser reads it',
      'web-ep.yaml:3: Endpoints default/web: subsets[0].addresses[0].ip: "10.244.001.010" has leading zeros: read as decimal 10.244.1.10, as kube-proxy\'s legacy parser reads it',
    ]);
  });

  test("a special address stays special with leading zeros (127.000.000.001 is loopback)", () => {
    const s = state({ services: [svc("web", { externalIPs: ["127.000.000.001"] })] });
    expect(() => translate(s, cfg())).toThrow(/127\.0\.0\.1 is loopback/);
  });
});

/** An endpoint as kube-proxy's BaseEndpointInfo: unset booleans are false (Go's zero value). */
function e(
  ip: string,
  o: {
    ready?: boolean;
    serving?: boolean;
    terminating?: boolean;
    local?: boolean;
    zones?: string[];
    nodes?: string[];
  } = {},
): Endpoint {
  const hints =
    o.zones || o.nodes
      ? {
          ...(o.zones ? { forZones: o.zones.map((name) => ({ name })) } : {}),
          ...(o.nodes ? { forNodes: o.nodes.map((name) => ({ name })) } : {}),
        }
      : undefined;
  return {
    addresses: [ip],
    conditions: { ready: o.ready ?? false, serving: o.serving ?? false, terminating: o.terminating ?? false },
    nodeName: o.local ? NODE : "node-2",
    ...(hints ? { hints } : {}),
  };
}

interface TopoCase {
  /** the node's zone label; null: no label */
  zone?: string | null;
  itpLocal?: boolean;
  etpLocal?: boolean;
  /** externally accessible (kube-proxy's nodePort: 8080) */
  nodePort?: boolean;
  trafficDistribution?: string;
  endpoints: Endpoint[];
  /** CategorizeEndpoints' clusterEndpoints / localEndpoints (addresses); omitted: unused (nil) */
  cluster?: string[];
  local?: string[];
}

/** What each kpr frontend gets (addresses): see categorize(). */
interface Got {
  clusterIP: string[];
  nodePort?: string[];
  /** the NodePort's in-cluster set (Frontend.internalBackends), under eTP Local */
  nodePortInternal?: string[];
}

/**
 * The backends kpr gives the frontends that use each of CategorizeEndpoints' lists: the ClusterIP
 * frontend (iTP), and when externally accessible the NodePort frontend (eTP) with, under eTP Local,
 * its in-cluster set (kube-proxy's short-circuit to clusterEndpoints).
 */
function categorize(c: TopoCase): Got {
  const zone = c.zone === undefined ? "zone-a" : c.zone;
  const spec = {
    ...(c.nodePort ? { type: "NodePort", ports: [{ port: 80, targetPort: 80, nodePort: 30080 }] } : {}),
    ...(!c.nodePort ? { ports: [{ port: 80, targetPort: 80 }] } : {}),
    ...(c.itpLocal ? { internalTrafficPolicy: "Local" } : {}),
    ...(c.etpLocal ? { externalTrafficPolicy: "Local" } : {}),
    // kpr's types leave it out (nothing reads it); given as an API object would carry it
    ...((c.trafficDistribution ? { trafficDistribution: c.trafficDistribution } : {}) as object),
  };
  const s: ClusterState = state({
    services: [svc("svc", spec)],
    endpointSlices: [slice("svc", "svc-1", [{ port: 80 }], c.endpoints)],
    nodes: [node(NODE, [], zone === null ? {} : { [ZONE]: zone })],
  });
  const m = translate(s, cfg());
  const fe = (type: string) =>
    m.frontends.find((f) => f.type === type && f.frontend.address !== "127.0.0.1")!;
  // the endpoints new connections go to: the active backends, or (none active) the fallback set;
  // terminating ones behind active ones only keep tracked flows (see selectBackends)
  const addrs = (bs: { address: string; state: string }[]) => {
    const active = bs.filter((b) => b.state === "active");
    return (active.length > 0 ? active : bs).map((b) => b.address).sort();
  };
  const np = c.nodePort ? fe("NodePort") : undefined;
  return {
    clusterIP: addrs(fe("ClusterIP").backends),
    ...(np ? { nodePort: addrs(np.backends) } : {}),
    ...(np?.internalBackends ? { nodePortInternal: addrs(np.internalBackends) } : {}),
  };
}

function expected(c: TopoCase): Got {
  const pick = (local: boolean | undefined) => [...((local ? c.local : c.cluster) ?? [])].sort();
  return {
    clusterIP: pick(c.itpLocal),
    ...(c.nodePort ? { nodePort: pick(c.etpLocal) } : {}),
    ...(c.nodePort && c.etpLocal ? { nodePortInternal: pick(false) } : {}),
  };
}

const a4 = ["10.1.2.3", "10.1.2.4", "10.1.2.5", "10.1.2.6"];

describe("topology.go CategorizeEndpoints: zone hints, traffic policies, terminating fallback", () => {
  // Transcribed from pkg/proxy/topology_test.go TestCategorizeEndpoints (kubernetes master; the
  // feature gates it sets are GA). Node labels default to zone-a; "local" is kube-proxy's isLocal.
  test.each<[string, TopoCase]>([
    [
      "should use topology since all endpoints have hints, node has a zone label and and there are endpoints for the node's zone",
      {
        endpoints: [
          e("10.1.2.3", { zones: ["zone-a"], ready: true }),
          e("10.1.2.4", { zones: ["zone-b"], ready: true }),
          e("10.1.2.5", { zones: ["zone-c"], ready: true }),
          e("10.1.2.6", { zones: ["zone-a"], ready: true }),
        ],
        cluster: ["10.1.2.3", "10.1.2.6"],
      },
    ],
    [
      "externalTrafficPolicy: Local, topology ignored for Local endpoints",
      {
        etpLocal: true,
        nodePort: true,
        endpoints: [
          e("10.1.2.3", { zones: ["zone-a"], ready: true, local: true }),
          e("10.1.2.4", { zones: ["zone-b"], ready: true, local: true }),
          e("10.1.2.5", { zones: ["zone-c"], ready: true }),
          e("10.1.2.6", { zones: ["zone-a"], ready: true }),
        ],
        cluster: ["10.1.2.3", "10.1.2.6"],
        local: ["10.1.2.3", "10.1.2.4"],
      },
    ],
    [
      "internalTrafficPolicy: Local, topology ignored for Local endpoints",
      {
        itpLocal: true,
        nodePort: true,
        endpoints: [
          e("10.1.2.3", { zones: ["zone-a"], ready: true, local: true }),
          e("10.1.2.4", { zones: ["zone-b"], ready: true, local: true }),
          e("10.1.2.5", { zones: ["zone-c"], ready: true }),
          e("10.1.2.6", { zones: ["zone-a"], ready: true }),
        ],
        cluster: ["10.1.2.3", "10.1.2.6"],
        local: ["10.1.2.3", "10.1.2.4"],
      },
    ],
    [
      "empty node labels",
      { zone: null, endpoints: [e("10.1.2.3", { zones: ["zone-a"], ready: true })], cluster: ["10.1.2.3"] },
    ],
    [
      "empty zone label",
      { zone: "", endpoints: [e("10.1.2.3", { zones: ["zone-a"], ready: true })], cluster: ["10.1.2.3"] },
    ],
    [
      "node in different zone, no endpoint filtering",
      {
        zone: "zone-b",
        endpoints: [e("10.1.2.3", { zones: ["zone-a"], ready: true })],
        cluster: ["10.1.2.3"],
      },
    ],
    [
      "unready endpoint",
      {
        endpoints: [
          e("10.1.2.3", { zones: ["zone-a"], ready: true }),
          e("10.1.2.4", { zones: ["zone-b"], ready: true }),
          e("10.1.2.5", { zones: ["zone-c"], ready: true }),
          e("10.1.2.6", { zones: ["zone-a"], ready: false }),
        ],
        cluster: ["10.1.2.3"],
      },
    ],
    [
      "only unready endpoints in same zone (should not filter)",
      {
        endpoints: [
          e("10.1.2.3", { zones: ["zone-a"], ready: false }),
          e("10.1.2.4", { zones: ["zone-b"], ready: true }),
          e("10.1.2.5", { zones: ["zone-c"], ready: true }),
          e("10.1.2.6", { zones: ["zone-a"], ready: false }),
        ],
        cluster: ["10.1.2.4", "10.1.2.5"],
      },
    ],
    [
      "missing hints, no filtering applied",
      {
        endpoints: [
          e("10.1.2.3", { zones: ["zone-a"], ready: true }),
          e("10.1.2.4", { zones: ["zone-b"], ready: true }),
          e("10.1.2.5", { ready: true }),
          e("10.1.2.6", { zones: ["zone-a"], ready: true }),
        ],
        cluster: a4,
      },
    ],
    [
      "multiple hints per endpoint, filtering includes any endpoint with zone included",
      {
        zone: "zone-c",
        endpoints: [
          e("10.1.2.3", { zones: ["zone-a", "zone-b", "zone-c"], ready: true }),
          e("10.1.2.4", { zones: ["zone-b", "zone-c"], ready: true }),
          e("10.1.2.5", { zones: ["zone-b", "zone-d"], ready: true }),
          e("10.1.2.6", { zones: ["zone-c"], ready: true }),
        ],
        cluster: ["10.1.2.3", "10.1.2.4", "10.1.2.6"],
      },
    ],
    [
      "conflicting topology and localness require merging allEndpoints",
      {
        etpLocal: true,
        nodePort: true,
        endpoints: [
          e("10.0.0.0", { zones: ["zone-a"], ready: true, local: true }),
          e("10.0.0.1", { zones: ["zone-b"], ready: true, local: true }),
          e("10.0.0.2", { zones: ["zone-a"], ready: true }),
          e("10.0.0.3", { zones: ["zone-b"], ready: true }),
        ],
        cluster: ["10.0.0.0", "10.0.0.2"],
        local: ["10.0.0.0", "10.0.0.1"],
      },
    ],
    ["internalTrafficPolicy: Local, with empty endpoints", { itpLocal: true, endpoints: [], local: [] }],
    [
      "internalTrafficPolicy: Local, but all endpoints are remote",
      {
        itpLocal: true,
        endpoints: [e("10.0.0.0", { ready: true }), e("10.0.0.1", { ready: true })],
        local: [],
      },
    ],
    [
      "internalTrafficPolicy: Local, all endpoints are local",
      {
        itpLocal: true,
        endpoints: [e("10.0.0.0", { ready: true, local: true }), e("10.0.0.1", { ready: true, local: true })],
        local: ["10.0.0.0", "10.0.0.1"],
      },
    ],
    [
      "internalTrafficPolicy: Local, some endpoints are local",
      {
        itpLocal: true,
        endpoints: [e("10.0.0.0", { ready: true, local: true }), e("10.0.0.1", { ready: true })],
        local: ["10.0.0.0"],
      },
    ],
    [
      "Cluster traffic policy, endpoints not Ready",
      { endpoints: [e("10.0.0.0"), e("10.0.0.1")], cluster: [] },
    ],
    [
      "Cluster traffic policy, some endpoints are Ready",
      { endpoints: [e("10.0.0.0"), e("10.0.0.1", { ready: true })], cluster: ["10.0.0.1"] },
    ],
    [
      "Cluster traffic policy, all endpoints are terminating",
      {
        endpoints: [
          e("10.0.0.0", { serving: true, terminating: true, local: true }),
          e("10.0.0.1", { serving: true, terminating: true }),
        ],
        cluster: ["10.0.0.0", "10.0.0.1"],
      },
    ],
    [
      "iTP: Local, eTP: Cluster, some endpoints local",
      {
        itpLocal: true,
        nodePort: true,
        endpoints: [e("10.0.0.0", { ready: true, local: true }), e("10.0.0.1", { ready: true })],
        cluster: ["10.0.0.0", "10.0.0.1"],
        local: ["10.0.0.0"],
      },
    ],
    [
      "iTP: Cluster, eTP: Local, some endpoints local",
      {
        etpLocal: true,
        nodePort: true,
        endpoints: [e("10.0.0.0", { ready: true, local: true }), e("10.0.0.1", { ready: true })],
        cluster: ["10.0.0.0", "10.0.0.1"],
        local: ["10.0.0.0"],
      },
    ],
    [
      "iTP: Local, eTP: Local, some endpoints local",
      {
        itpLocal: true,
        etpLocal: true,
        nodePort: true,
        endpoints: [e("10.0.0.0", { ready: true, local: true }), e("10.0.0.1", { ready: true })],
        cluster: ["10.0.0.0", "10.0.0.1"],
        local: ["10.0.0.0"],
      },
    ],
    [
      "iTP: Local, eTP: Local, all endpoints remote",
      {
        itpLocal: true,
        etpLocal: true,
        nodePort: true,
        endpoints: [e("10.0.0.0", { ready: true }), e("10.0.0.1", { ready: true })],
        cluster: ["10.0.0.0", "10.0.0.1"],
        local: [],
      },
    ],
    [
      "iTP: Local, eTP: Local, all endpoints remote and terminating",
      {
        itpLocal: true,
        etpLocal: true,
        nodePort: true,
        endpoints: [
          e("10.0.0.0", { serving: true, terminating: true }),
          e("10.0.0.1", { serving: true, terminating: true }),
        ],
        cluster: ["10.0.0.0", "10.0.0.1"],
        local: [],
      },
    ],
    [
      "iTP: Cluster, eTP: Local, with terminating endpoints",
      {
        etpLocal: true,
        nodePort: true,
        endpoints: [
          e("10.0.0.0", { ready: true }),
          e("10.0.0.1", { local: true }),
          e("10.0.0.2", { serving: true, terminating: true, local: true }),
          e("10.0.0.3", { serving: true, terminating: true }),
        ],
        cluster: ["10.0.0.0"],
        local: ["10.0.0.2"],
      },
    ],
    [
      "externalTrafficPolicy ignored if not externally accessible",
      {
        etpLocal: true,
        endpoints: [e("10.0.0.0", { ready: true }), e("10.0.0.1", { ready: true, local: true })],
        cluster: ["10.0.0.0", "10.0.0.1"],
      },
    ],
    [
      "no cluster endpoints for iTP:Local internal-only service",
      {
        itpLocal: true,
        endpoints: [e("10.0.0.0", { ready: true }), e("10.0.0.1", { ready: true, local: true })],
        local: ["10.0.0.1"],
      },
    ],
  ])("topology_test.go TestCategorizeEndpoints %p", (_name, c) => {
    expect(categorize(c)).toEqual(expected(c));
  });
});

describe("topology.go topologyModeFromHints: node hints (PreferSameNode) before zone hints", () => {
  // Derived from pkg/proxy/topology.go at kubernetes master (topologyModeFromHints,
  // availableForTopology, PreferSameTrafficDistribution on as it is by default since 1.34): the
  // node-hint rows of topology_test.go were not available to transcribe. This node is node-1 in
  // zone-a.
  test.each<[string, TopoCase]>([
    [
      "every ready endpoint has a node hint and one names this node: that endpoint only (not the zone's)",
      {
        endpoints: [
          e("10.0.0.1", { ready: true, local: true, nodes: [NODE], zones: ["zone-a"] }),
          e("10.0.0.2", { ready: true, nodes: ["node-2"], zones: ["zone-a"] }),
          e("10.0.0.3", { ready: true, nodes: ["node-3"], zones: ["zone-b"] }),
        ],
        cluster: ["10.0.0.1"],
      },
    ],
    [
      "a node hint may name another node's endpoint for this node",
      {
        endpoints: [
          e("10.0.0.1", { ready: true, nodes: ["node-2"] }),
          e("10.0.0.2", { ready: true, nodes: [NODE, "node-3"] }),
        ],
        cluster: ["10.0.0.2"],
      },
    ],
    [
      "node hints complete but none for this node: zone hints decide",
      {
        endpoints: [
          e("10.0.0.1", { ready: true, nodes: ["node-2"], zones: ["zone-a"] }),
          e("10.0.0.2", { ready: true, nodes: ["node-3"], zones: ["zone-b"] }),
        ],
        cluster: ["10.0.0.1"],
      },
    ],
    [
      "one ready endpoint without a node hint: node hints ignored, zone hints decide",
      {
        endpoints: [
          e("10.0.0.1", { ready: true, local: true, nodes: [NODE], zones: ["zone-a"] }),
          e("10.0.0.2", { ready: true, zones: ["zone-a"] }),
          e("10.0.0.3", { ready: true, nodes: ["node-3"], zones: ["zone-b"] }),
        ],
        cluster: ["10.0.0.1", "10.0.0.2"],
      },
    ],
    [
      "node hints incomplete, zone hints absent: every ready endpoint",
      {
        endpoints: [e("10.0.0.1", { ready: true, nodes: [NODE] }), e("10.0.0.2", { ready: true })],
        cluster: ["10.0.0.1", "10.0.0.2"],
      },
    ],
    [
      "an unready endpoint without hints does not turn node hints off",
      {
        endpoints: [e("10.0.0.1", { ready: true, local: true, nodes: [NODE] }), e("10.0.0.2")],
        cluster: ["10.0.0.1"],
      },
    ],
    [
      "the hint for this node is on an unready endpoint only: no node mode, no zone hints: all ready",
      {
        endpoints: [
          e("10.0.0.1", { local: true, nodes: [NODE] }),
          e("10.0.0.2", { ready: true, nodes: ["node-2"] }),
          e("10.0.0.3", { ready: true, nodes: ["node-3"] }),
        ],
        cluster: ["10.0.0.2", "10.0.0.3"],
      },
    ],
    [
      "node hints apply without a zone label on the node",
      {
        zone: null,
        endpoints: [
          e("10.0.0.1", { ready: true, nodes: [NODE] }),
          e("10.0.0.2", { ready: true, nodes: ["node-2"] }),
        ],
        cluster: ["10.0.0.1"],
      },
    ],
    [
      "no ready endpoint: Serving+Terminating ones, hints not considered",
      {
        endpoints: [
          e("10.0.0.1", { serving: true, terminating: true, nodes: ["node-2"] }),
          e("10.0.0.2", { serving: true, terminating: true, local: true, nodes: [NODE] }),
        ],
        cluster: ["10.0.0.1", "10.0.0.2"],
      },
    ],
    [
      "eTP Local: node hints are not applied to the Local endpoints",
      {
        etpLocal: true,
        nodePort: true,
        endpoints: [
          e("10.0.0.1", { ready: true, local: true, nodes: ["node-2"] }),
          e("10.0.0.2", { ready: true, local: true, nodes: [NODE] }),
          e("10.0.0.3", { ready: true, nodes: ["node-3"] }),
        ],
        cluster: ["10.0.0.2"],
        local: ["10.0.0.1", "10.0.0.2"],
      },
    ],
    [
      "iTP Local: node hints are not applied to the Local endpoints",
      {
        itpLocal: true,
        endpoints: [
          e("10.0.0.1", { ready: true, local: true, nodes: ["node-2"] }),
          e("10.0.0.2", { ready: true, local: true, nodes: [NODE] }),
        ],
        local: ["10.0.0.1", "10.0.0.2"],
      },
    ],
    [
      "trafficDistribution: PreferSameNode without hints: no filtering (kube-proxy reads the hints only)",
      {
        trafficDistribution: "PreferSameNode",
        endpoints: [e("10.0.0.1", { ready: true, local: true }), e("10.0.0.2", { ready: true })],
        cluster: ["10.0.0.1", "10.0.0.2"],
      },
    ],
  ])("%s", (_name, c) => {
    expect(categorize(c)).toEqual(expected(c));
  });
});

describe("endpointslicecache.go endpointInfoByServicePort: slice ports", () => {
  const two = (ports: EndpointPort[]) =>
    state({
      services: [svc("web", { ports: [{ name: "http", port: 80, targetPort: 8080 }] })],
      endpointSlices: [
        slice("web", "web-a", ports, [{ addresses: ["10.244.1.10"] }]),
        slice("web", "web-b", [{ name: "http", port: 8080 }], [{ addresses: ["10.244.2.10"] }]),
      ],
    });
  test.each<[string, ClusterState, string[]]>([
    [
      'a port without a number is ignored ("Ignoring invalid endpoint port"): no endpoints, the targetPort is not used',
      state({
        services: [svc("web", { ports: [{ name: "http", port: 80, targetPort: 8080 }] })],
        endpointSlices: [slice("web", "web-a", [{ name: "http" }], [{ addresses: ["10.244.1.10"] }])],
      }),
      ["ClusterIP 10.96.0.1:80/TCP =>  [reject]"],
    ],
    [
      "a port without a number in one slice leaves the other slices' endpoints (per slice)",
      two([{ name: "http" }]),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.2.10:8080/TCP"],
    ],
    [
      "a numbered port with another name does not match (ServicePortName is the port name)",
      two([{ name: "web", port: 9090 }]),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.2.10:8080/TCP"],
    ],
    [
      "another protocol does not match (ServicePortName has the protocol; absent is TCP, the API default)",
      two([{ name: "http", port: 9090, protocol: "UDP" }]),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.2.10:8080/TCP"],
    ],
    [
      'an absent port name is "" (discovery/v1 SetDefaults_EndpointPort) and matches an unnamed service port',
      state({
        services: [svc("web")],
        endpointSlices: [slice("web", "web-a", [{ port: 8080 }], [{ addresses: ["10.244.1.10"] }])],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP"],
    ],
    [
      "an unnamed port without a number: no endpoints",
      state({
        services: [svc("web")],
        endpointSlices: [slice("web", "web-a", [{ name: "" }], [{ addresses: ["10.244.1.10"] }])],
      }),
      ["ClusterIP 10.96.0.1:80/TCP =>  [reject]"],
    ],
    [
      "legacy Endpoints: a subset port without a number gives no endpoints either",
      state({
        services: [svc("web")],
        endpoints: [
          {
            kind: "Endpoints",
            metadata: { name: "web", namespace: "default" },
            subsets: [{ addresses: [{ ip: "10.244.1.10" }], ports: [{ name: "" }] }],
          },
        ],
      }),
      ["ClusterIP 10.96.0.1:80/TCP =>  [reject]"],
    ],
  ])("%s", (_name, s, want) => {
    expect(plan(s)).toEqual(want);
  });
});

describe("service-proxy-name: EndpointSlices outside kube-proxy's label selector are ignored", () => {
  const web = (labels: Record<string, string> = {}, addr = "10.244.1.10") => {
    const s = slice("web", `web-${addr}`, [{ port: 8080 }], [{ addresses: [addr] }]);
    s.metadata.labels = { ...s.metadata.labels, ...labels };
    return s;
  };
  const named = (c: Config) => {
    c.k8s.serviceProxyName = "kpr";
  };
  test.each<[string, ClusterState, string[], Config]>([
    [
      "selector !service.kubernetes.io/service-proxy-name: a labelled slice is ignored",
      state({
        services: [svc("web")],
        endpointSlices: [web({ [PROXY_NAME]: "other" }), web({}, "10.244.2.10")],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.2.10:8080/TCP"],
      cfg(),
    ],
    [
      "selector !service.kubernetes.io/service-proxy-name: only labelled slices: no endpoints",
      state({ services: [svc("web")], endpointSlices: [web({ [PROXY_NAME]: "other" })] }),
      ["ClusterIP 10.96.0.1:80/TCP =>  [reject]"],
      cfg(),
    ],
    [
      "selector !service.kubernetes.io/headless: a slice labelled headless is ignored",
      state({ services: [svc("web")], endpointSlices: [web({ "service.kubernetes.io/headless": "" })] }),
      ["ClusterIP 10.96.0.1:80/TCP =>  [reject]"],
      cfg(),
    ],
    [
      "k8s.serviceProxyName: only slices labelled with that name (service-proxy-name=kpr)",
      state({
        services: [svc("web", {}, { labels: { [PROXY_NAME]: "kpr" } })],
        endpointSlices: [
          web({ [PROXY_NAME]: "kpr" }),
          web({ [PROXY_NAME]: "other" }, "10.244.2.10"),
          web({}, "10.244.3.10"),
        ],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP"],
      cfg(named),
    ],
    [
      "a labelled slice's addresses are not checked (127.0.0.1 in an ignored slice is no error)",
      state({
        services: [svc("web")],
        endpointSlices: [web({ [PROXY_NAME]: "other" }, "127.0.0.1"), web({}, "10.244.2.10")],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.2.10:8080/TCP"],
      cfg(),
    ],
    [
      "a labelled legacy Endpoints object is ignored the same way",
      state({
        services: [svc("web")],
        endpoints: [
          {
            kind: "Endpoints",
            metadata: { name: "web", namespace: "default", labels: { [PROXY_NAME]: "other" } },
            subsets: [{ addresses: [{ ip: "10.244.1.10" }], ports: [{ port: 8080 }] }],
          },
        ],
      }),
      ["ClusterIP 10.96.0.1:80/TCP =>  [reject]"],
      cfg(),
    ],
  ])("%s", (_name, s, want, c) => {
    expect(plan(s, c)).toEqual(want);
  });

  test("the daemon's incremental translation ignores a labelled slice too", () => {
    const c = cfg();
    const s = state({ services: [svc("web")], endpointSlices: [web({}, "10.244.2.10")] });
    const t = IncrementalTranslation.seed(translate(s, c), c);
    t.update(
      new Map([
        [
          "default/web",
          {
            services: [svc("web")],
            endpointSlices: [web({ [PROXY_NAME]: "other" }), web({}, "10.244.2.10")],
            endpoints: [],
          },
        ],
      ]),
    );
    expect(
      t.model().frontends.map((f) => `${l4Key(f.frontend)} => ${f.backends.map((b) => l4Key(b)).join(",")}`),
    ).toEqual(["10.96.0.1:80/TCP => 10.244.2.10:8080/TCP"]);
  });
});
