/**
 * The command line itself: strict flags and arguments (exit 2, did-you-mean, plain text on
 * stderr), help with examples/exit codes/environment, one -o everywhere, completion scripts,
 * `kpr config view|schema`, and the privilege check before anything touches the kernel.
 */
import { afterAll, describe, expect, it } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { argvProblems, missingCaps, outputArg, toJson } from "../../src/commands/_common.ts";
import { defaultConfig } from "../../src/config/config.ts";
import { closest } from "../../src/config/suggest.ts";
import { colorEnabled } from "../../src/log.ts";
import { have, needs } from "../harness/env.ts";

const ROOT = resolve(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/main.ts");
const tmp = mkdtempSync(join(tmpdir(), "kprC-cli-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function kpr(args: string[], env: Record<string, string> = {}, prefix: string[] = []): Promise<Run> {
  const argv = prefix.length
    ? [...prefix, join(ROOT, "dist/kpr"), ...args]
    : [process.execPath, MAIN, ...args];
  const proc = Bun.spawn(argv, {
    cwd: ROOT,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, KPR_NODE_NAME: "node-1", ...env },
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout, stderr };
}

const ANSI = new RegExp(`${String.fromCharCode(27)}\\[`);

describe("strict arguments", () => {
  it.each([
    [
      ["apply", "--dryrun", "-f", "examples/demo"],
      'kpr apply: --dryrun: unknown flag (did you mean "--dry-run"?)',
    ],
    [["status", "--confg", "x.yaml"], 'kpr status: --confg: unknown flag (did you mean "--config"?)'],
    [
      ["status", "extra"],
      "kpr status: extra: unexpected argument (this command takes none; flags start with --)",
    ],
    [["stauts"], 'kpr: unknown command "stauts" (did you mean "status"?)'],
    [["service", "lsit"], 'kpr service: unknown command "lsit" (did you mean "list"?)'],
    [
      ["service", "list", "-o", "jsn"],
      'kpr service list: -o: got "jsn", expected one of table, json, yaml (did you mean "json"?)',
    ],
    [
      ["bpf", "lb", "list", "--output=xml"],
      'kpr bpf lb list: --output: got "xml", expected one of table, json, yaml',
    ],
    [["apply", "-f"], "kpr apply: -f: needs a value"],
    [
      ["status", "--verbose=yes"],
      'kpr status: --verbose: is a switch: got "yes", expected no value (or true/false)',
    ],
    [["bpf"], "kpr bpf: missing command (one of:"],
    [["completion", "tcsh"], 'kpr completion: unknown shell "tcsh" (one of: bash, zsh, fish)'],
  ])("kpr %j: exit 2, plain text on stderr", async (args, message) => {
    const r = await kpr(args, { KPR_LOG_FORMAT: "json" });
    expect(r.code, `exit code of ${args.join(" ")}\n${r.stderr}`).toBe(2);
    expect(r.stderr, "the message").toContain(message);
    expect(r.stderr.trim().startsWith("{"), "not a JSON log line").toBe(false);
    expect(r.stdout, "nothing on stdout").toBe("");
  });

  it("parses what citty accepts: --flag=value, -ovalue, --no-switch, -- ends flags", () => {
    const defs = {
      ...outputArg,
      config: { type: "string" as const },
      "dry-run": { type: "boolean" as const },
      shell: { type: "positional" as const },
    };
    expect(argvProblems(defs, ["--config=a", "-ojson", "--no-dry-run", "--dryRun", "bash"])).toEqual([]);
    expect(argvProblems(defs, ["--", "--not-a-flag"]), "after --, words are positional").toEqual([]);
    expect(argvProblems(defs, ["a", "b"]).map((p) => p.field)).toEqual(["b"]);
    expect(argvProblems(defs, ["-x"]).map((p) => p.message)).toEqual(['unknown flag (did you mean "-o"?)']);
  });

  it("suggests only plausible near misses", () => {
    expect(closest("--dryrun", ["--dry-run", "--file"])).toBe("--dry-run");
    expect(closest("--verbos", ["--verbose"])).toBe("--verbose");
    expect(closest("--zzz", ["--dry-run", "--file"])).toBeUndefined();
  });
});

describe("help", () => {
  it("kpr --help: examples, exit codes, environment; no colour when piped", async () => {
    const r = await kpr(["--help"]);
    expect(r.code).toBe(0);
    for (const s of [
      "EXAMPLES",
      "EXIT CODES",
      "KPR_LOG_LEVEL",
      "KPR_LOG_FORMAT",
      "KPR_NODE_NAME",
      "NO_COLOR",
      "completion",
    ])
      expect(r.stdout, `help mentions ${s}`).toContain(s);
    expect(ANSI.test(r.stdout), "no ANSI escapes on a pipe").toBe(false);
  });

  it("kpr service list --help names its flags and examples", async () => {
    const r = await kpr(["service", "list", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("kpr service list --stats");
    expect(r.stdout).toContain("--output");
  });

  it("no arguments: usage on stderr, exit 2", async () => {
    const r = await kpr([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("USAGE");
  });
});

describe("-o table|json|yaml and config view", () => {
  const cfgFile = join(tmp, "c.yaml");
  writeFileSync(cfgFile, "devices: [eth0]\nloadBalancer: {algorithm: maglev}\nk8sServiceProxyName: p\n");

  it("config view: the effective config with defaults filled in, in every format", async () => {
    const want = defaultConfig();
    want.devices = ["eth0"];
    want.loadBalancer.algorithm = "maglev";
    want.k8s.serviceProxyName = "p";
    want.nodeName = "node-1";
    const json = await kpr(["config", "view", "--config", cfgFile, "-o", "json"]);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual(JSON.parse(JSON.stringify(want)));
    const yaml = await kpr(["config", "view", "--config", cfgFile, "-o", "yaml"]);
    expect(parseYaml(yaml.stdout), "yaml is the same structure").toEqual(JSON.parse(json.stdout));
    const table = await kpr(["config", "view", "--config", cfgFile]);
    expect(table.stdout.split("\n")[0]).toBe(`# source: ${cfgFile}`);
  });

  it("config schema prints the committed JSON Schema", async () => {
    const r = await kpr(["config", "schema", "-o", "json"]);
    expect(JSON.parse(r.stdout)).toEqual(await Bun.file(join(ROOT, "config.schema.json")).json());
  });

  it("bigints print as numbers", () => {
    expect(toJson({ a: 5n })).toBe('{\n  "a": 5\n}');
  });
});

describe("colour", () => {
  it("only on a terminal, never with NO_COLOR or TERM=dumb", () => {
    const saved = { NO_COLOR: process.env.NO_COLOR, TERM: process.env.TERM };
    try {
      delete process.env.NO_COLOR;
      process.env.TERM = "xterm";
      expect(colorEnabled({ isTTY: true }), "terminal").toBe(true);
      expect(colorEnabled({ isTTY: false }), "pipe").toBe(false);
      process.env.NO_COLOR = "1";
      expect(colorEnabled({ isTTY: true }), "NO_COLOR").toBe(false);
      delete process.env.NO_COLOR;
      process.env.TERM = "dumb";
      expect(colorEnabled({ isTTY: true }), "TERM=dumb").toBe(false);
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});

describe("completion", () => {
  it.each(["bash", "zsh", "fish"])("%s script is generated from the command tree", async (shell) => {
    const r = await kpr(["completion", shell]);
    expect(r.code, r.stderr).toBe(0);
    const flag = (f: string) => (shell === "fish" ? `-l ${f}` : `--${f}`);
    for (const w of ["apply", "status", "service", flag("dry-run"), flag("output")])
      expect(r.stdout, `mentions ${w}`).toContain(w);
  });

  it.skipIf(!have("bash"))("bash completes subcommands, flags and -o values", async () => {
    const script = (await kpr(["completion", "bash"])).stdout;
    const f = join(tmp, "kpr.bash");
    writeFileSync(f, script);
    const complete = (line: string) => {
      const words = line.split(" ");
      const sh = `source ${f}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _kpr; echo "\${COMPREPLY[*]}"`;
      return Bun.spawnSync(["bash", "-c", sh]).stdout.toString().trim();
    };
    expect(complete("kpr se")).toBe("service");
    expect(complete("kpr service l")).toBe("list");
    expect(complete("kpr apply --dr")).toBe("--dry-run");
    expect(complete("kpr status -o y")).toBe("yaml");
  });
});

describe("privileges", () => {
  it("read needs CAP_BPF (or CAP_SYS_ADMIN); write also CAP_NET_ADMIN and CAP_SYS_ADMIN", () => {
    const bit = (n: number) => 1n << BigInt(n);
    expect(missingCaps("write", 0n)).toEqual(["CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"]);
    expect(missingCaps("read", bit(21))).toEqual([]);
    expect(missingCaps("write", bit(39) | bit(12))).toEqual(["CAP_SYS_ADMIN"]);
    expect(missingCaps("none", 0n)).toEqual([]);
  });

  const skip = needs({ root: true, built: true, tools: ["setpriv"] }, "cli: non-root run");
  it.skipIf(!!skip)("an ordinary user gets the missing capabilities named, no stack trace", async () => {
    const asNobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    for (const [args, caps] of [
      [["cleanup"], "CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN"],
      [["apply", "-f", "examples/demo"], "CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN"],
      [["status"], "CAP_BPF"],
    ] as const) {
      const r = await kpr([...args], { KPR_LOG_FORMAT: "text" }, asNobody);
      expect(r.code, `kpr ${args.join(" ")} as nobody: ${r.stderr}`).toBe(1);
      expect(r.stderr).toContain(`kpr ${args[0]}: missing privileges ${caps}`);
      expect(r.stderr, "no stack trace").not.toMatch(/\n\s+at /);
    }
    const v = await kpr(["version"], {}, asNobody);
    expect(v.code, "version needs nothing").toBe(0);
  });
});
