import { existsSync, readFileSync } from "node:fs";
import { isMap, isNode, LineCounter, parseDocument } from "yaml";
import { InputError, type InputProblem } from "../errors.ts";
import { parseHashSeed } from "../lb/maglev.ts";
import { log } from "../log.ts";
import { type Config, DEFAULT_CONFIG_PATH, defaultConfig } from "./config.ts";
import { didYouMean } from "./suggest.ts";

/** Maglev table sizes Cilium accepts (primes; M should exceed 100 × backends). */
export const MAGLEV_TABLE_SIZES = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071] as const;

type Check = (v: unknown) => { ok: true; value: unknown } | { ok: false; expected: string };

/** A JSON Schema fragment. */
export type JsonSchema = Record<string, unknown>;

/** One config key: its check, its JSON Schema and its description (the same source for both). */
interface Field {
  check: Check;
  schema: JsonSchema;
  description: string;
}

type Schema = { [key: string]: Field | Schema };

const ok = (value: unknown) => ({ ok: true as const, value });
const bad = (expected: string) => ({ ok: false as const, expected });

const field = (check: Check, schema: JsonSchema, description: string): Field => ({
  check,
  schema,
  description,
});
const isField = (v: Field | Schema): v is Field => typeof (v as Field).check === "function";

const bool = (description: string) =>
  field(
    (v) => {
      if (typeof v === "boolean") return ok(v);
      // Helm values are often quoted ("true"): accept the strings too.
      if (v === "true" || v === "false") return ok(v === "true");
      return bad('true or false (boolean or "true"/"false")');
    },
    { anyOf: [{ type: "boolean" }, { type: "string", enum: ["true", "false"] }] },
    description,
  );

const oneOf = (description: string, ...allowed: string[]) =>
  field(
    (v) => (typeof v === "string" && allowed.includes(v) ? ok(v) : bad(`one of ${allowed.join(", ")}`)),
    { type: "string", enum: allowed },
    description,
  );

const str = (description: string) =>
  field((v) => (typeof v === "string" ? ok(v) : bad("a string")), { type: "string" }, description);

const nonEmptyStr = (description: string) =>
  field(
    (v) => (typeof v === "string" && v !== "" ? ok(v) : bad("a non-empty string")),
    { type: "string", minLength: 1 },
    description,
  );

const absPath = (description: string) =>
  field(
    (v) => (typeof v === "string" && v.startsWith("/") ? ok(v) : bad("an absolute path")),
    { type: "string", pattern: "^/" },
    description,
  );

const hostPort = (description: string) =>
  field(
    (v) => {
      if (v === "" || v === null) return ok("");
      if (typeof v !== "string") return bad('"host:port" or ""');
      const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(v);
      const port = m ? Number(m[3]) : 0;
      return m && port >= 1 && port <= 65535 ? ok(v) : bad('"host:port" (e.g. "0.0.0.0:10256") or ""');
    },
    { type: "string" },
    description,
  );

/** A number, or a decimal string as quoted Helm values carry it. */
function num(v: unknown): number | undefined {
  if (typeof v === "number") return v;
  if (typeof v === "string" && /^\s*\d+\s*$/.test(v)) return Number(v);
  return undefined;
}

const intSchema = (min: number, max: number): JsonSchema => ({
  anyOf: [
    { type: "integer", minimum: min, maximum: max },
    { type: "string", pattern: "^[0-9]+$" },
  ],
});

const maglevSeed = (description: string) =>
  field(
    (v) => {
      if (typeof v !== "string") return bad("12 bytes in standard base64");
      try {
        parseHashSeed(v);
        return ok(v);
      } catch (e) {
        return bad((e as Error).message);
      }
    },
    { type: "string", pattern: "^[A-Za-z0-9+/]{16}$" },
    description,
  );

const posInt = (max: number, description: string) =>
  field(
    (v) => {
      const n = num(v);
      return n !== undefined && Number.isInteger(n) && n >= 1 && n <= max
        ? ok(n)
        : bad(`an integer 1..${max}`);
    },
    intSchema(1, max),
    description,
  );

const maglevSize = (description: string) =>
  field(
    (v) => {
      const n = num(v);
      return n !== undefined && (MAGLEV_TABLE_SIZES as readonly number[]).includes(n)
        ? ok(n)
        : bad(`one of the primes ${MAGLEV_TABLE_SIZES.join(", ")}`);
    },
    { anyOf: [{ enum: [...MAGLEV_TABLE_SIZES] }, { type: "string", enum: MAGLEV_TABLE_SIZES.map(String) }] },
    description,
  );

