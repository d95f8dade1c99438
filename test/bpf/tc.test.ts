/**
 * The tc programs (bpf/tc.bpf.c) run with BPF_PROG_TEST_RUN on crafted frames: every fixture
 * checks the verdict, the one reason counter that moved, and the output frame (all headers and
 * checksums). FIB-dependent fixtures run in a private network namespace.
 */
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { rmSync } from "node:fs";
import { MAP_CODECS } from "../../src/datapath/lbmaps.ts";
import { needs } from "../harness/env.ts";
import { ensureBpffs } from "../harness/netns.ts";
import { buildPacket, parsePacket } from "../harness/packet.ts";
import { assertCase, buildObjects, checkPortUnreachable, FibNetns } from "./_assert_case.ts";
import { abi, Lab, REASONS, TC_ACT } from "./_lab.ts";
import { type CaseResult, executeCase, fibCases, hostCases } from "./_tc_cases.ts";

const skip = needs({ root: true, tools: ["clang", "ip", "nsenter"] }, "tc datapath tests");

describe.skipIf(!!skip)("tc programs", () => {
  const pinDir = `/sys/fs/bpf/kpr-test-${Math.random().toString(36).slice(2, 10)}`;
  let lab: Lab;

  beforeAll(() => {
    buildObjects();
    ensureBpffs();
    lab = Lab.open("tc", pinDir);
  });
  afterAll(() => {
    lab?.close();
    rmSync(pinDir, { recursive: true, force: true });
  });

  it("ABI codecs match the object's BTF; reasons fit kpr_reasons", () => {
    expect(lab.checkBtf().sort()).toEqual(Object.keys(MAP_CODECS).sort());
    expect(REASONS.length).toBeLessThanOrEqual(abi("KPR_REASON_MAX"));
    expect(REASONS[0]).toBe("KPR_R_PASS");
    expect(lab.obj.map("kpr_reasons").maxEntries).toBe(abi("KPR_REASON_MAX"));
  });

  it("pins every map under its own bpffs dir", () => {
    const pinned = Bun.spawnSync(["ls", pinDir]).stdout.toString().trim().split("\n").sort();
    expect(pinned).toEqual(lab.obj.maps().sort());
  });

  it("the sock object declares the same maps and reuses the pinned ones", () => {
    using sock = Lab.open("sock", pinDir);
    expect(sock.obj.maps().sort()).toEqual(lab.obj.maps().sort());
    lab.reset();
    lab.setDevice(5, "192.0.2.5");
    const key = new Uint8Array([5, 0, 0, 0]);
    expect(sock.obj.map("kpr_dev4").lookup(key)).toEqual(lab.obj.map("kpr_dev4").lookup(key));
    expect(sock.obj.map("kpr_dev4").lookup(key)).toBeDefined();
  });

  it.each(hostCases().map((c) => [c.name, c] as const))("%s", (_name, c) => {
    assertCase(c, executeCase(lab, c, 1));
  });

  it("ICMP port unreachable: checksums recomputed, offending header + 8 bytes quoted, redirected", () => {
    expect({ verdict: checkPortUnreachable(lab, "kpr_tc_ingress") }).toEqual({ verdict: TC_ACT.REDIRECT });
  });

  it.each([
    ["active backends only (active_count 1)", 1, ["10.244.1.5"]],
    ["terminating fallback when none is active (active_count 0)", 0, ["10.244.1.6", "10.244.1.7"]],
  ] as const)("selection: %s", (_what, activeCount, want) => {
    lab.reset();
    const be = (id: number, last: number, terminating: boolean) => ({
      id,
      address: `10.244.1.${last}`,
      port: 8080,
      local: true,
      terminating,
    });
    lab.addService({
      address: "192.168.77.1",
      port: 30080,
      revNatId: 7,
      flags: ["NODEPORT"],
      activeCount,
      // slot 1 active + slot 2 terminating, or two terminating slots
      backends: activeCount === 1 ? [be(11, 5, false), be(12, 6, true)] : [be(12, 6, true), be(13, 7, true)],
    });
    expect([...backendsChosen(lab, "203.0.113.7")].sort()).toEqual([...want]);
  });

  it("selection: random spreads flows; ClientIP affinity pins a client to one backend", () => {
    const backends = [1, 2, 3, 4].map((i) => ({
      id: 30 + i,
      address: `10.244.2.${i}`,
      port: 80,
      local: true,
    }));
    const svc = { address: "192.168.77.1", port: 30080, revNatId: 7, backends };
    lab.reset();
    lab.addService({ ...svc, flags: ["NODEPORT"] });
    expect({ random: backendsChosen(lab, "203.0.113.7").size }).toEqual({ random: 4 });
    lab.reset();
    lab.addService({ ...svc, flags: ["NODEPORT", "AFFINITY"], affinityTimeout: 600 });
    expect({
      affinity: [backendsChosen(lab, "203.0.113.7").size, backendsChosen(lab, "198.51.100.9").size],
    }).toEqual({ affinity: [1, 1] });
    expect(lab.obj.map("kpr_lb4_aff").nextKey()).toBeDefined();
  });
});

/** Destinations of 64 new flows (SYNs from distinct ports) from client. */
function backendsChosen(lab: Lab, client: string): Set<string> {
  const seen = new Set<string>();
  for (let sport = 42000; sport < 42064; sport++) {
    const r = lab.run("kpr_tc_ingress", buildPacket(tcpSyn(client, sport)));
    expect(r.retval).toBe(TC_ACT.OK);
    seen.add(parsePacket(r.data).ip4?.dst ?? "?");
  }
  return seen;
}

function tcpSyn(src: string, sport: number) {
  return {
    eth: { src: "02:00:00:00:00:aa", dst: "02:00:00:00:00:01" },
    ip4: { src, dst: "192.168.77.1", ttl: 64, id: 1 },
    tcp: { sport, dport: 30080, seq: 1, flags: "S" },
  };
}

describe.skipIf(!!skip)("tc programs with a FIB (network namespace)", () => {
  const fib = new FibNetns();
  let results: CaseResult[] = [];

  beforeAll(() => {
    buildObjects();
    ensureBpffs();
    results = fib.run("tc");
  });
  afterAll(() => fib.close());

  it.each(fibCases({ ifindex: 1 }).map((c, i) => [c.name, i] as const))("%s", (_name, i) => {
    const c = fibCases({ ifindex: fib.ifindex })[i]!;
    const res = results[i];
    expect(res).toBeDefined();
    assertCase(c, res!);
  });
});
