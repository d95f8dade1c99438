import { describe, expect, test } from "bun:test";
import { specialRange } from "../../src/lb/addresses.ts";
import { translate } from "../../src/lb/translate.ts";
import { cfg, ep, NODE, node, pod, problems, slice, state, svc } from "./_fixtures.ts";

const PORTS = [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" as const }];

describe("specialRange", () => {
  test.each([
    ["0.0.0.0", "unspecified (0.0.0.0)"],
    ["127.0.0.1", "loopback (127.0.0.0/8)"],
    ["127.255.0.9", "loopback (127.0.0.0/8)"],
    ["169.254.1.1", "link-local (169.254.0.0/16)"],
    ["224.0.0.5", "link-local multicast (224.0.0.0/24)"],
    ["239.1.1.1", "multicast (224.0.0.0/4)"],
    ["255.255.255.255", "broadcast (255.255.255.255)"],
    ["::", "unspecified (::)"],
    ["::1", "loopback (::1)"],
    ["fe80::1", "link-local (fe80::/10)"],
    ["10.96.0.1", undefined],
    ["192.168.1.255", undefined],
  ])("%s → %s", (a, want) => expect(specialRange(a), a).toBe(want));
});

describe("special addresses of services and endpoints", () => {
  test.each([
    [
      "clusterIP 0.0.0.0",
      { clusterIP: "0.0.0.0" },
      "spec.clusterIP | 0.0.0.0 is unspecified (0.0.0.0): not an address the Kubernetes API allocates to a service",
    ],
    [
      "clusterIP 127.0.0.1",
      { clusterIP: "127.0.0.1" },
      "spec.clusterIP | 127.0.0.1 is loopback (127.0.0.0/8): not an address the Kubernetes API allocates to a service",
    ],
    [
      "clusterIP broadcast",
      { clusterIP: "255.255.255.255" },
      "spec.clusterIP | 255.255.255.255 is broadcast (255.255.255.255): not an address the Kubernetes API allocates to a service",
    ],
    [
      "clusterIP multicast",
      { clusterIP: "239.0.0.1" },
      "spec.clusterIP | 239.0.0.1 is multicast (224.0.0.0/4): not an address the Kubernetes API allocates to a service",
    ],
    [
      "externalIP 0.0.0.0",
      { clusterIP: "10.96.0.10", externalIPs: ["0.0.0.0"] },
      "spec.externalIPs[0] | 0.0.0.0 is unspecified (0.0.0.0): the Kubernetes API rejects it",
    ],
    [
      "externalIP loopback",
      { clusterIP: "10.96.0.10", externalIPs: ["1.2.3.4", "127.0.0.1"] },
      "spec.externalIPs[1] | 127.0.0.1 is loopback (127.0.0.0/8): the Kubernetes API rejects it",
    ],
  ])("%s: rejected, naming the object and field", (_, spec, want) => {
    const s = state({ services: [svc("web", { type: "ClusterIP", ports: PORTS, ...spec })] });
    expect(problems(s), "problems").toEqual([`web.yaml | Service default/web | ${want}`]);
  });

  test.each([
    ["0.0.0.0", "unspecified (0.0.0.0): the Kubernetes API rejects it as an endpoint"],
    ["127.0.0.1", "loopback (127.0.0.0/8): the Kubernetes API rejects it as an endpoint"],
  ])("endpoint %s: rejected", (a, want) => {
    const s = state({
      services: [svc("web", { type: "ClusterIP", clusterIP: "10.96.0.10", ports: PORTS })],
      endpointSlices: [slice("web", "web-1", [{ name: "http", port: 8080, protocol: "TCP" }], [ep(a)])],
    });
    expect(problems(s).join("\n"), "problem").toContain(
      `EndpointSlice default/web-1 | endpoints[0].addresses[0] | ${a} is ${want}`,
    );
  });

  test("an external IP equal to this node's address (CVE-2020-8554) or a pod's: warned, programmed", () => {
    const s = state({
      services: [
        svc("web", {
          type: "ClusterIP",
          clusterIP: "10.96.0.10",
          ports: PORTS,
          externalIPs: ["192.168.0.2", "10.244.0.7"],
        }),
      ],
      nodes: [node(NODE, ["192.168.0.2"])],
      pods: [pod("p", "10.244.0.7", [])],
    });
    const m = translate(s, cfg());
    expect(m.warnings, "warnings").toEqual([
      "web.yaml:1: Service default/web: spec.externalIPs[0]: 192.168.0.2 is this node's address: connections to 192.168.0.2 on the service's ports go to the service, not the node (CVE-2020-8554)",
      "web.yaml:1: Service default/web: spec.externalIPs[1]: 10.244.0.7 is also the address of Pod default/p",
    ]);
    expect(m.frontends.map((f) => f.frontend.address).sort(), "both programmed").toEqual([
      "10.244.0.7",
      "10.96.0.10",
      "192.168.0.2",
    ]);
  });
});
