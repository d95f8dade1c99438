/**
 * Runs the FIB fixture cases (fibCases) inside the network namespace this process was started
 * in (tc.test.ts starts it with nsenter --net), because bpf_fib_lookup in BPF_PROG_TEST_RUN
 * uses the caller's namespace. Prints one JSON array of CaseResult on stdout.
 *   bun test/bpf/_tc_fib_runner.ts '{"ifindex": N}'
 */
import { Lab } from "./_lab.ts";
import { executeCase, type FibEnv, fibCases } from "./_tc_cases.ts";

const env = JSON.parse(process.argv[2] ?? "{}") as FibEnv;
if (!env.ifindex) throw new Error("usage: _tc_fib_runner.ts '{\"ifindex\": N}'");
using lab = Lab.open("tc");
const results = fibCases(env).map((c) => executeCase(lab, c, env.ifindex));
process.stdout.write(JSON.stringify(results));
