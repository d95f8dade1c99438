/**
 * Shared by the tc and XDP fixture tests: builds the eBPF objects and checks a case's results
 * against its table row (verdict, the one reason counter that moved, output frame with
 * checksums).
 */
import { expect } from "bun:test";
import { join } from "node:path";
import { REPO_ROOT } from "../harness/netns.ts";
import {
  buildPacket,
  fromHex,
  internetChecksum,
  parsePacket,
  toHex,
  verifyChecksums,
} from "../harness/packet.ts";
import { type Lab, VERDICT } from "./_lab.ts";
import { type Case, type CaseResult, FIB, inputBytes, udp } from "./_tc_cases.ts";

/** Compiles bpf/*.bpf.c into .build/bpf (build.ts --bpf-only). */
export function buildObjects(): void {
  const r = Bun.spawnSync([process.execPath, join(REPO_ROOT, "build.ts"), "--bpf-only"], {
    stderr: "pipe",
    stdout: "pipe",
  });
  if (r.exitCode !== 0) throw new Error(`build eBPF objects: ${r.stderr.toString()}${r.stdout.toString()}`);
}

/** Checks one case's results against its table row. */
export function assertCase(c: Case, res: CaseResult): void {
  expect(res.steps.length).toBe(c.steps.length);
  c.steps.forEach((s, i) => {
    const r = res.steps[i]!;
    const got = { step: s.what, verdict: r.retval, reasons: r.reasons };
    expect(got).toEqual({ step: s.what, verdict: VERDICT[s.verdict], reasons: { [`KPR_R_${s.reason}`]: 1 } });
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

/**
 * The network namespace the FIB fixture cases expect (see FIB in _tc_cases.ts): veth d0 (MTU
 * 1400) with the node's address, neighbours for the remote backend and the gateway, clients
 * behind the gateway, an unreachable prefix, forwarding on. bpf_fib_lookup in BPF_PROG_TEST_RUN
 * uses the caller's namespace, so the cases run in a child process entered into it.
 */
export class FibNetns {
  readonly ns = `kprc${Math.random().toString(36).slice(2, 8)}`;
  ifindex = 0;
  private made = false;

  private ip(...args: string[]): string {
    const r = Bun.spawnSync(["ip", "-n", this.ns, ...args], { stderr: "pipe" });
    if (r.exitCode !== 0)
      throw new Error(`ip -n ${this.ns} ${args.join(" ")}: ${r.stderr.toString().trim()}`);
    return r.stdout.toString();
  }

  private setup(): void {
    if (this.made) return;
    const add = Bun.spawnSync(["ip", "netns", "add", this.ns], { stderr: "pipe" });
    if (add.exitCode !== 0) throw new Error(`ip netns add ${this.ns}: ${add.stderr.toString()}`);
    this.made = true;
    this.ip("link", "add", "d0", "address", FIB.nodeMac, "type", "veth", "peer", "name", "d1");
    this.ip("link", "set", "d0", "mtu", "1400", "up");
    this.ip("link", "set", "d1", "up");
    this.ip("addr", "add", `${FIB.nodeAddr}/24`, "dev", "d0");
    this.ip("neigh", "add", FIB.remoteBe.addr, "lladdr", FIB.remoteBe.mac, "dev", "d0", "nud", "permanent");
    this.ip("neigh", "add", FIB.gw.addr, "lladdr", FIB.gw.mac, "dev", "d0", "nud", "permanent");
    this.ip("route", "add", "10.88.0.0/24", "via", FIB.gw.addr, "dev", "d0");
    this.ip("route", "add", "unreachable", "10.99.0.0/24");
    const sysctl = Bun.spawnSync(
      ["nsenter", `--net=/run/netns/${this.ns}`, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"],
      { stderr: "pipe" },
    );
    if (sysctl.exitCode !== 0)
      throw new Error(`sysctl forwarding in ${this.ns}: ${sysctl.stderr.toString()}`);
    const link = JSON.parse(this.ip("-j", "link", "show", "d0")) as { ifindex: number }[];
    this.ifindex = link[0]?.ifindex ?? 0;
  }

  /** Runs the FIB cases of `which` (tc, or the XDP mirror of them) in the namespace. */
  run(which: "tc" | "xdp"): CaseResult[] {
    this.setup();
    const run = Bun.spawnSync(
      [
        "nsenter",
        `--net=/run/netns/${this.ns}`,
        process.execPath,
        join(import.meta.dir, "_tc_fib_runner.ts"),
        JSON.stringify({ ifindex: this.ifindex, which }),
      ],
      { stderr: "pipe", stdout: "pipe" },
    );
    if (run.exitCode !== 0) throw new Error(`fib runner: ${run.stderr.toString()}`);
    return JSON.parse(run.stdout.toString()) as CaseResult[];
  }

  close(): void {
    if (this.made) Bun.spawnSync(["ip", "netns", "del", this.ns]);
    this.made = false;
  }
}

/**
 * Runs a UDP datagram (with IP options) to a frontend without backends through prog and checks
 * the ICMP port unreachable byte by byte, independently of the fixture tables' packet builder:
 * both checksums recomputed over the output, the quote equal to the input's IPv4 header + 8
 * bytes, addresses and MACs swapped. Returns the verdict.
 */
export function checkPortUnreachable(lab: Lab, prog: string): number {
  lab.reset();
  lab.addService({
    address: "192.168.77.1",
    port: 30080,
    proto: "udp",
    revNatId: 7,
    flags: ["NODEPORT"],
    backends: [],
  });
  const spec = udp(
    { src: "203.0.113.7", sport: 40001, dst: "192.168.77.1", dport: 30080 },
    { payload: "x".repeat(100) },
  );
  const input = buildPacket({ ...spec, ip4: { ...spec.ip4!, options: [1, 1, 1, 0] } });
  const r = lab.run(prog, input);
  const out = r.data;
  const hl = ((input[14] ?? 0) & 0x0f) * 4;
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const got = {
    length: out.length,
    macs: [toHex(out.slice(0, 6)), toHex(out.slice(6, 12))],
    ipHeaderSum: internetChecksum(out.slice(14, 34)),
    ip: { verIhl: out[14], proto: out[23], ttl: out[22], totLen: dv.getUint16(16) },
    addrs: [toHex(out.slice(26, 30)), toHex(out.slice(30, 34))],
    icmp: { type: out[34], code: out[35], sum: internetChecksum(out.slice(34)) },
    quote: toHex(out.slice(42)),
  };
  expect(got).toEqual({
    length: 14 + 20 + 8 + hl + 8,
    macs: [toHex(input.slice(6, 12)), toHex(input.slice(0, 6))],
    ipHeaderSum: 0,
    ip: { verIhl: 0x45, proto: 1, ttl: 64, totLen: 20 + 8 + hl + 8 },
    addrs: [toHex(input.slice(30, 34)), toHex(input.slice(26, 30))],
    icmp: { type: 3, code: 3, sum: 0 },
    quote: toHex(input.slice(14, 14 + hl + 8)),
  });
  return r.retval;
}