const portRange = (description: string) =>
  field(
    (v) => {
      const expected = 'a range "LOW,HIGH" or "LOW-HIGH" with 1 <= LOW <= HIGH <= 65535';
      let lo: number | undefined;
      let hi: number | undefined;
      if (typeof v === "string") {
        const m = /^\s*(\d{1,5})\s*[,-]\s*(\d{1,5})\s*$/.exec(v);
        if (m) [lo, hi] = [Number(m[1]), Number(m[2])];
      } else if (Array.isArray(v) && v.length === 2) {
        [lo, hi] = [num(v[0]), num(v[1])];
      }
      if (lo === undefined || hi === undefined || !Number.isInteger(lo) || !Number.isInteger(hi))
        return bad(expected);
      if (lo < 1 || hi > 65535 || lo > hi) return bad(expected);
      return ok([lo, hi]);
    },
    {
      anyOf: [
        { type: "string", pattern: "^\\s*\\d{1,5}\\s*[,-]\\s*\\d{1,5}\\s*$" },
        { type: "array", items: { type: "integer", minimum: 1, maximum: 65535 }, minItems: 2, maxItems: 2 },
      ],
    },
    description,
  );

/** Interface names, or Cilium's wildcard form (`eth+` = every interface whose name starts with eth). */
const IFNAME = /^[^\s/:+]{1,15}\+?$|^\+$/;
const listOf = (what: string, item: (s: string) => boolean, itemSchema: JsonSchema, description: string) =>
  field(
    (v) => {
      const expected = `a list of ${what} or a comma/space-separated string`;
      let list: unknown[];
      if (typeof v === "string") list = v.split(/[\s,]+/).filter((s) => s !== "");
      else if (Array.isArray(v)) list = v;
      else if (v === null) list = [];
      else return bad(expected);
      const wrong = list.find((d) => typeof d !== "string" || !item(d));
      if (wrong !== undefined) return bad(`${expected} (${JSON.stringify(wrong)} is not one)`);
      return ok([...new Set(list as string[])]);
    },
    { anyOf: [{ type: "array", items: itemSchema }, { type: "string" }] },
    description,
  );

const CIDR = /^(?:\d{1,3}(?:\.\d{1,3}){3}\/\d{1,2}|[0-9a-fA-F:]+:[0-9a-fA-F:.]*\/\d{1,3})$/;

/** The accepted keys (Cilium Helm value names) with their checks, schemas and descriptions. */
const SCHEMA: Schema = {
  kubeProxyReplacement: bool("Replace kube-proxy: program Services into eBPF (false: program nothing)"),
  kubeProxyReplacementHealthzBindAddr: hostPort('host:port of the /healthz server of `kpr run` ("" = off)'),
  loadBalancer: {
    mode: oneOf("How remote backends are reached (only snat is implemented)", "snat", "dsr", "hybrid"),
    dsrDispatch: oneOf("DSR dispatch method", "opt", "ipip"),
    acceleration: oneOf("XDP acceleration", "disabled", "native", "best-effort"),
    algorithm: oneOf("Backend selection", "random", "maglev"),
  },
  maglev: {
    tableSize: maglevSize("Maglev lookup table size (a prime)"),
    hashSeed: maglevSeed("Maglev hash seed: 12 bytes in base64, the same on every node"),
  },
  nodePort: {
    enabled: bool("Serve NodePort (and HostPort) services"),
    range: portRange('NodePort range, "LOW,HIGH" or "LOW-HIGH"'),
    addresses: listOf(
      "CIDRs",
      (s) => CIDR.test(s),
      { type: "string" },
      "Only node addresses inside these CIDRs serve NodePorts (empty: all of them)",
    ),
  },
  devices: listOf(
    "interface names (wildcard: eth+)",
    (s) => IFNAME.test(s),
    { type: "string", pattern: "^[^\\s/:+]{1,15}\\+?$" },
    "Interfaces facing clients and other nodes (tc programs attach here); empty: detected",
  ),
  socketLB: {
    enabled: bool("Socket-level load balancing (ClusterIP from the node's processes and pods)"),
    hostNamespaceOnly: bool("Socket LB only in the host network namespace"),
  },
  cgroup: {
    root: absPath("cgroup2 root the socket hooks attach to (kpr's name; Cilium's is cgroup.hostRoot)"),
    hostRoot: absPath("Cilium's name for cgroup.root"),
    autoMount: { enabled: bool("Mount cgroup2 at the root when it is not mounted") },
  },
  bpf: {
    root: absPath("Directory on bpffs where kpr pins its maps and links"),
    lbMapMax: posInt(16_777_216, "Capacity of the service, backend and reverse-NAT maps"),
    ctTcpMax: posInt(16_777_216, "Connection-tracking entries for TCP (sizes the CT map with ctAnyMax)"),
    ctAnyMax: posInt(16_777_216, "Connection-tracking entries for non-TCP (sizes the CT map with ctTcpMax)"),
    natMax: posInt(16_777_216, "SNAT map entries"),
  },
  nodeName: nonEmptyStr("This node's name (default: KPR_NODE_NAME or the hostname)"),
  k8s: {
    serviceProxyName: str("Serve only Services labelled service.kubernetes.io/service-proxy-name=VALUE"),
  },
  k8sServiceProxyName: str("Cilium's name for k8s.serviceProxyName"),
  prometheus: {
    serveAddr: hostPort('host:port of the /metrics server of `kpr run` (default 127.0.0.1:10249; "" = off)'),
  },
};

