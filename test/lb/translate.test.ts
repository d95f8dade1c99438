import { describe, expect, it, test } from "bun:test";
import type { Config } from "../../src/config/config.ts";
import type { ClusterState } from "../../src/k8s/types.ts";
import { translate } from "../../src/lb/translate.ts";
import { cfg, ep, node, plan, pod, problems, slice, state, svc } from "./_fixtures.ts";

// Rows get an explicit config: bun passes a done callback in place of missing trailing arguments.
const fill4 = (rows: [string, ClusterState, string[], Config?][]) =>
  rows.map((r): [string, ClusterState, string[], Config] => [r[0], r[1], r[2], r[3] ?? cfg()]);
const fill3 = (rows: [string, ClusterState, Config?][]) =>
  rows.map((r): [string, ClusterState, Config] => [r[0], r[1], r[2] ?? cfg()]);

const P80 = [{ name: "", port: 8080 }];
const web = (eps = [ep("10.244.1.10")]) => slice("web", "web-a", P80, eps);

describe("frontend kinds", () => {
  test.each<[string, ClusterState, string[], Config]>(
    fill4([
      [
        "ClusterIP",
        state({ services: [svc("web")], endpointSlices: [web()] }),
        ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP"],
      ],
      [
        "dual-stack ClusterIP: each family gets its own backends, IPv6 in canonical form",
        state({
          services: [svc("web", { clusterIP: "10.96.0.1", clusterIPs: ["10.96.0.1", "FD00:0:0::1"] })],
          endpointSlices: [web(), slice("web", "web-6", P80, [ep("fd00:244::0:10")], "IPv6")],
        }),
        [
          "ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP",
          "ClusterIP [fd00::1]:80/TCP => [fd00:244::10]:8080/TCP",
        ],
      ],
      [
        "NodePort: node addresses, 0.0.0.0 and 127.0.0.1 (Node object addresses)",
        state({
          services: [
            svc("web", { type: "NodePort", ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }] }),
          ],
          endpointSlices: [web()],
          nodes: [node("node-1", ["192.168.50.2", "fd50::2"]), node("node-2", ["192.168.50.3"])],
        }),
        [
          "ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP",
          "NodePort 0.0.0.0:30080/TCP => 10.244.1.10:8080/TCP",
          "NodePort 127.0.0.1:30080/TCP => 10.244.1.10:8080/TCP",
          "NodePort 192.168.50.2:30080/TCP => 10.244.1.10:8080/TCP",
        ],
      ],
      [
        "NodePort of an IPv6 service: node IPv6 addresses and ::",
        state({
          services: [
            svc("web", { type: "NodePort", clusterIP: "fd00::1", ports: [{ port: 80, nodePort: 30080 }] }),
          ],
          endpointSlices: [slice("web", "w6", [{ port: 80 }], [ep("fd00::10")], "IPv6")],
          nodes: [node("node-1", ["192.168.50.2", "fd50::2"])],
        }),
        [
          "ClusterIP [fd00::1]:80/TCP => [fd00::10]:80/TCP",
          "NodePort [::]:30080/TCP => [fd00::10]:80/TCP",
          "NodePort [fd50::2]:30080/TCP => [fd00::10]:80/TCP",
        ],
      ],
      [
        "nodePort.enabled=false: no NodePort and no HostPort frontends",
        state({
          services: [
            svc("web", { type: "NodePort", ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }] }),
          ],
          endpointSlices: [web()],
          pods: [pod("hp", "10.244.1.50", [{ containerPort: 80, hostPort: 8081 }])],
        }),
        ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP"],
        cfg((c) => {
          c.nodePort.enabled = false;
        }),
      ],
      [
        "ExternalIPs",
        state({ services: [svc("web", { externalIPs: ["203.0.113.7"] })], endpointSlices: [web()] }),
        [
          "ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP",
          "ExternalIPs 203.0.113.7:80/TCP => 10.244.1.10:8080/TCP",
        ],
      ],
      [
        "LoadBalancer: ingress IPs (not ipMode Proxy, not hostnames), node ports typed NodePort, source ranges on LB only",
        state({
          services: [
            svc(
              "web",
              {
                type: "LoadBalancer",
                ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }],
                loadBalancerSourceRanges: ["198.51.100.0/24", "10.0.0.5/8"],
              },
              {
                status: {
                  loadBalancer: {
                    ingress: [
                      { ip: "203.0.113.10" },
                      { ip: "203.0.113.11", ipMode: "Proxy" },
                      { hostname: "lb.example" },
                    ],
                  },
                },
              },
            ),
          ],
          endpointSlices: [web()],
        }),
        [
          "ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP",
          "LoadBalancer 203.0.113.10:80/TCP => 10.244.1.10:8080/TCP [src=allow:198.51.100.0/24,10.0.0.0/8]",
          "NodePort 0.0.0.0:30080/TCP => 10.244.1.10:8080/TCP",
          "NodePort 127.0.0.1:30080/TCP => 10.244.1.10:8080/TCP",
        ],
      ],
      [
        "LoadBalancer without node ports (allocateLoadBalancerNodePorts: false), src-ranges-policy deny",
        state({
          services: [
            svc(
              "web",
              { type: "LoadBalancer", loadBalancerSourceRanges: ["192.0.2.0/24"] },
              {
                annotations: { "service.cilium.io/src-ranges-policy": "deny" },
                status: { loadBalancer: { ingress: [{ ip: "203.0.113.10" }] } },
              },
            ),
          ],
          endpointSlices: [web()],
        }),
        [
          "ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP",
          "LoadBalancer 203.0.113.10:80/TCP => 10.244.1.10:8080/TCP [src=deny:192.0.2.0/24]",
        ],
      ],
      [
        "externalIPs and LoadBalancer IPs of a family the service lacks are not programmed (kube-proxy)",
        state({
          services: [
            svc(
              "web",
              { type: "LoadBalancer", externalIPs: ["203.0.113.1", "2001:db8::1"] },
              { status: { loadBalancer: { ingress: [{ ip: "203.0.113.10" }, { ip: "2001:db8::10" }] } } },
            ),
          ],
          endpointSlices: [web()],
        }),
        [
          "ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP",
          "ExternalIPs 203.0.113.1:80/TCP => 10.244.1.10:8080/TCP",
          "LoadBalancer 203.0.113.10:80/TCP => 10.244.1.10:8080/TCP",
        ],
      ],
      [
        "HostPort: running pods on this node only; node addresses + 0.0.0.0, or the hostIP",
        state({
          nodes: [node("node-1", ["192.168.50.2"])],
          pods: [
            pod("a", "10.244.1.50", [{ containerPort: 80, hostPort: 8081 }]),
            pod("b", "10.244.1.51", [
              { containerPort: 53, hostPort: 5353, protocol: "UDP", hostIP: "192.168.50.2" },
            ]),
            pod("c-other-node", "10.244.2.50", [{ containerPort: 80, hostPort: 8082 }], {
              nodeName: "node-2",
            }),
            pod("d-pending", "10.244.1.52", [{ containerPort: 80, hostPort: 8083 }], { phase: "Pending" }),
            pod("e-no-hostport", "10.244.1.53", [{ containerPort: 80 }]),
            // The API defaults hostPort to containerPort on hostNetwork pods: no DNAT (as CNI portmap).
            (() => {
              const p = pod("f-host-network", "192.168.50.2", [{ containerPort: 9100, hostPort: 9100 }]);
              return { ...p, spec: { ...p.spec, hostNetwork: true } };
            })(),
          ],
        }),
        [
          "HostPort 0.0.0.0:8081/TCP => 10.244.1.50:80/TCP",
          "HostPort 192.168.50.2:5353/UDP => 10.244.1.51:53/UDP",
          "HostPort 192.168.50.2:8081/TCP => 10.244.1.50:80/TCP",
        ],
      ],
    ]),
  )("%s", (_name, s, want, c) => {
    expect(plan(s, c)).toEqual(want);
  });

  it("opts.nodeAddresses (from devices) replace the Node object's addresses", () => {
    const s = state({
      services: [svc("web", { type: "NodePort", ports: [{ port: 80, targetPort: 8080, nodePort: 30080 }] })],
      endpointSlices: [web()],
      nodes: [node("node-1", ["192.168.50.2"])],
    });
    const m = translate(s, cfg(), { nodeAddresses: ["10.1.1.1"] });
    expect(m.node.addresses).toEqual(["10.1.1.1"]);
    expect(m.frontends.filter((f) => f.type === "NodePort").map((f) => f.frontend.address)).toEqual([
      "0.0.0.0",
      "10.1.1.1",
      "127.0.0.1",
    ]);
  });
});

