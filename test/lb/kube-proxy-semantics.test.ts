/**
 * Translation rules held against kube-proxy's own sources and test tables (kubernetes/kubernetes
 * master). Each case names where it comes from: a case transcribed from a kube-proxy test table
 * cites the test and the case name; a case derived from kube-proxy code (where the test table
 * was not available) cites the function it follows.
 */
import { describe, expect, test } from "bun:test";
import type { ClusterState, EndpointPort, Endpoints } from "../../src/k8s/types.ts";
import { translate } from "../../src/lb/translate.ts";
import { cfg, plan, slice, state, svc } from "./_fixtures.ts";

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
