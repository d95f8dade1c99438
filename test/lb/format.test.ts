import { describe, expect, it } from "bun:test";
import { diffEntries, formatPlanDiff, formatServiceTable, toServiceEntryJson } from "../../src/lb/format.ts";
import type { Frontend, ServiceEntryJson } from "../../src/lb/model.ts";

const be = (address: string, port: number, state: "active" | "terminating" = "active") => ({
  address,
  port,
  protocol: "TCP" as const,
  state,
});
const entry = (
  id: number,
  address: string,
  port: number,
  backends: ReturnType<typeof be>[],
  more = {},
): ServiceEntryJson => ({
  id,
  frontend: { address, port, protocol: "TCP" },
  type: "NodePort",
  service: "default/my-nginx",
  backends,
  scope: "Cluster",
  ...more,
});

describe("toServiceEntryJson", () => {
  it("keeps DESIGN's shape and adds only the flags that are set", () => {
    const f: Frontend = {
      id: 4,
      frontend: { address: "203.0.113.1", port: 80, protocol: "TCP" },
      type: "LoadBalancer",
      service: "default/web",
      portName: "http",
      backends: [
        {
          id: 9,
          address: "10.0.0.1",
          port: 8080,
          protocol: "TCP",
          state: "active",
          local: true,
          nodeName: "n",
        },
      ],
      scope: "Local",
      affinityTimeoutSeconds: 60,
      sourceRanges: { cidrs: ["10.0.0.0/8"], policy: "deny" },
      healthCheckNodePort: 31000,
    };
    expect(toServiceEntryJson(f)).toEqual({
      id: 4,
      frontend: { address: "203.0.113.1", port: 80, protocol: "TCP" },
      type: "LoadBalancer",
      service: "default/web",
      backends: [{ address: "10.0.0.1", port: 8080, protocol: "TCP", state: "active" }],
      scope: "Local",
      affinityTimeoutSeconds: 60,
      sourceRanges: { cidrs: ["10.0.0.0/8"], policy: "deny" },
      healthCheckNodePort: 31000,
    });
    expect(
      toServiceEntryJson({ ...f, backends: [], reject: true, affinityTimeoutSeconds: undefined }),
    ).toEqual({
      id: 4,
      frontend: { address: "203.0.113.1", port: 80, protocol: "TCP" },
      type: "LoadBalancer",
      service: "default/web",
      backends: [],
      scope: "Local",
      sourceRanges: { cidrs: ["10.0.0.0/8"], policy: "deny" },
      healthCheckNodePort: 31000,
      reject: true,
    });
  });
});

describe("formatServiceTable", () => {
  it("uses cilium service list's layout, sorted by id, IPv6 in brackets, further backends below", () => {
    const out = formatServiceTable([
      entry(52, "0.0.0.0", 35283, [be("10.3.0.150", 80)]),
      {
        ...entry(7, "fd00::1", 80, [be("fd00::10", 80), be("fd00::11", 80, "terminating")]),
        type: "ClusterIP",
      },
      entry(60, "10.96.0.9", 80, []),
    ]);
    expect(out).toBe(
      [
        "ID   Frontend            Service Type   Backend",
        "7    [fd00::1]:80/TCP    ClusterIP      1 => [fd00::10]:80/TCP (active)",
        "                                        2 => [fd00::11]:80/TCP (terminating)",
        "52   0.0.0.0:35283/TCP   NodePort       1 => 10.3.0.150:80/TCP (active)",
        "60   10.96.0.9:80/TCP    NodePort",
        "",
      ].join("\n"),
    );
  });

  it("lists a two-scope frontend's in-cluster backends after its own, marked internal", () => {
    const out = formatServiceTable([
      {
        ...entry(5, "192.168.1.10", 30080, []),
        internalBackends: [be("10.244.2.10", 80)],
        dropNoLocal: true,
      },
    ]);
    expect(out).toBe(
      [
        "ID   Frontend                 Service Type   Backend",
        "5    192.168.1.10:30080/TCP   NodePort       internal 1 => 10.244.2.10:80/TCP (active)",
        "",
      ].join("\n"),
    );
  });

  it("prints only the header for no entries", () => {
    expect(formatServiceTable([])).toBe("ID   Frontend   Service Type   Backend\n");
  });
});

describe("diffEntries / formatPlanDiff", () => {
  const before = [
    entry(1, "10.96.0.1", 80, [be("10.0.0.1", 80), be("10.0.0.2", 80)]),
    entry(2, "10.96.0.2", 80, [be("10.0.0.3", 80)]),
    entry(3, "10.96.0.3", 80, [be("10.0.0.4", 80)]),
  ];
  const after = [
    entry(1, "10.96.0.1", 80, [be("10.0.0.2", 80, "terminating"), be("10.0.0.5", 80)]),
    entry(3, "10.96.0.3", 80, [be("10.0.0.4", 80)]),
    entry(4, "10.96.0.4", 80, [], { reject: true, type: "ClusterIP" }),
    entry(9, "10.96.0.2", 80, [be("10.0.0.3", 80)], { scope: "Local" }),
  ];

  it("matches entries by frontend and lists field and backend changes", () => {
    expect(diffEntries(before, after)).toEqual({
      added: [after[2]!],
      removed: [],
      changed: [
        {
          key: "10.96.0.1:80/TCP",
          before: before[0]!,
          after: after[0]!,
          fields: [],
          backendsAdded: [be("10.0.0.5", 80)],
          backendsRemoved: [be("10.0.0.1", 80)],
          backendStateChanged: [
            { backend: be("10.0.0.2", 80, "terminating"), from: "active", to: "terminating" },
          ],
        },
        {
          key: "10.96.0.2:80/TCP",
          before: before[1]!,
          after: after[3]!,
          fields: ["id", "scope"],
          backendsAdded: [],
          backendsRemoved: [],
          backendStateChanged: [],
        },
      ],
      unchanged: 1,
    });
    expect(diffEntries(after, before).removed).toEqual([after[2]!]);
  });

  it("prints a readable plan", () => {
    expect(formatPlanDiff(before, after)).toBe(
      [
        "+ 4 10.96.0.4:80/TCP ClusterIP default/my-nginx (no backends: reject)",
        "~ 1 10.96.0.1:80/TCP NodePort default/my-nginx (2 backends)",
        "    + 10.0.0.5:80/TCP (active)",
        "    - 10.0.0.1:80/TCP (active)",
        "    ~ 10.0.0.2:80/TCP (active -> terminating)",
        "~ 9 10.96.0.2:80/TCP NodePort default/my-nginx (1 backend)",
        "    ~ id: 2 -> 9",
        '    ~ scope: "Cluster" -> "Local"',
        "Plan: 1 to add, 2 to change, 0 to remove, 1 unchanged.",
        "",
      ].join("\n"),
    );
    expect(formatPlanDiff(after, [])).toContain(
      "- 4 10.96.0.4:80/TCP ClusterIP default/my-nginx (no backends: reject)",
    );
  });
});