/** Cilium names that kpr maps onto its own keys: alias path → kpr path. */
const ALIASES: Record<string, string[]> = {
  "cgroup.hostRoot": ["cgroup", "root"],
  k8sServiceProxyName: ["k8s", "serviceProxyName"],
};

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function allPaths(schema: Schema, prefix: string[] = []): string[] {
  return Object.entries(schema).flatMap(([k, s]) =>
    isField(s) ? [[...prefix, k].join(".")] : allPaths(s, [...prefix, k]),
  );
}

/** Every key path kpr accepts ("loadBalancer.mode", …). */
export const CONFIG_KEYS: string[] = allPaths(SCHEMA);

/**
 * The JSON Schema (draft 2020-12) of the config file, generated from the definition the
 * validator uses. Unknown keys are allowed (a Cilium values file carries many; kpr warns).
 */
export function configJsonSchema(): JsonSchema {
  const node = (s: Schema): JsonSchema => ({
    type: "object",
    properties: Object.fromEntries(
      Object.entries(s).map(([k, v]) => [
        k,
        isField(v) ? { description: v.description, ...v.schema } : node(v),
      ]),
    ),
  });
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: "https://github.com/kpr/kpr/config.schema.json",
    title: "kpr config (Cilium Helm value names)",
    ...node(SCHEMA),
  };
}

/** A parsed config with the warnings about it (unknown keys, ignored keys). */
export interface ParsedConfig {
  config: Config;
  warnings: InputProblem[];
}

/**
 * Validates a parsed config object against SCHEMA and deep-merges it onto defaultConfig().
 * Unknown keys are warnings (a Cilium values file has many kpr does not use), with a suggestion
 * for near misses of kpr's keys. Throws InputError with every problem in a known key.
 */
export function configFromObjectDetailed(
  obj: unknown,
  file: string,
  lineOf: (path: string[]) => number | undefined = () => undefined,
): ParsedConfig {
  const problems: InputProblem[] = [];
  const warnings: InputProblem[] = [];
  const ignored: string[] = [];
  const out = defaultConfig() as unknown as Record<string, unknown>;
  if (obj === null || obj === undefined) return { config: out as unknown as Config, warnings };
  if (!isPlainObject(obj)) {
    throw new InputError([
      { file, line: lineOf([]), message: "expected a mapping of config keys at the top level" },
    ]);
  }
  const set = (path: string[], value: unknown) => {
    let t = out;
    for (const k of path.slice(0, -1)) {
      if (!isPlainObject(t[k])) t[k] = {};
      t = t[k] as Record<string, unknown>;
    }
    t[path.at(-1)!] = value;
  };
  const walk = (value: Record<string, unknown>, schema: Schema, path: string[]) => {
    for (const [k, v] of Object.entries(value)) {
      const p = [...path, k];
      const key = p.join(".");
      const s = schema[k];
      if (s === undefined) {
        const hint = didYouMean(key, CONFIG_KEYS);
        if (hint)
          warnings.push({ file, line: lineOf(p), field: key, message: `unknown key, ignored${hint}` });
        else ignored.push(key);
      } else if (isField(s)) {
        const r = s.check(v);
        if (!r.ok)
          problems.push({
            file,
            line: lineOf(p),
            field: key,
            message: `got ${JSON.stringify(v)}, expected ${r.expected}`,
          });
        else set(ALIASES[key] ?? p, r.value);
      } else if (v === null) {
        // An empty section ("loadBalancer:") keeps the defaults.
      } else if (!isPlainObject(v)) {
        problems.push({
          file,
          line: lineOf(p),
          field: key,
          message: `expected a mapping with keys ${Object.keys(s).join(", ")}`,
        });
      } else {
        walk(v, s, p);
      }
    }
  };
  walk(obj, SCHEMA, []);
  if (problems.length > 0) throw new InputError(problems);
  if (ignored.length > 0)
    warnings.push({
      file,
      message: `${ignored.length} key(s) kpr does not use, ignored: ${ignored.slice(0, 12).join(", ")}${ignored.length > 12 ? ", …" : ""}`,
    });
  const cfg = out as unknown as Config;
  if (isPlainObject(obj.cgroup) && obj.cgroup.root !== undefined && obj.cgroup.hostRoot !== undefined)
    if (obj.cgroup.root !== obj.cgroup.hostRoot)
      throw new InputError([
        {
          file,
          line: lineOf(["cgroup", "hostRoot"]),
          field: "cgroup.hostRoot",
          message: "conflicts with cgroup.root (set one)",
        },
      ]);
  delete (cfg.cgroup as { hostRoot?: string }).hostRoot;
  delete (out as { k8sServiceProxyName?: string }).k8sServiceProxyName;
  return { config: cfg, warnings };
}