describe("services skipped", () => {
  test.each<[string, ClusterState, Config]>(
    fill3([
      ["headless (clusterIP None)", state({ services: [svc("h", { clusterIP: "None" })] })],
      [
        "ExternalName",
        state({ services: [svc("x", { type: "ExternalName", externalName: "example.com" })] }),
      ],
      [
        "label service.kubernetes.io/headless",
        state({ services: [svc("h", {}, { labels: { "service.kubernetes.io/headless": "" } })] }),
      ],
      [
        "service-proxy-name label when kpr has no name",
        state({
          services: [svc("p", {}, { labels: { "service.kubernetes.io/service-proxy-name": "other" } })],
        }),
      ],
      [
        "service-proxy-name label not matching k8s.serviceProxyName",
        state({
          services: [svc("p", {}, { labels: { "service.kubernetes.io/service-proxy-name": "other" } })],
        }),
        cfg((c) => {
          c.k8s.serviceProxyName = "kpr";
        }),
      ],
      [
        "no service-proxy-name label when k8s.serviceProxyName is set",
        state({ services: [svc("p")] }),
        cfg((c) => {
          c.k8s.serviceProxyName = "kpr";
        }),
      ],
    ]),
  )("%s", (_name, s, c) => {
    expect(plan(s, c)).toEqual([]);
  });

  it("a service whose proxy name matches k8s.serviceProxyName is kept", () => {
    const s = state({
      services: [svc("p", {}, { labels: { "service.kubernetes.io/service-proxy-name": "kpr" } })],
    });
    const c = cfg((x) => {
      x.k8s.serviceProxyName = "kpr";
    });
    expect(plan(s, c)).toEqual(["ClusterIP 10.96.0.1:80/TCP =>  [reject]"]);
  });
});

