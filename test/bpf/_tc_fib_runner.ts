/**
 * Runs the FIB fixture cases (fibCases, or their XDP mirror) inside the network namespace this
 * process was started in (FibNetns starts it with nsenter --net), because bpf_fib_lookup in
 * BPF_PROG_TEST_RUN uses the caller's namespace. Prints one JSON array of CaseResult on stdout.
 *   bun test/bpf/_tc_fib_runner.ts '{"ifindex": N, "which": "tc" | "xdp"}'
 */
import { mkdtempSync, rmSync } from "node:fs";
import { Lab } from "./_lab.ts";
import { executeCase, type FibEnv, fibCases } from "./_tc_cases.ts";
import { xdpFibCases } from "./_xdp_cases.ts";

const env = JSON.parse(process.argv[2] ?? "{}") as FibEnv & { which?: "tc" | "xdp" };
if (!env.ifindex) throw new Error('usage: _tc_fib_runner.ts \'{"ifindex": N, "which": "tc"}\'');
let results: unknown;
if (env.which === "xdp") {
  // tc and XDP objects on one set of maps (pinned in a private bpffs dir)
  const pinDir = mkdtempSync("/sys/fs/bpf/kpr-xdp-fib-");
  try {
    using lab = Lab.open("tc", pinDir, ["xdp"]);
    results = xdpFibCases(env).map((c) => executeCase(lab, c, env.ifindex));
  } finally {
    rmSync(pinDir, { recursive: true, force: true });
  }
} else {
  using lab = Lab.open("tc");
  results = fibCases(env).map((c) => executeCase(lab, c, env.ifindex));
}
process.stdout.write(JSON.stringify(results));
