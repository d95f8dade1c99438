/**
 * Shared by the tc and XDP fixture tests: builds the eBPF objects and checks a case's results
 * against its table row (verdict, the one reason counter that moved, output frame with
 * checksums).
 */
import { expect } from "bun:test";
import { join } from "node:path";
import { REPO_ROOT } from "../harness/netns.ts";
import { buildPacket, fromHex, parsePacket, toHex, verifyChecksums } from "../harness/packet.ts";
import { VERDICT } from "./_lab.ts";
import { type Case, type CaseResult, FIB, inputBytes } from "./_tc_cases.ts";

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
