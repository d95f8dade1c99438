/**
 * Run inside a test netns (nsenter --net): attaches the embedded probe programs the way kpr does,
 * pinned under a bpf root, so the smoke tests can check `kpr cleanup` removes them.
 *
 *   bun _attach_helper.ts tc BPFROOT DEV       tcx link on ingress, clsact filter on egress
 *   bun _attach_helper.ts xdp BPFROOT DEV MODE  XDP link (native|generic)
 *   bun _attach_helper.ts cgroup BPFROOT CGDIR  connect4 + sendmsg4 links
 *   bun _attach_helper.ts query - DEV          program ids on DEV's tcx ingress (BPF_PROG_QUERY)
 * Also pins one map at BPFROOT/maps/kpr_test_state. Prints a JSON summary.
 */
import { attachCgroup, attachTc, attachXdp, tcxPrograms, xdpProgramId } from "../../src/datapath/attach.ts";
import { BpfMap, MapType, unpin } from "../../src/datapath/bpf.ts";
import { ensureBpffs } from "../../src/datapath/bpffs.ts";
import { linkPin, mapsDir } from "../../src/datapath/cleanup.ts";
import { openEmbedded } from "../../src/datapath/objects.ts";

const [kind, root, target, mode] = process.argv.slice(2);
if (!kind || !root || !target) {
  console.error("usage: _attach_helper.ts tc|xdp|cgroup BPFROOT DEV|CGDIR [MODE]");
  process.exit(2);
}
if (kind === "query") {
  console.log(JSON.stringify({ tcxIngress: tcxPrograms(target, "ingress"), xdp: xdpProgramId(target) }));
  process.exit(0);
}
ensureBpffs(root);
using obj = await openEmbedded("probe");
obj.load();
const out: Record<string, unknown> = { kind };
if (kind === "tc") {
  const a = attachTc(obj.program("probe_tc"), target, "ingress", linkPin.tc(root, "ingress", target));
  const b = attachTc(obj.program("probe_tc"), target, "egress", linkPin.tc(root, "egress", target), {
    mode: "clsact",
  });
  a.link?.close();
  out.ingress = a.mode;
  out.egress = b.mode;
} else if (kind === "xdp") {
  const m = mode === "generic" ? "generic" : "native";
  attachXdp(obj.program("probe_xdp"), target, m, linkPin.xdp(root, target)).close();
  out.mode = m;
} else if (kind === "cgroup") {
  attachCgroup(obj.program("probe_connect4"), target, "connect4", linkPin.cgroup(root, "connect4")).close();
  attachCgroup(obj.program("probe_sendmsg4"), target, "sendmsg4", linkPin.cgroup(root, "sendmsg4")).close();
  out.hooks = ["connect4", "sendmsg4"];
} else {
  console.error(`unknown kind ${kind}`);
  process.exit(2);
}
using m = BpfMap.create({
  name: "kpr_test_state",
  type: MapType.HASH,
  keySize: 4,
  valueSize: 4,
  maxEntries: 4,
});
unpin(`${mapsDir(root)}/kpr_test_state`);
m.pin(`${mapsDir(root)}/kpr_test_state`);
console.log(JSON.stringify(out));
