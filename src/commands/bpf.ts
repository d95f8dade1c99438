import { defineCommand } from "citty";

/** `kpr bpf …`: inspection of the kernel side (features, maps, programs). */
export default defineCommand({
  meta: {
    name: "bpf",
    description: "Inspect the eBPF side: kernel features, maps, conntrack, NAT, affinity, counters",
  },
  subCommands: {
    affinity: () => import("./bpf/affinity.ts").then((m) => m.default),
    ct: () => import("./bpf/ct.ts").then((m) => m.default),
    lb: () => import("./bpf/lb.ts").then((m) => m.default),
    metrics: () => import("./bpf/metrics.ts").then((m) => m.default),
    nat: () => import("./bpf/nat.ts").then((m) => m.default),
    probe: () => import("./bpf/probe.ts").then((m) => m.default),
  },
});
