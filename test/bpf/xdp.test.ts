/**
 * The XDP program (bpf/xdp.bpf.c) run with BPF_PROG_TEST_RUN on crafted frames: every tc
 * ingress fixture again through XDP (same core, same reason, same output frame with checksums,
 * XDP verdicts), the hand-over to tc where XDP cannot finish, and the SNAT path with a FIB in a
 * private network namespace.
 */
import { afterAll, beforeAll, describe, expect, it } from "bun:test";
import { rmSync } from "node:fs";
import { MAP_CODECS } from "../../src/datapath/lbmaps.ts";
import { needs } from "../harness/env.ts";
import { ensureBpffs } from "../harness/netns.ts";
import { assertCase, buildObjects, checkPortUnreachable, FibNetns } from "./_assert_case.ts";
import { Lab, XDP_ACT } from "./_lab.ts";
import { type CaseResult, executeCase } from "./_tc_cases.ts";
import { xdpFibCases, xdpHostCases } from "./_xdp_cases.ts";

const skip = needs({ root: true, tools: ["clang", "ip", "nsenter"] }, "XDP datapath tests");

describe.skipIf(!!skip)("XDP program", () => {
  const pinDir = `/sys/fs/bpf/kpr-test-xdp-${Math.random().toString(36).slice(2, 10)}`;
  let lab: Lab;

  beforeAll(() => {
    buildObjects();
    ensureBpffs();
    lab = Lab.open("tc", pinDir, ["xdp"]);
  });
  afterAll(() => {
    lab?.close();
    rmSync(pinDir, { recursive: true, force: true });
  });

  it("loads on the maps the tc object pinned; its codecs match its BTF", () => {
    using xdp = Lab.open("xdp", pinDir);
    expect({ maps: xdp.obj.maps().sort() }).toEqual({ maps: lab.obj.maps().sort() });
    expect({ btf: xdp.checkBtf().sort() }).toEqual({ btf: Object.keys(MAP_CODECS).sort() });
  });

  it.each(xdpHostCases().map((c) => [c.name, c] as const))("%s", (_name, c) => {
    assertCase(c, executeCase(lab, c, 1));
  });

  it("ICMP port unreachable: checksums recomputed, offending header + 8 bytes quoted, XDP_TX", () => {
    expect({ verdict: checkPortUnreachable(lab, "kpr_xdp") }).toEqual({ verdict: XDP_ACT.XDP_TX });
  });
});

// BPF_PROG_TEST_RUN takes an xdp_md context (the ingress ifindex the FIB lookup needs) from 5.15 on
const skipFib = needs(
  { root: true, tools: ["clang", "ip", "nsenter"], kernel: "5.15" },
  "XDP with a FIB (test run with an xdp_md context)",
);
describe.skipIf(!!skipFib)("XDP program with a FIB (network namespace)", () => {
  const fib = new FibNetns();
  let results: CaseResult[] = [];

  beforeAll(() => {
    buildObjects();
    ensureBpffs();
    results = fib.run("xdp");
  });
  afterAll(() => fib.close());

  it.each(xdpFibCases({ ifindex: 1 }).map((c, i) => [c.name, i] as const))("%s", (_name, i) => {
    const c = xdpFibCases({ ifindex: fib.ifindex })[i]!;
    const res = results[i];
    expect(res).toBeDefined();
    assertCase(c, res!);
  });
});
