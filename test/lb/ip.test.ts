import { describe, expect, test } from "bun:test";
import { compareAddr, parseCidr, parseIp } from "../../src/lb/ip.ts";
import { matchesSelector, parseSelector } from "../../src/lb/selector.ts";

describe("parseIp", () => {
  test.each<[string, string | undefined]>([
    ["10.0.0.1", "10.0.0.1"],
    ["0.0.0.0", "0.0.0.0"],
    ["255.255.255.255", "255.255.255.255"],
    ["256.0.0.1", undefined],
    ["10.0.0", undefined],
    ["010.0.0.1", undefined],
    ["1.2.3.4 ", undefined],
    ["::", "::"],
    ["::1", "::1"],
    ["FD00:0:0:0:0:0:0:1", "fd00::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8::0:1", "2001:db8::1"],
    ["1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"],
    ["::ffff:10.0.0.1", "::ffff:a00:1"],
    ["1:2:3:4:5:6:7:8:9", undefined],
    ["1::2::3", undefined],
    ["1:2:3:4:5:6:7::8", undefined],
    ["12345::", undefined],
    ["g::1", undefined],
    ["", undefined],
  ])("%p", (s, want) => {
    expect(parseIp(s)?.text).toBe(want as string);
  });

  test.each<[string, string | undefined]>([
    ["10.1.2.3/8", "10.0.0.0/8"],
    ["0.0.0.0/0", "0.0.0.0/0"],
    ["10.0.0.0/33", undefined],
    ["fd00::1/64", "fd00::/64"],
    ["10.0.0.0", undefined],
  ])("parseCidr %p", (s, want) => {
    expect(parseCidr(s)?.text).toBe(want as string);
  });

  test("compareAddr orders IPv4 before IPv6, numerically", () => {
    expect(["fd00::2", "10.0.0.10", "10.0.0.9", "::1", "9.0.0.0"].sort(compareAddr)).toEqual([
      "9.0.0.0",
      "10.0.0.9",
      "10.0.0.10",
      "::1",
      "fd00::2",
    ]);
  });
});

describe("label selectors", () => {
  const labels = { role: "edge", zone: "a", "service.cilium.io/node": "beefy" };
  test.each<[string, boolean | string]>([
    ["", true],
    ["role=edge", true],
    ["role==edge", true],
    ["role!=edge", false],
    ["role in (edge, core)", true],
    ["role notin (edge)", false],
    ["gpu", false],
    ["!gpu", true],
    ["role=edge,zone=b", false],
    ["service.cilium.io/node in (beefy,slow),!gpu", true],
    ["missing!=x", true],
    ["a in (b", "unbalanced parentheses"],
    ["role=edge,", 'cannot parse requirement ""'],
    ["bad key!=x", 'cannot parse requirement "bad key!=x"'],
  ])("%p", (sel, want) => {
    const r = parseSelector(sel);
    expect(typeof r === "string" ? r : matchesSelector(r, labels)).toBe(want);
  });
});
