#!/usr/bin/env bun
import { type CommandDef, renderUsage, runCommand } from "citty";
import { checkArgv, type Privilege, requirePrivilege, resolveArgv, UsageError } from "./commands/_common.ts";
import { main } from "./commands/_root.ts";
import { EXIT_INPUT, EXIT_RUNTIME, InputError, KprError } from "./errors.ts";
import { colorEnabled, log } from "./log.ts";
import { VERSION } from "./version.ts";

/** Top-level command (defined in commands/_root.ts so commands can walk the tree). */
export { main };

/**
 * What each command needs from the kernel, by command path; checked before it runs. Commands not
 * listed touch nothing privileged.
 */
export function privilegeOf(path: string[], argv: string[]): Privilege {
  const p = path.join(" ");
  if (p === "apply") return argv.some((a) => a === "--dry-run" || a === "--dryRun") ? "none" : "write";
  // explain loads a private instance of the tc program (no attach): the capabilities of a load
  if (p === "cleanup" || p === "run" || p === "explain") return "write";
  if (p === "status" || p.startsWith("service") || p.startsWith("bpf ")) return "read";
  return "none";
}

/** Examples shown by `--help`, by command path. */
const EXAMPLES: Record<string, string[]> = {
  "": [
    "kpr apply -f manifests/ --dry-run",
    "kubectl get svc,endpointslices,nodes -A -o yaml | kpr apply -f -",
    "kpr status --verbose",
    "kpr service list --stats",
    "kpr explain --src 10.0.0.5:41000 --dst 192.168.1.10:30080 --proto tcp",
  ],
  apply: ["kpr apply -f services.yaml -f endpointslices.yaml", "kpr apply -f dir/ --dry-run -o json"],
  status: ["kpr status", "kpr status --verbose", "kpr status -o json"],
  "service list": [
    "kpr service list",
    "kpr service list --stats",
    "kpr service list --service default/web -o json",
  ],
  "service get": ["kpr service get 3", "kpr service get 3 -o yaml"],
  "bpf ct list": ["kpr bpf ct list", "kpr bpf ct list -o json"],
  "bpf nat list": ["kpr bpf nat list"],
  "bpf affinity list": ["kpr bpf affinity list"],
  "bpf metrics": ["kpr bpf metrics", "kpr bpf metrics -o json"],
  explain: [
    "kpr explain --src 10.0.0.5:41000 --dst 192.168.1.10:30080 --proto tcp --device eth0",
    "kpr explain --src 10.0.0.5:41000 --dst 192.168.1.10:30053 --proto udp -o json",
    "kpr explain --local --dst 10.96.0.10:53 --proto udp",
  ],
  completion: [
    "source <(kpr completion bash)",
    "kpr completion zsh > ~/.zfunc/_kpr",
    "kpr completion fish | source",
  ],
  "config view": ["kpr config view --config /etc/kpr/config.yaml -o yaml"],
  "config schema": ["kpr config schema > kpr-config.schema.json"],
};

const FOOTER = `EXIT CODES

  0  success
  1  runtime failure (kernel, missing privileges, I/O); nothing half-done is left behind
  2  bad input: unknown flag or command, bad config, bad manifest (nothing was changed)

ENVIRONMENT

  KPR_LOG_LEVEL   silent, error, warn, info (default), debug or trace
  KPR_LOG_FORMAT  json or text; JSON lines by default when stderr is not a terminal
  KPR_NODE_NAME   this node's name (default: the hostname, lower-cased)
  NO_COLOR        any value turns colour off (colour is only used on a terminal)`;

const ANSI = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");

/** The `--help` text of the command at `path`: citty's usage, examples, exit codes, environment. */
export async function helpText(path: string[], cmd: CommandDef, color = false): Promise<string> {
  const parent = path.length > 0 ? { meta: { name: ["kpr", ...path.slice(0, -1)].join(" ") } } : undefined;
  let text = await renderUsage(cmd, parent);
  const examples = EXAMPLES[path.join(" ")];
  if (examples) text += `\n\nEXAMPLES\n\n${examples.map((e) => `  ${e}`).join("\n")}`;
  text += `\n\n${FOOTER}\n`;
  return color ? text : text.replace(ANSI, "");
}

function usageHint(path: string[]): string {
  return `Run "${["kpr", ...path].join(" ")} --help" for usage.`;
}

/** Runs the CLI on `rawArgs`; returns the exit code. */
export async function entry(rawArgs: string[]): Promise<number> {
  const flags = rawArgs.slice(0, rawArgs.includes("--") ? rawArgs.indexOf("--") : undefined);
  if (rawArgs.length === 1 && rawArgs[0] === "--version") {
    console.log(VERSION);
    return 0;
  }
  if (flags.includes("--help") || flags.includes("-h") || rawArgs.length === 0) {
    let path: string[] = [];
    let cmd = main as CommandDef;
    try {
      if (rawArgs.length > 0) ({ cmd, path } = await resolveArgv(main as CommandDef, flags));
    } catch (e) {
      if (!(e instanceof UsageError)) throw e;
      process.stderr.write(`${e.message}\n`);
      return EXIT_INPUT;
    }
    const text = await helpText(path, cmd, colorEnabled(process.stdout));
    if (rawArgs.length === 0) {
      process.stderr.write(text);
      return EXIT_INPUT;
    }
    process.stdout.write(text);
    return 0;
  }
  try {
    const { path } = await checkArgv(main as CommandDef, rawArgs);
    requirePrivilege(["kpr", ...path].join(" "), privilegeOf(path, flags));
    const { result } = await runCommand(main, { rawArgs });
    // citty drops a subcommand's return value: commands set process.exitCode instead
    return typeof result === "number" ? result : Number(process.exitCode ?? 0);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`${e.message}\n${usageHint(e.path)}\n`);
      return EXIT_INPUT;
    }
    if (e instanceof InputError && e.problems.every((p) => p.file === "<flags>")) {
      process.stderr.write(`${e.message}\n`);
      return EXIT_INPUT;
    }
    if (e instanceof KprError) {
      log.error(e.message);
      return e.exitCode;
    }
    const err = e as Error & { code?: string };
    if (err?.code === "E_UNKNOWN_COMMAND" || err?.code === "EARG" || err?.code === "E_NO_COMMAND") {
      process.stderr.write(`${err.message.replace(ANSI, "")}\n`);
      return EXIT_INPUT;
    }
    if (err?.code === "EACCES" || err?.code === "EPERM") {
      log.error(
        `${err.message} (permission denied: run as root or grant CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)`,
      );
      return EXIT_RUNTIME;
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
