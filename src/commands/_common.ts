import { readFileSync } from "node:fs";
import type { ArgsDef, CommandDef } from "citty";
import { stringify as yamlStringify } from "yaml";
import type { Config } from "../config/config.ts";
import { DEFAULT_CONFIG_PATH } from "../config/config.ts";
import { closest, didYouMean } from "../config/suggest.ts";
import { EXIT_RUNTIME, InputError, type InputProblem, KprError } from "../errors.ts";

/** Arguments every command that reads the config takes. Spread into a command's `args`. */
export const commonArgs = {
  config: {
    type: "string",
    description: `Config file (YAML, Cilium Helm value names); built-in defaults when ${DEFAULT_CONFIG_PATH} is absent`,
    valueHint: "FILE",
  },
} as const;

/** The output formats every printing command accepts. */
export const OUTPUT_FORMATS = ["table", "json", "yaml"] as const;

/** One of OUTPUT_FORMATS. */
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** `-o table|json|yaml`, shared by every command that prints. */
export const outputArg = {
  output: {
    type: "enum" as const,
    alias: "o",
    options: [...OUTPUT_FORMATS] as string[],
    description: "Output format: table, json or yaml",
    default: "table",
    valueHint: "FORMAT",
  },
};

/** The problem with an `-o` value other than table, json or yaml; undefined when it is one of them. */
export function outputProblem(output: string): InputProblem | undefined {
  if ((OUTPUT_FORMATS as readonly string[]).includes(output)) return undefined;
  return {
    file: "<flags>",
    field: "-o",
    message: `got "${output}", expected one of ${OUTPUT_FORMATS.join(", ")}${didYouMean(output, OUTPUT_FORMATS)}`,
  };
}

/** Throws an InputError (exit 2) unless `-o` is one of OUTPUT_FORMATS. */
export function checkOutput(output: string): asserts output is OutputFormat {
  const p = outputProblem(output);
  if (p) throw new InputError([p]);
}

/** JSON with bigints as numbers when exact, as decimal strings beyond 2^53. */
export function toJson(data: unknown): string {
  return JSON.stringify(
    data,
    (_k, v) =>
      typeof v === "bigint" ? (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString()) : v,
    2,
  );
}

/**
 * Writes `data` to stdout as `-o` asks: JSON or YAML of the data itself (the same structure for
 * both), or the text `table()` renders.
 */
export function printOutput(format: string, data: unknown, table: () => string): void {
  checkOutput(format);
  if (format === "table") {
    process.stdout.write(table());
    return;
  }
  const json = toJson(data);
  process.stdout.write(format === "json" ? `${json}\n` : yamlStringify(JSON.parse(json)));
}

/** Loads the config named by `--config` (or the default path); exits 2 on bad input. */
export async function configFromArgs(args: { config?: string }): Promise<Config> {
  const { loadConfig } = await import("../config/load.ts");
  return loadConfig(args.config);
}

type ArgDefs = Record<string, ArgsDef[string]>;

function names(key: string): string[] {
  const kebab = key.replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase();
  const camel = key.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
  return [...new Set([key, kebab, camel])];
}

function aliases(def: ArgsDef[string]): string[] {
  const a = (def as { alias?: string | string[] }).alias;
  return a === undefined ? [] : Array.isArray(a) ? a : [a];
}

/**
 * Checks a command's own arguments (the words after its name) against its `args` definition:
 * every flag must be defined (did-you-mean for near misses), string and enum flags need a value,
 * enum values must be one of the options, and there may be no more words than positional
 * arguments. Returns every problem (empty when the arguments are fine).
 */