/** configFromObjectDetailed, logging its warnings. */
export function configFromObject(
  obj: unknown,
  file: string,
  lineOf: (path: string[]) => number | undefined = () => undefined,
): Config {
  const { config, warnings } = configFromObjectDetailed(obj, file, lineOf);
  logWarnings(warnings);
  return config;
}

function logWarnings(warnings: InputProblem[]): void {
  const clog = log.withTag("config");
  for (const w of warnings) {
    const where = [w.line ? `${w.file}:${w.line}` : w.file, w.field].filter(Boolean).join(": ");
    clog.warn(`${where}: ${w.message}`);
  }
}

/** Parses config YAML text (file is used for messages), with warnings. Throws InputError listing every problem. */
export function parseConfigDetailed(text: string, file: string): ParsedConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new InputError(
      doc.errors.map((e) => ({
        file,
        line: lineCounter.linePos(e.pos[0]).line,
        message: `invalid YAML: ${e.message.split("\n")[0]}`,
      })),
    );
  }
  const lineOf = (path: string[]): number | undefined => {
    if (path.length === 0)
      return doc.contents?.range ? lineCounter.linePos(doc.contents.range[0]).line : undefined;
    const parent = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1), true);
    if (!isMap(parent)) return undefined;
    const pair = parent.items.find(
      (it) => isNode(it.key) && (it.key as { value?: unknown }).value === path.at(-1),
    );
    const range = pair && isNode(pair.key) ? pair.key.range : undefined;
    return range ? lineCounter.linePos(range[0]).line : undefined;
  };
  let obj: unknown;
  try {
    obj = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw new InputError([
      { file, message: `invalid YAML: ${(e as Error).message} (expand the aliases or use fewer of them)` },
    ]);
  }
  return configFromObjectDetailed(obj, file, lineOf);
}

/** Parses config YAML text, logging warnings. Throws InputError listing every problem. */
export function parseConfig(text: string, file: string): Config {
  const { config, warnings } = parseConfigDetailed(text, file);
  logWarnings(warnings);
  return config;
}

const SOURCES = new WeakMap<Config, string>();

/** The file a config was read from, or a note that the built-in defaults are in use. */
export function configSource(cfg: Config): string {
  return SOURCES.get(cfg) ?? `built-in defaults (${DEFAULT_CONFIG_PATH} absent)`;
}

/** `cfg` with `devices` replaced (the devices a pass resolved), still naming the file it came from. */
export function withDevices(cfg: Config, devices: string[]): Config {
  const out: Config = { ...cfg, devices };
  const src = SOURCES.get(cfg);
  if (src !== undefined) SOURCES.set(out, src);
  return out;
}

/**
 * Loads the config: `path` when given (absent → InputError, exit 2), else DEFAULT_CONFIG_PATH
 * (absent → built-in defaults). Values are deep-merged onto defaultConfig().
 */
export function loadConfig(path?: string): Config {
  const file = path ?? DEFAULT_CONFIG_PATH;
  if (!existsSync(file)) {
    if (path === undefined) return defaultConfig();
    throw new InputError([{ file, message: "config file not found (check --config)" }]);
  }
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new InputError([{ file, message: `cannot read config: ${(e as Error).message}` }]);
  }
  const cfg = parseConfig(text, file);
  SOURCES.set(cfg, file);
  return cfg;
}
