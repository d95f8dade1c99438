/** markNodeSources: the node's route-picked source against each guarded frontend's list. */
import { describe, expect, test } from "bun:test";
import { markNodeSources } from "../../src/agent/nodesource.ts";
import type { Frontend } from "../../src/lb/model.ts";

const lb = (address: string, cidrs: string[], shared?: Frontend["sourceRanges"]): Frontend => ({
  id: 1,
  frontend: { address, port: 80, protocol: "TCP" },
  type: "LoadBalancer",
  service: "ns/web",
  portName: "",
  backends: [],
  scope: "Cluster",
  sourceRanges: shared ?? { cidrs, policy: "allow" },
});

describe("markNodeSources", () => {
  test("marks frontends whose route source is in the list, per frontend even when they share one list", () => {
    const shared = { cidrs: ["192.168.50.0/24", "10.0.0.0/8"], policy: "allow" as const };
    const fs = [
      lb("203.0.113.1", [], shared),
      lb("203.0.113.2", [], shared),
      lb("203.0.113.3", ["172.16.0.0/12"]),
      lb("fd00::1", ["fd00::/8"]),
      lb("203.0.113.4", ["0.0.0.0/0"]),
    ];
    const asked: string[] = [];
    const routes: Record<string, string | undefined> = {
      "203.0.113.1": "192.168.50.2",
      "203.0.113.2": "172.31.0.9",
      "203.0.113.3": undefined, // no route
      "203.0.113.4": "192.168.50.2",
    };
    markNodeSources(fs, (a) => {
      asked.push(a);
      return routes[a];
    });
    // the /0 list matches every source: no mark (none is written for it either)
    expect(fs.map((f) => f.sourceRanges?.nodeSourceInList ?? false)).toEqual([
      true,
      false,
      false,
      false,
      false,
    ]);
    expect(shared, "the shared list itself is left alone").toEqual({
      cidrs: ["192.168.50.0/24", "10.0.0.0/8"],
      policy: "allow",
    });
    expect(asked, "one lookup per IPv4 address").toEqual([
      "203.0.113.1",
      "203.0.113.2",
      "203.0.113.3",
      "203.0.113.4",
    ]);
    // a later pass clears a mark that no longer holds
    markNodeSources(fs, () => "10.9.9.9");
    expect(fs.map((f) => f.sourceRanges?.nodeSourceInList ?? false)).toEqual([
      true,
      true,
      false,
      false,
      false,
    ]);
    markNodeSources(fs, () => undefined);
    expect(fs.map((f) => f.sourceRanges?.nodeSourceInList ?? false)).toEqual([
      false,
      false,
      false,
      false,
      false,
    ]);
  });
});