export function argvProblems(defs: ArgDefs, argv: string[]): InputProblem[] {
  const problems: InputProblem[] = [];
  const long = new Map<string, { key: string; def: ArgsDef[string]; negated: boolean }>();
  const short = new Map<string, { key: string; def: ArgsDef[string] }>();
  const positionals: string[] = [];
  for (const [key, def] of Object.entries(defs)) {
    if (def.type === "positional") {
      positionals.push(key);
      continue;
    }
    for (const n of [...names(key), ...aliases(def).filter((a) => a.length > 1)]) {
      long.set(n, { key, def, negated: false });
      if (def.type === "boolean") long.set(`no-${n}`, { key, def, negated: true });
    }
    for (const a of aliases(def).filter((a) => a.length === 1)) short.set(a, { key, def });
  }
  const flagList = [...long.keys()].filter((n) => !n.startsWith("no-")).map((n) => `--${n}`);
  const problem = (field: string, message: string) => problems.push({ file: "<flags>", field, message });
  const checkValue = (flag: string, def: ArgsDef[string], value: string) => {
    const options = (def as { options?: string[] }).options;
    if (def.type === "enum" && options && !options.includes(value))
      problem(flag, `got "${value}", expected one of ${options.join(", ")}${didYouMean(value, options)}`);
  };
  const takesValue = (def: ArgsDef[string]) => def.type === "string" || def.type === "enum";
  let words = 0;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      words += argv.length - i - 1;
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = a.slice(2, eq < 0 ? undefined : eq);
      const hit = long.get(name);
      if (!hit) {
        const guess = closest(`--${name}`, flagList);
        problem(`--${name}`, `unknown flag${guess ? ` (did you mean "${guess}"?)` : ""}`);
        const guessDef = guess ? long.get(guess.slice(2))?.def : undefined;
        const next = argv[i + 1];
        if (eq < 0 && guessDef && takesValue(guessDef) && next !== undefined && !next.startsWith("-")) i++;
        continue;
      }
      if (takesValue(hit.def)) {
        let value: string | undefined = eq < 0 ? argv[i + 1] : a.slice(eq + 1);
        if (eq < 0) {
          if (value === undefined || (value.startsWith("-") && value !== "-")) value = undefined;
          else i++;
        }
        if (value === undefined) problem(`--${name}`, "needs a value");
        else checkValue(`--${name}`, hit.def, value);
      } else if (eq >= 0 && !["true", "false"].includes(a.slice(eq + 1))) {
        problem(`--${name}`, `is a switch: got "${a.slice(eq + 1)}", expected no value (or true/false)`);
      }
      continue;
    }
    if (a.startsWith("-") && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const c = a[j]!;
        const hit = short.get(c);
        if (!hit) {
          problem(
            `-${c}`,
            `unknown flag${didYouMean(
              `-${c}`,
              [...short.keys()].map((s) => `-${s}`),
            )}`,
          );
          break;
        }
        if (takesValue(hit.def)) {
          let value: string | undefined = a.slice(j + 1).replace(/^=/, "");
          if (value === "") {
            value = argv[i + 1];
            if (value === undefined || (value.startsWith("-") && value !== "-")) value = undefined;
            else i++;
          }
          if (value === undefined) problem(`-${c}`, "needs a value");
          else checkValue(`-${c}`, hit.def, value);
          break;
        }
      }
      continue;
    }
    words++;
    if (words > positionals.length)
      problem(
        a,
        positionals.length === 0
          ? "unexpected argument (this command takes none; flags start with --)"
          : `unexpected argument (this command takes ${positionals.map((p) => p.toUpperCase()).join(" ")})`,
      );
  }
  return problems;
}

/**
 * Walks `argv` down the command tree: the command the words name, the words naming it, and its
 * own arguments. An unknown or missing subcommand is an InputError with a suggestion.
 */
