#!/usr/bin/env bun
import { type CommandDef, defineCommand, runCommand, showUsage } from "citty";
import { EXIT_INPUT, EXIT_RUNTIME, KprError } from "./errors.ts";
import { log } from "./log.ts";
import { VERSION } from "./version.ts";

/** Top-level command; subcommands load lazily so `kpr version` never touches libbpf. */
export const main = defineCommand({
  meta: {
    name: "kpr",
    version: VERSION,
    description: "kube-proxy replacement: Kubernetes Services programmed into eBPF",
  },
  subCommands: {
    apply: () => import("./commands/apply.ts").then((m) => m.default),
    bpf: () => import("./commands/bpf.ts").then((m) => m.default),
    cleanup: () => import("./commands/cleanup.ts").then((m) => m.default),
    run: () => import("./commands/run.ts").then((m) => m.default),
    service: () => import("./commands/service.ts").then((m) => m.default),
    status: () => import("./commands/status.ts").then((m) => m.default),
    version: () => import("./commands/version.ts").then((m) => m.default),
  },
});

/**
 * Finds the innermost subcommand named by rawArgs, for usage output; `parent` is named by the
 * whole command path ("kpr bpf lb") so nested usage lines read as typed.
 */
async function resolveCommand(
  cmd: CommandDef,
  rawArgs: string[],
): Promise<{ cmd: CommandDef; parent?: CommandDef }> {
  const path = ["kpr"];
  let cur = cmd;
  for (const a of rawArgs) {
    if (a.startsWith("-")) break;
    const subs = typeof cur.subCommands === "function" ? await cur.subCommands() : await cur.subCommands;
    const next = subs?.[a];
    if (!next) break;
    cur = (typeof next === "function" ? await next() : await next) as CommandDef;
    path.push(a);
  }
  if (path.length === 1) return { cmd: cur };
  return { cmd: cur, parent: { meta: { name: path.slice(0, -1).join(" ") } } };
}

async function entry(rawArgs: string[]): Promise<number> {
  if (rawArgs.includes("--help") || rawArgs.includes("-h") || rawArgs.length === 0) {
    const { cmd, parent } = await resolveCommand(main as CommandDef, rawArgs);
    await showUsage(cmd, parent);
    return rawArgs.length === 0 ? EXIT_INPUT : 0;
  }
  if (rawArgs.length === 1 && rawArgs[0] === "--version") {
    console.log(VERSION);
    return 0;
  }
  try {
    const { result } = await runCommand(main, { rawArgs });
    return typeof result === "number" ? result : 0;
  } catch (e) {
    if (e instanceof KprError) {
      log.error(e.message);
      return e.exitCode;
    }
    const err = e as Error & { code?: string };
    if (err?.code === "E_UNKNOWN_COMMAND" || err?.code === "EARG" || err?.code === "E_NO_COMMAND") {
      log.error(err.message);
      const { cmd, parent } = await resolveCommand(main as CommandDef, rawArgs);
      await showUsage(cmd, parent);
      return EXIT_INPUT;
    }
    log.error(err?.stack ?? String(e));
    return EXIT_RUNTIME;
  }
}

if (import.meta.main) {
  // Not process.exit(): it drops stdout still queued for a pipe (output cut at 64-128 KiB). The
  // process ends when the queue is written; the unref'd timer only ends one that lingers.
  process.exitCode = await entry(process.argv.slice(2));
  setTimeout(() => process.exit(), 10_000).unref();
}
