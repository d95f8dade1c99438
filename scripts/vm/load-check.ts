/**
 * Loads every program of every embedded eBPF object on the running kernel, one program at a
 * time, and prints one JSON line per program: the verifier's verdict, its statistics (log level
 * 4: instructions processed, states) and, on kernels ≥ 5.16, bpf_prog_info.verified_insns; on a
 * rejection, the tail of the verifier log. Attaches nothing. Exit 1 when a program is rejected.
 *
 *   bun scripts/vm/load-check.ts          (run by scripts/kernel-matrix.sh inside each VM)
 */
import { readdirSync } from "node:fs";
import { release } from "node:os";
import { join } from "node:path";
import { openObject } from "../../src/datapath/bpf.ts";
import { Struct, unsafeLibbpf } from "../../src/datapath/ffi.ts";
import { embeddedObject, KERNEL_FLOOR, kernelAtLeast, type ObjectName } from "../../src/datapath/objects.ts";

interface Verdict {
  kernel: string;
  object: string;
  program: string;
  /** skipped: the object needs a newer kernel (KERNEL_FLOOR), and kpr loads it only there */
  verdict: "accepted" | "rejected" | "skipped";
  /** "processed N insns" of the verifier's statistics */
  insnsProcessed?: number;
  insnsLimit?: number;
  totalStates?: number;
  peakStates?: number;
  maxStatesPerInsn?: number;
  /** bpf_prog_info.verified_insns (kernel ≥ 5.16) */
  verifiedInsns?: number;
  /** instructions after the kernel's rewrites (bpf_prog_info.xlated_prog_len / 8) */
  xlatedInsns?: number;
  stackDepth?: string;
  error?: string;
}

function stats(log: string): Partial<Verdict> {
  const num = (re: RegExp) => {
    const m = log.match(re);
    return m ? Number(m[1]) : undefined;
  };
  return {
    insnsProcessed: num(/processed (\d+) insns/),
    insnsLimit: num(/\(limit (\d+)\)/),
    maxStatesPerInsn: num(/max_states_per_insn (\d+)/),
    totalStates: num(/total_states (\d+)/),
    peakStates: num(/peak_states (\d+)/),
    stackDepth: log.match(/stack depth ([\d+]+)/)?.[1],
  };
}

/** verified_insns (@216, 5.16+; 0 before) and xlated_prog_len (@20) of bpf_prog_info. */
function progCounts(fd: number): { verifiedInsns?: number; xlatedInsns: number } {
  const info = new Struct(232);
  const len = new Uint32Array([232]);
  if (unsafeLibbpf().bpf_obj_get_info_by_fd(fd, info.bytes, len) !== 0) return { xlatedInsns: 0 };
  const verified = len[0]! >= 220 ? info.getU32(216) : 0;
  return { verifiedInsns: verified || undefined, xlatedInsns: info.getU32(20) / 8 };
}

const root = join(import.meta.dir, "..", "..");
const names = readdirSync(join(root, "bpf"))
  .filter((f) => f.endsWith(".bpf.c"))
  .map((f) => f.replace(/\.bpf\.c$/, "") as ObjectName)
  .sort();
const kernel = release();
let rejected = 0;
for (const name of names) {
  const bytes = await embeddedObject(name);
  const floor = KERNEL_FLOOR[name];
  const [fMajor = 0, fMinor = 0] = (floor ?? "").split(".").map(Number);
  if (floor && !kernelAtLeast(kernel, fMajor, fMinor)) {
    using o = openObject(bytes, name);
    for (const prog of o.programs())
      console.log(
        JSON.stringify({
          kernel,
          object: name,
          program: prog,
          verdict: "skipped",
          error: `needs kernel ≥ ${floor}`,
        }),
      );
    continue;
  }
  const programs = (() => {
    using o = openObject(bytes, name);
    return o.programs();
  })();
  for (const prog of programs) {
    const v: Verdict = { kernel, object: name, program: prog, verdict: "accepted" };
    let log = "";
    try {
      using obj = openObject(bytes, name);
      for (const p of programs) obj.setAutoload(p, p === prog);
      obj.load({ stats: (_p, l) => (log = l) });
      Object.assign(v, stats(log), progCounts(obj.program(prog).fd));
    } catch {
      // again without statistics: libbpf then retries at log level 1, whose tail names the reason
      v.verdict = "rejected";
      rejected++;
      try {
        using obj = openObject(bytes, name);
        for (const p of programs) obj.setAutoload(p, p === prog);
        obj.load();
        v.error = "rejected with log level 4 only";
      } catch (e) {
        v.error = (e as Error).message;
      }
    }
    console.log(JSON.stringify(v));
  }
}
process.exit(rejected ? 1 : 0);
