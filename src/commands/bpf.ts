import { defineCommand } from "citty";

/** `kpr bpf …`: inspection of the kernel side (features, maps, programs). */
export default defineCommand({
  meta: { name: "bpf", description: "Inspect the eBPF side: kernel features, maps, programs" },
  subCommands: {
    lb: () => import("./bpf/lb.ts").then((m) => m.default),
    probe: () => import("./bpf/probe.ts").then((m) => m.default),
  },
});
