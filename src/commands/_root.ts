import { defineCommand } from "citty";
import { VERSION } from "../version.ts";

/** Top-level command; subcommands load lazily so `kpr version` never touches libbpf. */
export const main = defineCommand({
  meta: {
    name: "kpr",
    version: VERSION,
    description: "kube-proxy replacement: Kubernetes Services programmed into eBPF",
  },
  subCommands: {
    apply: () => import("./apply.ts").then((m) => m.default),
    bpf: () => import("./bpf.ts").then((m) => m.default),
    cleanup: () => import("./cleanup.ts").then((m) => m.default),
    completion: () => import("./completion.ts").then((m) => m.default),
    config: () => import("./config.ts").then((m) => m.default),
    explain: () => import("./explain.ts").then((m) => m.default),
    run: () => import("./run.ts").then((m) => m.default),
    service: () => import("./service.ts").then((m) => m.default),
    status: () => import("./status.ts").then((m) => m.default),
    version: () => import("./version.ts").then((m) => m.default),
  },
});
