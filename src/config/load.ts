import { existsSync, readFileSync } from "node:fs";
import { isMap, isNode, LineCounter, parseDocument } from "yaml";
import { InputError, type InputProblem } from "../errors.ts";
import { type Config, DEFAULT_CONFIG_PATH, defaultConfig } from "./config.ts";

/** Maglev table sizes Cilium accepts (primes; M should exceed 100 × backends). */
export const MAGLEV_TABLE_SIZES = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071] as const;

type Check = (v: unknown) => { ok: true; value: unknown } | { ok: false; expected: string };

const ok = (value: unknown) => ({ ok: true as const, value });
const bad = (expected: string) => ({ ok: false as const, expected });

const bool: Check = (v) => {
  if (typeof v === "boolean") return ok(v);
  // Helm values are often quoted ("true"): accept the strings too.
  if (v === "true" || v === "false") return ok(v === "true");
  return bad('true or false (boolean or "true"/"false")');
};

const oneOf =
  (...allowed: string[]): Check =>
  (v) =>
    typeof v === "string" && allowed.includes(v) ? ok(v) : bad(`one of ${allowed.join(", ")}`);

const str: Check = (v) => (typeof v === "string" ? ok(v) : bad("a string"));

const nonEmptyStr: Check = (v) => (typeof v === "string" && v !== "" ? ok(v) : bad("a non-empty string"));

const absPath: Check = (v) => (typeof v === "string" && v.startsWith("/") ? ok(v) : bad("an absolute path"));

const hostPort: Check = (v) => {
  if (v === "" || v === null) return ok("");
  if (typeof v !== "string") return bad('"host:port" or ""');
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : 0;
  return m && port >= 1 && port <= 65535 ? ok(v) : bad('"host:port" (e.g. "0.0.0.0:10256") or ""');
};

const posInt =
  (max: number): Check =>
  (v) =>
    typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= max ? ok(v) : bad(`an integer 1..${max}`);

const maglevSize: Check = (v) =>
  typeof v === "number" && (MAGLEV_TABLE_SIZES as readonly number[]).includes(v)
    ? ok(v)
    : bad(`one of the primes ${MAGLEV_TABLE_SIZES.join(", ")}`);

const portRange: Check = (v) => {
  const expected = 'a range "LOW,HIGH" or "LOW-HIGH" with 1 <= LOW <= HIGH <= 65535';
  let lo: number | undefined;
  let hi: number | undefined;
  if (typeof v === "string") {
    const m = /^\s*(\d{1,5})\s*[,-]\s*(\d{1,5})\s*$/.exec(v);
    if (m) [lo, hi] = [Number(m[1]), Number(m[2])];
  } else if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === "number")) {
    [lo, hi] = [v[0] as number, v[1] as number];
  }
  if (lo === undefined || hi === undefined || !Number.isInteger(lo) || !Number.isInteger(hi))
    return bad(expected);
  if (lo < 1 || hi > 65535 || lo > hi) return bad(expected);
  return ok([lo, hi]);
};

const IFNAME = /^[^\s/:]{1,15}$/;
const devices: Check = (v) => {
  const expected = "a list of interface names or a comma/space-separated string";
  let list: unknown[];
  if (typeof v === "string") list = v.split(/[\s,]+/).filter((s) => s !== "");
  else if (Array.isArray(v)) list = v;
  else if (v === null) list = [];
  else return bad(expected);
  if (!list.every((d) => typeof d === "string" && IFNAME.test(d)))
    return bad(`${expected} (1-15 chars, no / : or space)`);
  return ok([...new Set(list as string[])]);
};

type Schema = { [key: string]: Check | Schema };

/** The accepted keys (Cilium Helm value names) and their checks. */
const SCHEMA: Schema = {
  kubeProxyReplacement: bool,
  kubeProxyReplacementHealthzBindAddr: hostPort,
  loadBalancer: {
    mode: oneOf("snat", "dsr", "hybrid"),
    dsrDispatch: oneOf("opt", "ipip"),
    acceleration: oneOf("disabled", "native", "best-effort"),
    algorithm: oneOf("random", "maglev"),
  },
  maglev: { tableSize: maglevSize },
  nodePort: { enabled: bool, range: portRange },
  devices,
  socketLB: { enabled: bool, hostNamespaceOnly: bool },
  cgroup: { root: absPath },
  bpf: { root: absPath, lbMapMax: posInt(16_777_216) },
  nodeName: nonEmptyStr,
  k8s: { serviceProxyName: str },
  prometheus: { serveAddr: hostPort },
};

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Validates a parsed config object against SCHEMA and deep-merges it onto defaultConfig().
 * `lineOf(path)` gives the 1-based line of a key path, when known. Throws InputError with every problem.
 */
export function configFromObject(
  obj: unknown,
  file: string,
  lineOf: (path: string[]) => number | undefined = () => undefined,
): Config {
  const problems: InputProblem[] = [];
  const out = defaultConfig() as unknown as Record<string, unknown>;
  if (obj === null || obj === undefined) return out as unknown as Config;
  if (!isPlainObject(obj)) {
    throw new InputError([
      { file, line: lineOf([]), message: "expected a mapping of config keys at the top level" },
    ]);
  }
  const walk = (
    value: Record<string, unknown>,
    schema: Schema,
    target: Record<string, unknown>,
    path: string[],
  ) => {
    for (const [k, v] of Object.entries(value)) {
      const p = [...path, k];
      const field = p.join(".");
      const s = schema[k];
      if (s === undefined) {
        const known = Object.keys(schema).join(", ");
        problems.push({ file, line: lineOf(p), field, message: `unknown key (expected one of: ${known})` });
      } else if (typeof s === "function") {
        const r = s(v);
        if (r.ok) target[k] = r.value;
        else
          problems.push({
            file,
            line: lineOf(p),
            field,
            message: `got ${JSON.stringify(v)}, expected ${r.expected}`,
          });
      } else if (v === null) {
        // An empty section ("loadBalancer:") keeps the defaults.
      } else if (!isPlainObject(v)) {
        problems.push({
          file,
          line: lineOf(p),
          field,
          message: `expected a mapping with keys ${Object.keys(s).join(", ")}`,
        });
      } else {
        walk(v, s, target[k] as Record<string, unknown>, p);
      }
    }
  };
  walk(obj, SCHEMA, out, []);
  if (problems.length > 0) throw new InputError(problems);
  return out as unknown as Config;
}

/** Parses config YAML text (file is used for messages). Throws InputError listing every problem. */
export function parseConfig(text: string, file: string): Config {
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
    // The key's own line: find the pair in the parent map.
    const parent = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1), true);
    if (!isMap(parent)) return undefined;
    const pair = parent.items.find(
      (it) => isNode(it.key) && (it.key as { value?: unknown }).value === path.at(-1),
    );
    const range = pair && isNode(pair.key) ? pair.key.range : undefined;
    return range ? lineCounter.linePos(range[0]).line : undefined;
  };
  return configFromObject(doc.toJS(), file, lineOf);
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
  return parseConfig(text, file);
}