describe("backends", () => {
  test.each<[string, ClusterState, string[]]>([
    [
      "named targetPort resolved per slice (different numbers per slice)",
      state({
        services: [svc("web", { ports: [{ name: "web", port: 80, targetPort: "http" }] })],
        endpointSlices: [
          slice("web", "web-a", [{ name: "web", port: 8080 }], [ep("10.244.1.10")]),
          slice("web", "web-b", [{ name: "web", port: 9090 }], [ep("10.244.2.10")]),
        ],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP,10.244.2.10:9090/TCP"],
    ],
    [
      "hand-written slice whose port is named after the targetPort",
      state({
        services: [svc("web", { ports: [{ name: "web", port: 80, targetPort: "http" }] })],
        endpointSlices: [slice("web", "web-a", [{ name: "http", port: 8080 }], [ep("10.244.1.10")])],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP"],
    ],
    [
      "same port number for TCP and UDP: two frontends, backends by protocol",
      state({
        services: [
          svc("dns", {
            ports: [
              { name: "dns-tcp", port: 53, protocol: "TCP", targetPort: 5353 },
              { name: "dns-udp", port: 53, protocol: "UDP", targetPort: 5353 },
            ],
          }),
        ],
        endpointSlices: [
          slice(
            "dns",
            "dns-a",
            [
              { name: "dns-tcp", port: 5353, protocol: "TCP" },
              { name: "dns-udp", port: 5353, protocol: "UDP" },
            ],
            [ep("10.244.1.10")],
          ),
        ],
      }),
      [
        "ClusterIP 10.96.0.1:53/TCP => 10.244.1.10:5353/TCP",
        "ClusterIP 10.96.0.1:53/UDP => 10.244.1.10:5353/UDP",
      ],
    ],
    [
      "endpoints whose slice has no matching port are no backends for that port",
      state({
        services: [
          svc("web", {
            ports: [
              { name: "http", port: 80 },
              { name: "metrics", port: 9100 },
            ],
          }),
        ],
        endpointSlices: [
          slice("web", "web-a", [{ name: "http", port: 8080 }], [ep("10.244.1.10")]),
          slice(
            "web",
            "web-b",
            [
              { name: "http", port: 8080 },
              { name: "metrics", port: 9100 },
            ],
            [ep("10.244.1.11")],
          ),
        ],
      }),
      [
        "ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP,10.244.1.11:8080/TCP",
        "ClusterIP 10.96.0.1:9100/TCP => 10.244.1.11:9100/TCP",
      ],
    ],
    [
      "deduplicated across slices, the better state wins",
      state({
        services: [svc("web")],
        endpointSlices: [
          web([ep("10.244.1.10", { conditions: { ready: false } }), ep("10.244.1.11")]),
          slice("web", "web-b", P80, [ep("10.244.1.10"), ep("10.244.1.11")]),
        ],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP,10.244.1.11:8080/TCP"],
    ],
    [
      "Ready ones serve new connections; not-ready left out; serving+terminating kept behind them as terminating slots (tracked flows keep their backend)",
      state({
        services: [svc("web")],
        endpointSlices: [
          web([
            ep("10.244.1.10"),
            ep("10.244.1.11", { conditions: { ready: false, serving: false } }),
            ep("10.244.1.12", { conditions: { ready: false, serving: true, terminating: true } }),
          ]),
        ],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP,10.244.1.12:8080/TCP(t)"],
    ],
    [
      "no Ready: Serving+Terminating fallback (not serving ones stay out)",
      state({
        services: [svc("web")],
        endpointSlices: [
          web([
            ep("10.244.1.11", { conditions: { ready: false, serving: false, terminating: true } }),
            ep("10.244.1.12", { conditions: { ready: false, serving: true, terminating: true } }),
          ]),
        ],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.12:8080/TCP(t)"],
    ],
    [
      "terminating fallback per scope: the local set falls back on its own",
      state({
        services: [
          svc("web", {
            type: "NodePort",
            externalTrafficPolicy: "Local",
            ports: [{ port: 80, nodePort: 30080 }],
          }),
        ],
        endpointSlices: [
          slice(
            "web",
            "web-a",
            [{ port: 80 }],
            [
              ep("10.244.1.10", { conditions: { ready: false, serving: true, terminating: true } }),
              ep("10.244.2.10", { nodeName: "node-2" }),
            ],
          ),
        ],
      }),
      [
        "ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:80/TCP(t),10.244.2.10:80/TCP",
        "NodePort 0.0.0.0:30080/TCP => 10.244.1.10:80/TCP(t) [local] in-cluster => 10.244.1.10:80/TCP(t),10.244.2.10:80/TCP",
        "NodePort 127.0.0.1:30080/TCP => 10.244.1.10:80/TCP(t) [local] in-cluster => 10.244.1.10:80/TCP(t),10.244.2.10:80/TCP",
      ],
    ],
    [
      "conditions unset mean true (discovery/v1, kube-proxy): serving unset + terminating is a fallback",
      state({
        services: [svc("web")],
        endpointSlices: [web([ep("10.244.1.12", { conditions: { ready: false, terminating: true } })])],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.12:8080/TCP(t)"],
    ],
    [
      "conditions unset mean true: ready unset is Ready even when terminating (as kube-proxy)",
      state({
        services: [svc("web")],
        endpointSlices: [
          web([
            { addresses: ["10.244.1.12"], conditions: { terminating: true }, nodeName: "node-1" },
            { addresses: ["10.244.1.13"], nodeName: "node-1" },
          ]),
        ],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.12:8080/TCP,10.244.1.13:8080/TCP"],
    ],
    [
      "publishNotReadyAddresses uses every endpoint",
      state({
        services: [svc("web", { publishNotReadyAddresses: true })],
        endpointSlices: [
          web([ep("10.244.1.10", { conditions: { ready: false, serving: false } }), ep("10.244.1.11")]),
        ],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP,10.244.1.11:8080/TCP"],
    ],
    [
      "no usable backends: kept with reject",
      state({
        services: [svc("web")],
        endpointSlices: [web([ep("10.244.1.10", { conditions: { ready: false } })])],
      }),
      ["ClusterIP 10.96.0.1:80/TCP =>  [reject]"],
    ],
    [
      "legacy Endpoints used when the service has no EndpointSlice",
      state({
        services: [svc("web", { ports: [{ name: "http", port: 80, targetPort: 8080 }] })],
        endpoints: [
          {
            kind: "Endpoints",
            metadata: { name: "web", namespace: "default" },
            subsets: [
              {
                addresses: [{ ip: "10.244.1.10", nodeName: "node-1" }],
                notReadyAddresses: [{ ip: "10.244.1.11" }],
                ports: [{ name: "http", port: 8080 }],
              },
            ],
          },
        ],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP"],
    ],
    [
      "legacy Endpoints ignored when an EndpointSlice exists",
      state({
        services: [svc("web")],
        endpointSlices: [web()],
        endpoints: [
          {
            kind: "Endpoints",
            metadata: { name: "web", namespace: "default" },
            subsets: [{ addresses: [{ ip: "10.244.9.9" }], ports: [{ port: 8080 }] }],
          },
        ],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP"],
    ],
  ])("%s", (_name, s, want) => {
    expect(plan(s)).toEqual(want);
  });
});

describe("traffic policies, affinity, hints", () => {
  const local = (spec: NonNullable<Parameters<typeof svc>[1]>) =>
    state({
      services: [svc("web", { ports: [{ port: 80, nodePort: 30080 }], ...spec })],
      endpointSlices: [
        slice("web", "w", [{ port: 80 }], [ep("10.244.1.10"), ep("10.244.2.10", { nodeName: "node-2" })]),
      ],
    });
  test.each<[string, ClusterState, string[]]>([
    [
      "eTP Local: external frontends local-only with the health check port; ClusterIP all",
      local({
        type: "NodePort",
        externalTrafficPolicy: "Local",
        healthCheckNodePort: 31000,
        externalIPs: ["203.0.113.7"],
      }),
      [
        "ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:80/TCP,10.244.2.10:80/TCP",
        "ExternalIPs 203.0.113.7:80/TCP => 10.244.1.10:80/TCP [local hc=31000] in-cluster => 10.244.1.10:80/TCP,10.244.2.10:80/TCP",
        "NodePort 0.0.0.0:30080/TCP => 10.244.1.10:80/TCP [local hc=31000] in-cluster => 10.244.1.10:80/TCP,10.244.2.10:80/TCP",
        "NodePort 127.0.0.1:30080/TCP => 10.244.1.10:80/TCP [local hc=31000] in-cluster => 10.244.1.10:80/TCP,10.244.2.10:80/TCP",
      ],
    ],
    [
      "iTP Local: ClusterIP local-only; NodePort all",
      local({ type: "NodePort", internalTrafficPolicy: "Local" }),
      [
        "ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:80/TCP [local]",
        "NodePort 0.0.0.0:30080/TCP => 10.244.1.10:80/TCP,10.244.2.10:80/TCP",
        "NodePort 127.0.0.1:30080/TCP => 10.244.1.10:80/TCP,10.244.2.10:80/TCP",
      ],
    ],
    [
      "iTP Local with endpoints on other nodes only: drop, not reject (kube-proxy)",
      state({
        services: [svc("web", { internalTrafficPolicy: "Local" })],
        endpointSlices: [web([ep("10.244.2.10", { nodeName: "node-2" })])],
      }),
      ["ClusterIP 10.96.0.1:80/TCP =>  [local drop]"],
    ],
    [
      "eTP Local with endpoints on other nodes only: external frontends drop; ClusterIP serves them",
      state({
        services: [
          svc("web", {
            type: "NodePort",
            externalTrafficPolicy: "Local",
            ports: [{ port: 80, nodePort: 30080 }],
          }),
        ],
        endpointSlices: [slice("web", "w", [{ port: 80 }], [ep("10.244.2.10", { nodeName: "node-2" })])],
      }),
      [
        "ClusterIP 10.96.0.1:80/TCP => 10.244.2.10:80/TCP",
        "NodePort 0.0.0.0:30080/TCP =>  [local drop] in-cluster => 10.244.2.10:80/TCP",
        "NodePort 127.0.0.1:30080/TCP =>  [local drop] in-cluster => 10.244.2.10:80/TCP",
      ],
    ],
    [
      "Local policy and no usable endpoint anywhere: reject",
      state({
        services: [svc("web", { internalTrafficPolicy: "Local" })],
        endpointSlices: [web([ep("10.244.2.10", { nodeName: "node-2", conditions: { ready: false } })])],
      }),
      ["ClusterIP 10.96.0.1:80/TCP =>  [local reject]"],
    ],
    [
      "ClientIP affinity, default timeout 10800",
      state({ services: [svc("web", { sessionAffinity: "ClientIP" })], endpointSlices: [web()] }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP [affinity=10800]"],
    ],
    [
      "ClientIP affinity with timeoutSeconds",
      state({
        services: [
          svc("web", {
            sessionAffinity: "ClientIP",
            sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
          }),
        ],
        endpointSlices: [web()],
      }),
      ["ClusterIP 10.96.0.1:80/TCP => 10.244.1.10:8080/TCP [affinity=60]"],
    ],
  ])("%s", (_name, s, want) => {
    expect(plan(s)).toEqual(want);
  });

  const zoned = (eps: ReturnType<typeof ep>[]) =>
    state({
      services: [svc("web")],
      endpointSlices: [web(eps)],
      nodes: [node("node-1", [], { "topology.kubernetes.io/zone": "a" })],
    });
  const hinted = (a: string, zones: string[]) =>
    ep(a, { hints: { forZones: zones.map((name) => ({ name })) } });
  test.each<[string, ClusterState, string]>([
    [
      "all hinted, some for this zone: those only",
      zoned([hinted("10.244.1.10", ["a"]), hinted("10.244.2.10", ["b"])]),
      "10.244.1.10:8080/TCP",
    ],
    [
      "one endpoint without hints: all",
      zoned([hinted("10.244.1.10", ["a"]), ep("10.244.2.10")]),
      "10.244.1.10:8080/TCP,10.244.2.10:8080/TCP",
    ],
    [
      "no hint names this zone: all",
      zoned([hinted("10.244.1.10", ["b"]), hinted("10.244.2.10", ["c"])]),
      "10.244.1.10:8080/TCP,10.244.2.10:8080/TCP",
    ],
  ])("topology hints: %s", (_name, s, want) => {
    expect(plan(s)).toEqual([`ClusterIP 10.96.0.1:80/TCP => ${want}`]);
  });
});

describe("Cilium annotations", () => {
  const np = (annotations: Record<string, string>) =>
    state({
      services: [
        svc(
          "web",
          { type: "LoadBalancer", ports: [{ port: 80, nodePort: 30080 }] },
          { annotations, status: { loadBalancer: { ingress: [{ ip: "203.0.113.10" }] } } },
        ),
      ],
      nodes: [node("node-1", [], { "service.cilium.io/node": "beefy", role: "edge" })],
    });
  test.each<[string, Record<string, string>, string[]]>([
    [
      "type LoadBalancer: only the LB frontend",
      { "service.cilium.io/type": "LoadBalancer" },
      ["LoadBalancer"],
    ],
    [
      "type NodePort,ClusterIP",
      { "service.cilium.io/type": "NodePort, ClusterIP" },
      ["ClusterIP", "NodePort", "NodePort"],
    ],
    [
      "node matches the node's service.cilium.io/node label",
      { "service.cilium.io/node": "slow,beefy" },
      ["ClusterIP", "LoadBalancer", "NodePort", "NodePort"],
    ],
    ["node does not match: not installed here", { "service.cilium.io/node": "slow" }, []],
    [
      "node-selector matches",
      { "service.cilium.io/node-selector": "role in (edge, core), !gpu" },
      ["ClusterIP", "LoadBalancer", "NodePort", "NodePort"],
    ],
    ["node-selector does not match", { "service.cilium.io/node-selector": "role=core" }, []],
  ])("%s", (_name, annotations, want) => {
    expect(plan(np(annotations)).map((r) => r.split(" ")[0])).toEqual(want);
  });
});

describe("ids", () => {
  const two = () =>
    state({
      services: [
        svc("b", { clusterIP: "10.96.0.2", ports: [{ port: 80 }] }),
        svc("a", { clusterIP: "10.96.0.1", ports: [{ port: 80 }] }),
      ],
      endpointSlices: [
        slice("a", "a1", [{ port: 80 }], [ep("10.244.1.10"), ep("10.244.1.11")]),
        slice("b", "b1", [{ port: 80 }], [ep("10.244.1.11")]),
      ],
    });

  it("new ids are the lowest free in sorted order; backend ids are shared", () => {
    const m = translate(two(), cfg());
    expect(
      m.frontends.map((f) => [f.id, f.service, f.backends.map((b) => `${b.id}=${b.address}`).join(",")]),
    ).toEqual([
      [1, "default/a", "1=10.244.1.10,2=10.244.1.11"],
      [2, "default/b", "2=10.244.1.11"],
    ]);
  });

  it("is deterministic whatever the input order", () => {
    const s = two();
    const r = two();
    r.services.reverse();
    r.endpointSlices.reverse();
    r.endpointSlices[0]!.endpoints!.reverse();
    expect(translate(r, cfg())).toEqual(translate(s, cfg()));
  });

  it("keeps previous ids; new ones get the lowest id not held by a previous entry", () => {
    const previous = {
      frontends: new Map([
        ["10.96.0.2:80/TCP", 7],
        ["10.96.0.9:80/TCP", 1],
      ]),
      backends: new Map([["10.244.1.11:80/TCP", 40]]),
    };
    const m = translate(two(), cfg(), { previous });
    expect(m.frontends.map((f) => [f.id, f.frontend.address, f.backends.map((b) => b.id)])).toEqual([
      [2, "10.96.0.1", [1, 40]], // id 1 was 10.96.0.9's, which goes away: not reused in the same round
      [7, "10.96.0.2", [40]],
    ]);
  });

  it("reuses a departing entry's id rather than going past the 16-bit frontend id space", () => {
    const frontends = new Map<string, number>();
    for (let id = 1; id <= 65535; id++) frontends.set(`10.97.${id >> 8}.${id & 255}:80/TCP`, id);
    const m = translate(two(), cfg(), { previous: { frontends, backends: new Map() } });
    const ids = m.frontends.map((f) => f.id);
    expect(ids, "frontend ids").toEqual([1, 2]);
  });

  it("a service switching type keeps the ids of the frontends it keeps", () => {
    const np = state({
      services: [svc("web", { type: "NodePort", ports: [{ port: 80, nodePort: 30080 }] })],
      endpointSlices: [slice("web", "w", [{ port: 80 }], [ep("10.244.1.10")])],
    });
    const before = translate(np, cfg());
    expect(before.frontends.map((f) => `${f.id} ${f.type} ${f.frontend.address}`)).toEqual([
      "1 ClusterIP 10.96.0.1",
      "2 NodePort 0.0.0.0",
      "3 NodePort 127.0.0.1",
    ]);
    const previous = {
      frontends: new Map(before.frontends.map((f) => [`${f.frontend.address}:${f.frontend.port}/TCP`, f.id])),
      backends: new Map(
        before.frontends.flatMap((f) => f.backends.map((b) => [`${b.address}:${b.port}/TCP`, b.id])),
      ),
    };
    const cip = structuredClone(np);
    cip.services[0]!.spec!.type = "ClusterIP";
    // A ClusterIP service keeps no node port even when the manifest still lists one.
    expect(translate(cip, cfg(), { previous }).frontends.map((f) => `${f.id} ${f.type}`)).toEqual([
      "1 ClusterIP",
    ]);
    const lb = structuredClone(np);
    lb.services[0]!.spec!.type = "LoadBalancer";
    lb.services[0]!.status = { loadBalancer: { ingress: [{ ip: "203.0.113.10" }] } };
    expect(
      translate(lb, cfg(), { previous }).frontends.map((f) => `${f.id} ${f.type} ${f.frontend.address}`),
    ).toEqual([
      "1 ClusterIP 10.96.0.1",
      "2 NodePort 0.0.0.0",
      "3 NodePort 127.0.0.1",
      "4 LoadBalancer 203.0.113.10",
    ]);
  });
});

describe("bad input", () => {
  it("reports every problem of every object in one run", () => {
    const s = state({
      services: [
        svc("a", {
          clusterIP: undefined,
          type: "NodePort",
          ports: [
            { name: "x", port: 0, protocol: "ICMP" },
            { name: "y", port: 81, nodePort: 20000 },
            { name: "z", port: 82 },
          ],
          externalIPs: ["1.2.3"],
          sessionAffinity: "ClientIP",
          sessionAffinityConfig: { clientIP: { timeoutSeconds: 90000 } },
          loadBalancerSourceRanges: ["10.0.0.0/33"],
          externalTrafficPolicy: "Sometimes",
        }),
        svc("b", { clusterIP: "10.96.0.9", ports: [{ port: 80 }] }),
        svc("c", { clusterIP: "10.96.0.9", ports: [{ port: 80 }] }),
        svc("d", { clusterIP: "10.96.0.300", type: "Weird" }),
      ],
      endpointSlices: [slice("b", "b1", [{ port: 80 }], [ep("10.244.1.999")])],
    });
    expect(problems(s)).toEqual([
      'a.yaml | Service default/a | spec.clusterIP | required (kpr allocates no ClusterIPs: set an address, or "None" for a headless service)',
      'a.yaml | Service default/a | spec.externalTrafficPolicy | got "Sometimes", expected one of Cluster, Local',
      "a.yaml | Service default/a | spec.sessionAffinityConfig.clientIP.timeoutSeconds | 90000 out of range 1-86400",
      'a.yaml | Service default/a | spec.externalIPs[0] | invalid IP address "1.2.3"',
      'a.yaml | Service default/a | spec.loadBalancerSourceRanges[0] | invalid CIDR "10.0.0.0/33"',
      'a.yaml | Service default/a | spec.ports[0].protocol | unknown protocol "ICMP" (expected TCP, UDP or SCTP)',
      "a.yaml | Service default/a | spec.ports[0].port | port 0 out of range 1-65535",
      "a.yaml | Service default/a | spec.ports[0].nodePort | required",
      "a.yaml | Service default/a | spec.ports[1].nodePort | 20000 is outside nodePort.range 30000-32767",
      "a.yaml | Service default/a | spec.ports[2].nodePort | required",
      'b1.yaml | EndpointSlice default/b1 | endpoints[0].addresses[0] | invalid IP address "10.244.1.999"',
      "c.yaml | Service default/c | frontend 10.96.0.9:80/TCP (ClusterIP) is also claimed by Service default/b (ClusterIP)",
      'd.yaml | Service default/d | spec.type | got "Weird", expected one of ClusterIP, NodePort, LoadBalancer, ExternalName',
    ]);
  });

  test.each<[string, ClusterState, string]>([
    [
      "two services with the same node port",
      state({
        services: [
          svc("a", { clusterIP: "10.96.0.1", type: "NodePort", ports: [{ port: 80, nodePort: 30080 }] }),
          svc("b", { clusterIP: "10.96.0.2", type: "NodePort", ports: [{ port: 81, nodePort: 30080 }] }),
        ],
      }),
      "b.yaml | Service default/b | frontend 0.0.0.0:30080/TCP (NodePort) is also claimed by Service default/a (NodePort)",
    ],
    [
      "a hostPort on a service's external IP",
      state({
        services: [svc("a", { externalIPs: ["192.168.50.2"], ports: [{ port: 8081 }] })],
        nodes: [node("node-1", ["192.168.50.2"])],
        pods: [pod("hp", "10.244.1.50", [{ containerPort: 80, hostPort: 8081 }])],
      }),
      "hp.yaml | Pod default/hp | frontend 192.168.50.2:8081/TCP (HostPort) is also claimed by Service default/a (ExternalIPs)",
    ],
    [
      "two ports of one service with the same node port and protocol",
      state({
        services: [
          svc("a", {
            type: "NodePort",
            ports: [
              { name: "x", port: 80, nodePort: 30080 },
              { name: "y", port: 81, nodePort: 30080 },
            ],
          }),
        ],
      }),
      "a.yaml | Service default/a | spec.ports[1].nodePort | duplicate nodePort 30080/TCP (also spec.ports[0])",
    ],
    [
      "affinity timeout 0",
      state({
        services: [
          svc("a", {
            sessionAffinity: "ClientIP",
            sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } },
          }),
        ],
      }),
      "a.yaml | Service default/a | spec.sessionAffinityConfig.clientIP.timeoutSeconds | 0 out of range 1-86400",
    ],
    [
      "bad node selector",
      state({ services: [svc("a", {}, { annotations: { "service.cilium.io/node-selector": "a in (b" } })] }),
      "a.yaml | Service default/a | metadata.annotations[service.cilium.io/node-selector] | unbalanced parentheses",
    ],
    [
      "bad service.cilium.io/type",
      state({ services: [svc("a", {}, { annotations: { "service.cilium.io/type": "ClusterIP,Magic" } })] }),
      'a.yaml | Service default/a | metadata.annotations[service.cilium.io/type] | got "Magic", expected a comma list of ClusterIP, NodePort, LoadBalancer, ExternalIPs',
    ],
    [
      "multi-port service without port names",
      state({ services: [svc("a", { ports: [{ port: 80 }, { port: 81 }] })] }),
      "a.yaml | Service default/a | spec.ports[0].name | required when the service has more than one port",
    ],
    [
      "no ports",
      state({ services: [svc("a", { ports: [] })] }),
      "a.yaml | Service default/a | spec.ports | required: at least one port",
    ],
  ])("%s", (_name, s, want) => {
    expect(problems(s)).toContain(want);
  });

  it("more frontends or backends than bpf.lbMapMax", () => {
    const s = state({
      services: [svc("a", { externalIPs: ["203.0.113.1", "203.0.113.2"] })],
      endpointSlices: [
        slice("a", "a1", [{ port: 8080 }], [ep("10.244.1.1"), ep("10.244.1.2"), ep("10.244.1.3")]),
      ],
    });
    const c = cfg((x) => {
      x.bpf.lbMapMax = 2;
    });
    expect(problems(s, c)).toEqual([
      "bpf.lbMapMax | 3 frontends exceed the capacity of 2 (raise bpf.lbMapMax; at most 65535)",
      "bpf.lbMapMax | 3 backends exceed bpf.lbMapMax (2)",
    ]);
  });
});

describe("two traffic scopes (in-cluster traffic to eTP=Local external frontends)", () => {
  // kube-proxy pkg/proxy/nftables/proxier_test.go TestExternalTrafficPolicyLocal: a LoadBalancer
  // service with eTP=Local, an external IP, a NodePort, one endpoint on this node (epIP2) and one
  // elsewhere (epIP1, no nodeName). "pod to ... hits both endpoints", "external to ... hits only
  // local endpoint" for the external IP, the LB IP and the NodePort; the cluster IP hits both.
  const testNode = (mut?: (c: Config) => void) =>
    cfg((c) => {
      c.nodeName = "test-node";
      c.nodePort.range = [3000, 32767]; // the test's NodePort 3001
      mut?.(c);
    });
  const etpLocal = (itp?: "Local") =>
    state({
      nodes: [node("test-node", ["192.168.0.2"])],
      services: [
        svc(
          "svc1",
          {
            type: "LoadBalancer",
            clusterIP: "172.30.0.41",
            externalIPs: ["192.168.99.11"],
            externalTrafficPolicy: "Local",
            ...(itp ? { internalTrafficPolicy: itp } : {}),
            healthCheckNodePort: 30000,
            ports: [{ name: "p80", port: 80, targetPort: 80, nodePort: 3001 }],
          },
          { status: { loadBalancer: { ingress: [{ ip: "1.2.3.4" }] } } },
        ),
      ],
      endpointSlices: [
        slice(
          "svc1",
          "svc1-1",
          [{ name: "p80", port: 80 }],
          [
            { addresses: ["10.180.0.1"], conditions: { ready: true } },
            { addresses: ["10.180.2.1"], conditions: { ready: true }, nodeName: "test-node" },
          ],
        ),
      ],
    });

  it("TestExternalTrafficPolicyLocal: pods reach both endpoints through every frontend, external clients only the local one", () => {
    const rows = plan(etpLocal(), testNode()).filter(
      (r) => !r.includes("127.0.0.1:") && !r.includes("0.0.0.0:"),
    );
    expect(rows).toEqual([
      "ClusterIP 172.30.0.41:80/TCP => 10.180.0.1:80/TCP,10.180.2.1:80/TCP",
      "ExternalIPs 192.168.99.11:80/TCP => 10.180.2.1:80/TCP [local hc=30000] in-cluster => 10.180.0.1:80/TCP,10.180.2.1:80/TCP",
      "LoadBalancer 1.2.3.4:80/TCP => 10.180.2.1:80/TCP [local hc=30000] in-cluster => 10.180.0.1:80/TCP,10.180.2.1:80/TCP",
      "NodePort 192.168.0.2:3001/TCP => 10.180.2.1:80/TCP [local hc=30000] in-cluster => 10.180.0.1:80/TCP,10.180.2.1:80/TCP",
    ]);
  });

  it("TestExternalTrafficPolicyCluster: eTP=Cluster frontends have one set (no in-cluster set)", () => {
    const st = etpLocal();
    st.services[0]!.spec!.externalTrafficPolicy = "Cluster";
    const m = translate(st, testNode());
    expect(m.frontends.filter((f) => f.internalBackends !== undefined)).toEqual([]);
  });

  it("eTP=Local and iTP=Local: the ClusterIP is local-only, in-cluster traffic to external frontends still reaches every endpoint (serviceport.go UsesClusterEndpoints: 'we need Cluster endpoints to implement short circuiting')", () => {
    const rows = plan(etpLocal("Local"), testNode()).filter(
      (r) => r.startsWith("ClusterIP") || r.startsWith("NodePort 192.168.0.2"),
    );
    expect(rows).toEqual([
      "ClusterIP 172.30.0.41:80/TCP => 10.180.2.1:80/TCP [local]",
      "NodePort 192.168.0.2:3001/TCP => 10.180.2.1:80/TCP [local hc=30000] in-cluster => 10.180.0.1:80/TCP,10.180.2.1:80/TCP",
    ]);
  });

  it("iTP=Local with eTP=Cluster: external frontends serve every endpoint to everyone (kube-proxy's external chain jumps to the cluster chain)", () => {
    const st = etpLocal("Local");
    st.services[0]!.spec!.externalTrafficPolicy = "Cluster";
    const m = translate(st, testNode());
    const np = m.frontends.find((f) => f.type === "NodePort" && f.frontend.address === "192.168.0.2")!;
    expect(np.internalBackends).toBeUndefined();
    expect(np.backends.map((b) => b.address)).toEqual(["10.180.0.1", "10.180.2.1"]);
  });

  it("the in-cluster set uses the Cluster-scope rules (ready first, terminating fallback on its own)", () => {
    const st = etpLocal();
    st.endpointSlices[0]!.endpoints = [
      { addresses: ["10.180.0.1"], conditions: { ready: false, serving: true, terminating: true } },
      {
        addresses: ["10.180.2.1"],
        conditions: { ready: false, serving: true, terminating: true },
        nodeName: "test-node",
      },
      { addresses: ["10.180.0.2"], conditions: { ready: true } },
    ];
    const rows = plan(st, testNode()).filter((r) => r.startsWith("NodePort 192.168.0.2"));
    expect(rows).toEqual([
      "NodePort 192.168.0.2:3001/TCP => 10.180.2.1:80/TCP(t) [local hc=30000] in-cluster => 10.180.0.1:80/TCP(t),10.180.0.2:80/TCP,10.180.2.1:80/TCP(t)",
    ]);
  });

  it("service list JSON carries the in-cluster set as internalBackends", async () => {
    const { toServiceEntryJson } = await import("../../src/lb/format.ts");
    const m = translate(etpLocal(), testNode());
    const np = m.frontends.find((f) => f.type === "NodePort" && f.frontend.address === "192.168.0.2")!;
    const j = toServiceEntryJson(np);
    expect(j.backends.map((b) => b.address)).toEqual(["10.180.2.1"]);
    expect(j.internalBackends?.map((b) => b.address)).toEqual(["10.180.0.1", "10.180.2.1"]);
  });
});
