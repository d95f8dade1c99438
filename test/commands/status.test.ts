import { describe, expect, it } from "bun:test";
import { type Config, defaultConfig } from "../../src/config/config.ts";
import { CFG_F } from "../../src/datapath/lbmaps.ts";
import { formatStatus, type NodeStatus, statusReport } from "../../src/datapath/nodestatus.ts";
import { settingsOf } from "../../src/datapath/settings.ts";

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
    settings: settingsOf(cfg(), "/etc/kpr/config.yaml"),
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
      {
        kubeProxyReplacement: "not-programmed",
        programmed: false,
        socketLB: { enabled: false },
        services: { clusterIP: false },
      },
    ],
    [
      "config entry has socket LB but a hook link is missing",
      cfg(),
      node({ cgroupHooks: ["connect4", "sendmsg4", "recvmsg4"] }),
      {
        socketLB: { enabled: false },
        services: { clusterIP: false, nodePort: true, nodePortRange: [30000, 32767] },
      },
    ],
    [
      "hooks attached but the config entry turns socket LB off",
      cfg(),
      node({}, CFG_F.NODEPORT),
      { socketLB: { enabled: false }, kubeProxyReplacement: "true" },
    ],
    [
      "host namespace only",
      cfg(),
      node({}, CFG_F.SOCKET_LB | CFG_F.HOST_NS_ONLY | CFG_F.NODEPORT),
      { socketLB: { enabled: true, hostNamespaceOnly: true } },
    ],
    [
      "NodePort off in the config entry",
      cfg(),
      node({}, CFG_F.SOCKET_LB),
      { services: { nodePort: false, hostPort: false, clusterIP: true } },
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
      { kubeProxyReplacement: "true", socketLB: { enabled: true }, services: { loadBalancer: true } },
    ],
    [
      "kubeProxyReplacement=false applied",
      cfg(),
      node({
        settings: settingsOf(
          cfg((c) => (c.kubeProxyReplacement = false)),
          "c.yaml",
        ),
      }),
      { kubeProxyReplacement: "false" },
    ],
    [
      "kubeProxyReplacement=false in the config given now, true applied: the kernel's truth plus drift",
      cfg((c) => (c.kubeProxyReplacement = false)),
      node(),
      {
        kubeProxyReplacement: "true",
        drift: [{ key: "kubeProxyReplacement", configured: false, programmed: true }],
      },
    ],
    [
      "maglev applied with its table size",
      cfg((c) => (c.loadBalancer.algorithm = "maglev")),
      node({
        settings: settingsOf(
          cfg((c) => {
            c.loadBalancer.algorithm = "maglev";
            c.maglev.tableSize = 1021;
          }),
          "c.yaml",
        ),
      }),
      {
        backendSelection: "maglev",
        maglevTableSize: 1021,
        drift: [{ key: "maglevTableSize", configured: 16381, programmed: 1021 }],
      },
    ],
    [
      "dsr applied but the datapath only does SNAT",
      cfg((c) => (c.loadBalancer.mode = "dsr")),
      node({
        config: { ...node().config!, lb_mode: 1 },
        settings: settingsOf(
          cfg((c) => (c.loadBalancer.mode = "dsr")),
          "c.yaml",
        ),
      }),
      {
        mode: "snat",
        notes: [
          "loadBalancer.mode=dsr is not implemented by this datapath: remote backends are reached with SNAT",
        ],
      },
    ],
  ];
  it.each(cases)("%s", (_name, c, st, want) => {
    expect(statusReport(c, st)).toMatchObject(want);
  });

  it("not programmed: names the bpf root and the config it read", () => {
    const st = node({ programmed: false, cgroupHooks: [], devices: [], configFile: "/tmp/wrong.yaml" }, 0);
    expect(formatStatus(statusReport(cfg(), st), false)).toBe(
      "KubeProxyReplacement:    Not programmed\n  Note: no kpr state under /sys/fs/bpf/kpr (bpf.root from /tmp/wrong.yaml)\n",
    );
  });

  it("reports the recorded settings, not the config given now, and flags the difference", () => {
    const applied = cfg((c) => {
      c.socketLB.hostNamespaceOnly = true;
      c.nodePort.range = [31000, 31999];
    });
    const now = cfg();
    const st = node({ settings: settingsOf(applied, "/etc/kpr/a.yaml"), configFile: "/etc/kpr/b.yaml" });
    const r = statusReport(now, st);
    expect(r.appliedConfigFile, "applied config recorded").toBe("/etc/kpr/a.yaml");
    expect(r.drift, "drift between b.yaml and what a.yaml programmed").toEqual([
      { key: "socketLB.hostNamespaceOnly", configured: false, programmed: true },
      { key: "nodePort.range", configured: [30000, 32767], programmed: [31000, 31999] },
    ]);
    expect(formatStatus(r, false)).toContain(
      "Note: config differs from what is programmed: socketLB.hostNamespaceOnly is false in /etc/kpr/b.yaml, programmed true",
    );
    const applyDsr = cfg((c) => (c.loadBalancer.mode = "dsr"));
    const r2 = statusReport(cfg(), node({ settings: settingsOf(applyDsr, "a.yaml") }));
    expect(r2.notes, "note from the applied settings, not the config given now").toContain(
      "loadBalancer.mode=dsr is not implemented by this datapath: remote backends are reached with SNAT",
    );
  });

  it("-o json carries booleans, enums and numbers; prose only in notes", () => {
    const r = statusReport(cfg(), node());
    const walk = (v: unknown, path: string): string[] => {
      if (path === ".notes" || path === ".annotations" || path.includes(".hooks") || path.endsWith("File"))
        return [];
      if (typeof v === "string")
        return /^[a-z0-9.:/-]*$/i.test(v) && !v.includes(" ") ? [] : [`${path}: ${JSON.stringify(v)}`];
      if (Array.isArray(v)) return v.flatMap((x, i) => walk(x, `${path}[${i}]`));
      if (v && typeof v === "object") return Object.entries(v).flatMap(([k, x]) => walk(x, `${path}.${k}`));
      return [];
    };
    expect(walk(r, ""), "no display strings outside notes").toEqual([]);
    expect(r.socketLB.enabled).toBe(true);
    expect(r.services.nodePortRange).toEqual([30000, 32767]);
  });
});
