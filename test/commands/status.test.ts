import { describe, expect, it } from "bun:test";
import { type Config, defaultConfig } from "../../src/config/config.ts";
import { CFG_F } from "../../src/datapath/lbmaps.ts";
import { formatStatus, type NodeStatus, statusReport } from "../../src/datapath/nodestatus.ts";

const SOCK_HOOKS = ["connect4", "sendmsg4", "recvmsg4", "getpeername4"];

function node(over: Partial<NodeStatus> = {}, flags = CFG_F.SOCKET_LB | CFG_F.NODEPORT): NodeStatus {
  return {
    bpfRoot: "/sys/fs/bpf/kpr",
    cgroupRoot: "/run/kpr/cgroupv2",
    programmed: true,
    config: {
      flags,
      snat_port_min: 0,
      snat_port_max: 0,
      nodeport_min: 30000,
      nodeport_max: 32767,
      lb_mode: 0,
      host_netns_cookie: 0n,
      datapath_digest: 0n,
    },
    cgroupHooks: SOCK_HOOKS,
    devices: [
      {
        name: "veth0",
        address: "192.168.50.2",
        present: true,
        hooks: [
          { direction: "ingress", mode: "tcx" },
          { direction: "egress", mode: "tcx" },
        ],
      },
    ],
    counts: { frontends: 6, services: 3, backends: 4 },
    ...over,
  };
}

function cfg(over: (c: Config) => void = () => {}): Config {
  const c = defaultConfig();
  c.devices = ["veth0"];
  over(c);
  return c;
}

describe("kpr status", () => {
  it("prints Cilium's KubeProxyReplacement Details block for a fully programmed node", () => {
    const out = formatStatus(statusReport(cfg(), node()), true);
    expect(out.split("\n").slice(0, 25).join("\n")).toBe(
      [
        "KubeProxyReplacement:    True   [veth0 192.168.50.2 (Direct Routing)]",
        "KubeProxyReplacement Details:",
        "  Status:                True",
        "  Socket LB:             Enabled",
        "  Socket LB Tracing:     Disabled",
        "  Socket LB Coverage:    Full",
        "  Devices:               veth0   192.168.50.2 (Direct Routing)",
        "  Mode:                  SNAT",
        "  Backend Selection:     Random",
        "  Session Affinity:      Enabled",
        "  Graceful Termination:  Enabled",
        "  NAT46/64 Support:      Disabled",
        "  XDP Acceleration:      Disabled",
        "  Services:",
        "  - ClusterIP:      Enabled",
        "  - NodePort:       Enabled (Range: 30000-32767)",
        "  - LoadBalancer:   Enabled",
        "  - externalIPs:    Enabled",
        "  - HostPort:       Enabled",
        "  Annotations:",
        "  - service.cilium.io/node",
        "  - service.cilium.io/node-selector",
        "  - service.cilium.io/src-ranges-policy",
        "  - service.cilium.io/type",
        "  Programmed:            6 frontends (3 services), 4 backends",
      ].join("\n"),
    );
    expect(out).toContain("  - veth0: tcx ingress, tcx egress\n");
    expect(formatStatus(statusReport(cfg(), node()), false)).toBe(
      "KubeProxyReplacement:    True   [veth0 192.168.50.2 (Direct Routing)]\n",
    );
  });

  type Case = [string, Config, NodeStatus, Record<string, unknown>];
  const cases: Case[] = [
    [
      "nothing pinned",
      cfg(),
      node(
        {
          programmed: false,
          cgroupHooks: [],
          devices: [],
          counts: { frontends: 0, services: 0, backends: 0 },
        },
        0,
      ),
      { kubeProxyReplacement: "Not programmed", socketLB: "Disabled", services: { clusterIP: "Disabled" } },
    ],
    [
      "config entry has socket LB but a hook link is missing",
      cfg(),
      node({ cgroupHooks: ["connect4", "sendmsg4", "recvmsg4"] }),
      { socketLB: "Disabled", services: { clusterIP: "Disabled", nodePort: "Enabled (Range: 30000-32767)" } },
    ],
    [
      "hooks attached but the config entry turns socket LB off",
      cfg(),
      node({}, CFG_F.NODEPORT),
      { socketLB: "Disabled", kubeProxyReplacement: "True" },
    ],
    [
      "host namespace only",
      cfg(),
      node({}, CFG_F.SOCKET_LB | CFG_F.HOST_NS_ONLY | CFG_F.NODEPORT),
      { socketLBCoverage: "Hostns-only" },
    ],
    [
      "NodePort off in the config entry",
      cfg(),
      node({}, CFG_F.SOCKET_LB),
      { services: { nodePort: "Disabled", hostPort: "Disabled", clusterIP: "Enabled" } },
    ],
    [
      "tc detached from the device: north-south off, socket LB still on",
      cfg(),
      node({
        devices: [
          {
            name: "veth0",
            address: "192.168.50.2",
            present: true,
            hooks: [{ direction: "ingress" }, { direction: "egress" }],
          },
        ],
      }),
      { kubeProxyReplacement: "True", socketLB: "Enabled", services: { loadBalancer: "Enabled" } },
    ],
    [
      "kubeProxyReplacement=false in the config",
      cfg((c) => (c.kubeProxyReplacement = false)),
      node(),
      { kubeProxyReplacement: "False" },
    ],
    [
      "maglev with its table size",
      cfg((c) => {
        c.loadBalancer.algorithm = "maglev";
        c.maglev.tableSize = 1021;
      }),
      node(),
      { backendSelection: "Maglev (Table Size: 1021)" },
    ],
    [
      "dsr configured but the datapath only does SNAT",
      cfg((c) => (c.loadBalancer.mode = "dsr")),
      node({ config: { ...node().config!, lb_mode: 1 } }),
      { mode: "SNAT (loadBalancer.mode=dsr is not implemented by this datapath)" },
    ],
  ];
  it.each(cases)("%s", (_name, c, st, want) => {
    expect(statusReport(c, st)).toMatchObject(want);
  });

  it("non-verbose output is the first line only, also when not programmed", () => {
    const st = node({ programmed: false, cgroupHooks: [], devices: [] }, 0);
    expect(formatStatus(statusReport(cfg(), st), false)).toBe("KubeProxyReplacement:    Not programmed\n");
  });
});
