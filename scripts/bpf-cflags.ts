/**
 * The clang command line for kpr's eBPF objects, shared by build.ts (bpf/*.bpf.c) and the test
 * fixture compiler (test/datapath/_fixtures.ts) so both build with the same target and warnings.
 */

/** `-I/usr/include/<triplet>` where gcc knows the multiarch triplet (Debian keeps asm/ there). */
function multiarchInclude(): string[] {
  const r = Bun.spawnSync(["gcc", "-print-multiarch"]);
  const triplet = r.exitCode === 0 ? r.stdout.toString().trim() : "";
  return triplet ? [`-I/usr/include/${triplet}`] : [];
}

/** clang arguments compiling `src` to the BPF object `out`, with `-I` for each of includeDirs. */
export function bpfClangArgs(src: string, out: string, includeDirs: readonly string[] = []): string[] {
  return [
    "clang",
    "-O2",
    "-g",
    "-target",
    "bpfel",
    "-mcpu=v3",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
    ...includeDirs.flatMap((d) => ["-I", d]),
    ...multiarchInclude(),
    "-c",
    src,
    "-o",
    out,
  ];
}