export async function resolveArgv(
  root: CommandDef,
  argv: string[],
): Promise<{ cmd: CommandDef; path: string[]; rest: string[] }> {
  let cmd = root;
  const path: string[] = [];
  let i = 0;
  for (;;) {
    const subs = await resolve(cmd.subCommands);
    if (!subs || Object.keys(subs).length === 0) break;
    const word = argv[i];
    const where = ["kpr", ...path].join(" ");
    if (word === undefined || word.startsWith("-")) {
      if (word === undefined || !["--help", "-h"].includes(word))
        throw new UsageError(`${where}: missing command (one of: ${Object.keys(subs).join(", ")})`, path);
      break;
    }
    const next = subs[word];
    if (!next)
      throw new UsageError(
        `${where}: unknown command "${word}"${didYouMean(word, Object.keys(subs))} (one of: ${Object.keys(subs).join(", ")})`,
        path,
      );
    cmd = (await resolve(next)) as CommandDef;
    path.push(word);
    i++;
  }
  return { cmd, path, rest: argv.slice(i) };
}

async function resolve<T>(v: T | (() => T | Promise<T>) | Promise<T>): Promise<T> {
  return typeof v === "function" ? await (v as () => T | Promise<T>)() : await v;
}

/** Bad command line: exit 2, printed as plain text with the command's usage. */
export class UsageError extends InputError {
  constructor(
    message: string,
    readonly path: string[],
  ) {
    super([{ message }]);
    this.name = "UsageError";
  }
}

/** Checks `argv` for the command it names; throws a UsageError listing every problem. */
export async function checkArgv(
  root: CommandDef,
  argv: string[],
): Promise<{ cmd: CommandDef; path: string[] }> {
  const { cmd, path, rest } = await resolveArgv(root, argv);
  // --config is accepted everywhere (scripts pass it to every call); commands that read no config ignore it
  const defs = { ...commonArgs, ...(((await resolve(cmd.args)) ?? {}) as ArgDefs) } as ArgDefs;
  const problems = argvProblems(defs, rest);
  if (problems.length > 0) {
    const where = ["kpr", ...path].join(" ");
    const lines = problems.map((p) => `${where}: ${p.field}: ${p.message}`);
    throw new UsageError(lines.join("\n"), path);
  }
  return { cmd, path };
}

/** Linux capabilities kpr may need, by bit number. */
export const CAPS = { CAP_NET_ADMIN: 12, CAP_SYS_ADMIN: 21, CAP_PERFMON: 38, CAP_BPF: 39 } as const;

/** A capability name. */
export type CapName = keyof typeof CAPS;

/** The effective capability set of this process (CapEff of /proc/self/status). */
export function effectiveCaps(status = readFileSync("/proc/self/status", "utf8")): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

/**
 * What a command needs: "write" changes the datapath (load, attach, pin, mount), "read" opens
 * pinned maps and links, "none" touches nothing in the kernel.
 */
export type Privilege = "none" | "read" | "write";

/** The capabilities a privilege level needs that `eff` lacks (CAP_SYS_ADMIN stands in for CAP_BPF). */
export function missingCaps(level: Privilege, eff: bigint): CapName[] {
  const has = (c: CapName) => (eff & (1n << BigInt(CAPS[c]))) !== 0n;
  const need: CapName[] = [];
  if (level === "none") return need;
  if (!has("CAP_BPF") && !has("CAP_SYS_ADMIN")) need.push("CAP_BPF");
  if (level === "write") {
    if (!has("CAP_NET_ADMIN")) need.push("CAP_NET_ADMIN");
    if (!has("CAP_SYS_ADMIN")) need.push("CAP_SYS_ADMIN");
  }
  return need;
}

/** Throws (exit 1) naming the missing capabilities before a command touches the kernel. */
export function requirePrivilege(command: string, level: Privilege, eff = effectiveCaps()): void {
  const missing = missingCaps(level, eff);
  if (missing.length === 0) return;
  const what = level === "write" ? "changes the node's eBPF datapath" : "reads kpr's pinned eBPF maps";
  throw new KprError(
    `${command}: missing privileges ${missing.join(", ")} (this command ${what}; run it as root, e.g. sudo ${command}, or grant the capabilities)`,
    EXIT_RUNTIME,
  );
}
