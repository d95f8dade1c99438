/**
 * The tc programs (bpf/tc.bpf.c) run with BPF_PROG_TEST_RUN on crafted frames: every fixture
 * checks the verdict, the one reason counter that moved, and the output frame (all headers and
 * checksums). FIB-dependent fixtures run in a private network namespace.
 */
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { MAP_CODECS } from "../../src/datapath/lbmaps.ts";
import { needs } from "../harness/env.ts";
import { ensureBpffs, REPO_ROOT } from "../harness/netns.ts";
import { buildPacket, fromHex, parsePacket, toHex, verifyChecksums } from "../harness/packet.ts";
import { abi, Lab, REASONS, TC_ACT } from "./_lab.ts";
import {
  type Case,
  type CaseResult,
  executeCase,
  FIB,
  fibCases,
  hostCases,
  inputBytes,
} from "./_tc_cases.ts";

const skip = needs({ root: true, tools: ["clang", "ip", "nsenter"] }, "tc datapath tests");
const BUN = process.execPath;

function buildObjects(): void {
  const r = Bun.spawnSync([BUN, join(REPO_ROOT, "build.ts"), "--bpf-only"], {
    stderr: "pipe",
    stdout: "pipe",
  });
  if (r.exitCode !== 0) throw new Error(`build eBPF objects: ${r.stderr.toString()}${r.stdout.toString()}`);
}

/** Checks one case's results against its table row. */
function assertCase(c: Case, res: CaseResult): void {
  expect(res.steps.length).toBe(c.steps.length);
  c.steps.forEach((s, i) => {
    const r = res.steps[i]!;
    const got = { step: s.what, verdict: r.retval, reasons: r.reasons };
    expect(got).toEqual({ step: s.what, verdict: TC_ACT[s.verdict], reasons: { [`KPR_R_${s.reason}`]: 1 } });
    const out = fromHex(r.hex);
    if (s.output === "unchanged") {
      expect({ step: s.what, out: r.hex }).toEqual({ step: s.what, out: toHex(inputBytes(s.input)) });
    } else if (s.output) {
      expect({ step: s.what, packet: parsePacket(out) }).toEqual({
        step: s.what,
        packet: parsePacket(buildPacket(s.output)),
      });
      expect({ step: s.what, checksums: verifyChecksums(out) }).toEqual({
        step: s.what,
        checksums: { ok: true, errors: [] },
      });
    }
  });
  if ("expectProbe" in c) expect(res.probe).toEqual(c.expectProbe);
}

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
  const ns = `kprc${Math.random().toString(36).slice(2, 8)}`;
  let results: CaseResult[] = [];
  let ifindex = 0;
  const ip = (...args: string[]) => {
    const r = Bun.spawnSync(["ip", "-n", ns, ...args], { stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`ip -n ${ns} ${args.join(" ")}: ${r.stderr.toString().trim()}`);
    return r.stdout.toString();
  };

  beforeAll(() => {
    buildObjects();
    ensureBpffs();
    const add = Bun.spawnSync(["ip", "netns", "add", ns], { stderr: "pipe" });
    if (add.exitCode !== 0) throw new Error(`ip netns add ${ns}: ${add.stderr.toString()}`);
    ip("link", "add", "d0", "address", FIB.nodeMac, "type", "veth", "peer", "name", "d1");
    ip("link", "set", "d0", "mtu", "1400", "up");
    ip("link", "set", "d1", "up");
    ip("addr", "add", `${FIB.nodeAddr}/24`, "dev", "d0");
    ip("neigh", "add", FIB.remoteBe.addr, "lladdr", FIB.remoteBe.mac, "dev", "d0", "nud", "permanent");
    ip("neigh", "add", FIB.gw.addr, "lladdr", FIB.gw.mac, "dev", "d0", "nud", "permanent");
    ip("route", "add", "10.88.0.0/24", "via", FIB.gw.addr, "dev", "d0");
    ip("route", "add", "unreachable", "10.99.0.0/24");
    const sysctl = Bun.spawnSync(
      ["nsenter", `--net=/run/netns/${ns}`, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"],
      { stderr: "pipe" },
    );
    if (sysctl.exitCode !== 0) throw new Error(`sysctl forwarding in ${ns}: ${sysctl.stderr.toString()}`);
    const link = JSON.parse(ip("-j", "link", "show", "d0")) as { ifindex: number }[];
    ifindex = link[0]?.ifindex ?? 0;
    const run = Bun.spawnSync(
      [
        "nsenter",
        `--net=/run/netns/${ns}`,
        BUN,
        join(import.meta.dir, "_tc_fib_runner.ts"),
        JSON.stringify({ ifindex }),
      ],
      { stderr: "pipe", stdout: "pipe" },
    );
    if (run.exitCode !== 0) throw new Error(`fib runner: ${run.stderr.toString()}`);
    results = JSON.parse(run.stdout.toString()) as CaseResult[];
  });
  afterAll(() => {
    Bun.spawnSync(["ip", "netns", "del", ns]);
  });

  it.each(fibCases({ ifindex: 1 }).map((c, i) => [c.name, i] as const))("%s", (_name, i) => {
    const c = fibCases({ ifindex })[i]!;
    const res = results[i];
    expect(res).toBeDefined();
    assertCase(c, res!);
  });
});
