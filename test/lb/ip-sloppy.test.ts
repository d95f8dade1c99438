/** Kubernetes' legacy address parser (k8s.io/utils/net ParseIPSloppy / ParseCIDRSloppy), as kube-proxy uses it. */
import { describe, expect, test } from "bun:test";
import { parseCidr, parseCidrSloppy, parseIp, parseIpSloppy } from "../../src/lb/ip.ts";

describe("leading zeros are decimal, as netutils.ParseIPSloppy / ParseCIDRSloppy read them", () => {
  test.each<[string, string | undefined, boolean]>([
    // [input, canonical text, only the legacy parser takes it]
    ["172.30.0.041", "172.30.0.41", true],
    ["1.2.3.004", "1.2.3.4", true],
    ["192.168.099.022", "192.168.99.22", true],
    ["10.180.00.001", "10.180.0.1", true],
    ["010.0.0.1", "10.0.0.1", true],
    ["0000000010.0.0.1", "10.0.0.1", true],
    ["10.0.0.1", "10.0.0.1", false],
    ["::ffff:10.0.0.01", "::ffff:a00:1", true],
    // the forked Go 1.16 parser's xtoi takes any number of hex digits worth at most ffff
    ["2001:db8::00001", "2001:db8::1", true],
    ["256.0.0.1", undefined, false],
    ["10.0.0.0256", undefined, false],
    ["10.0.0", undefined, false],
    ["1.2.3.4 ", undefined, false],
    ["2001:db8::10000", undefined, false],
  ])("parseIpSloppy %p", (s, text, sloppy) => {
    const ip = parseIpSloppy(s);
    expect({ text: ip?.text, sloppy: ip?.sloppy === true }).toEqual({ text, sloppy });
  });

  test.each<[string, string | undefined, boolean]>([
    ["203.0.113.000/025", "203.0.113.0/25", true],
    ["10.0.0.0/08", "10.0.0.0/8", true],
    // kube-proxy trims the whitespace API validation lets through (serviceport.go)
    [" 203.0.113.0/25", "203.0.113.0/25", false],
    ["203.0.113.0/25", "203.0.113.0/25", false],
    ["10.0.0.0/033", undefined, false],
  ])("parseCidrSloppy %p", (s, text, sloppy) => {
    const c = parseCidrSloppy(s);
    expect({ text: c?.text, sloppy: c?.sloppy === true }).toEqual({ text, sloppy });
  });

  test.each<string>([
    "172.30.0.041",
    "10.0.0.0/08",
    "203.0.113.000/025",
  ])("the strict parsers still refuse %p", (s) => {
    expect(s.includes("/") ? parseCidr(s) : parseIp(s)).toBeUndefined();
  });
});
