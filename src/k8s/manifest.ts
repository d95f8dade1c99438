import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { LineCounter, parseAllDocuments } from "yaml";
import { InputError, type InputProblem } from "../errors.ts";
import { log } from "../log.ts";
import { type ClusterState, emptyClusterState, type ObjectSource } from "./types.ts";

const mlog = log.withTag("manifest");

/** A JSON-type description of the fields kpr reads; everything else in an object is dropped. */
type Shape =
  | "string"
  | "int"
  | "bool"
  | "intOrString"
  | "stringMap"
  | { array: Shape }
  | { object: { [field: string]: Shape }; fields: [string, Shape][] };

// `fields` is the object's entries, listed once (decode runs for every field of every object).
const obj = (fields: { [field: string]: Shape }): Shape => ({
  object: fields,
  fields: Object.entries(fields),
});
const arr = (of: Shape): Shape => ({ array: of });

const META = obj({ name: "string", namespace: "string", labels: "stringMap", annotations: "stringMap" });
const ENDPOINT_PORT = obj({ name: "string", protocol: "string", port: "int" });
const ENDPOINT_ADDRESS = obj({ ip: "string", nodeName: "string" });

/** Shapes per kind, with the apiVersion each kind must have. */
const KINDS: Record<
  string,
  { apiVersion: string; shape: Shape; namespaced: boolean; bucket: keyof ClusterState }
> = {
  Service: {
    apiVersion: "v1",
    namespaced: true,
    bucket: "services",
    shape: obj({
      metadata: META,
      spec: obj({
        type: "string",
        clusterIP: "string",
        clusterIPs: arr("string"),
        ipFamilies: arr("string"),
        ports: arr(
          obj({
            name: "string",
            protocol: "string",
            port: "int",
            targetPort: "intOrString",
            nodePort: "int",
          }),
        ),
        externalIPs: arr("string"),
        externalName: "string",
        externalTrafficPolicy: "string",
        internalTrafficPolicy: "string",
        healthCheckNodePort: "int",
        sessionAffinity: "string",
        sessionAffinityConfig: obj({ clientIP: obj({ timeoutSeconds: "int" }) }),
        loadBalancerSourceRanges: arr("string"),
        publishNotReadyAddresses: "bool",
        selector: "stringMap",
      }),
      status: obj({
        loadBalancer: obj({ ingress: arr(obj({ ip: "string", hostname: "string", ipMode: "string" })) }),
      }),
    }),
  },
  EndpointSlice: {
    apiVersion: "discovery.k8s.io/v1",
    namespaced: true,
    bucket: "endpointSlices",
    shape: obj({
      metadata: META,
      addressType: "string",
      endpoints: arr(
        obj({
          addresses: arr("string"),
          conditions: obj({ ready: "bool", serving: "bool", terminating: "bool" }),
          nodeName: "string",
          zone: "string",
          hints: obj({ forZones: arr(obj({ name: "string" })) }),
        }),
      ),
      ports: arr(ENDPOINT_PORT),
    }),
  },
  Endpoints: {
    apiVersion: "v1",
    namespaced: true,
    bucket: "endpoints",
    shape: obj({
      metadata: META,
      subsets: arr(
        obj({
          addresses: arr(ENDPOINT_ADDRESS),
          notReadyAddresses: arr(ENDPOINT_ADDRESS),
          ports: arr(ENDPOINT_PORT),
        }),
      ),
    }),
  },
  Pod: {
    apiVersion: "v1",
    namespaced: true,
    bucket: "pods",
    shape: obj({
      metadata: META,
      spec: obj({
        nodeName: "string",
        hostNetwork: "bool",
        containers: arr(
          obj({
            name: "string",
            ports: arr(
              obj({
                name: "string",
                containerPort: "int",
                hostPort: "int",
                hostIP: "string",
                protocol: "string",
              }),
            ),
          }),
        ),
      }),
      status: obj({ phase: "string", podIP: "string", podIPs: arr(obj({ ip: "string" })) }),
    }),
  },
  Node: {
    apiVersion: "v1",
    namespaced: false,
    bucket: "nodes",
    shape: obj({
      metadata: META,
      status: obj({ addresses: arr(obj({ type: "string", address: "string" })) }),
    }),
  },
};

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  return `${typeof v} ${JSON.stringify(v)}`;
}

/**
 * The field path of a value being decoded, as segments (field names and list indexes), turned
 * into text ("spec.ports[0].port") only for a problem: most objects have none.
 */
type PathStack = (string | number)[];

function pathText(stack: PathStack): string {
  let out = "";
  for (const seg of stack) {
    if (typeof seg === "number") out += `[${seg}]`;
    else out = out === "" ? seg : `${out}.${seg}`;
  }
  return out;
}

function mismatch(
  v: unknown,
  path: PathStack,
  bad: (field: string, msg: string) => void,
  expected: string,
): undefined {
  bad(pathText(path), `expected ${expected}, got ${typeName(v)}`);
  return undefined;
}

/** Checks v against shape; returns the value with only known fields, or undefined (with a problem) on a type error. */
function decode(
  v: unknown,
  shape: Shape,
  path: PathStack,
  bad: (field: string, msg: string) => void,
): unknown {
  // JSON null means "unset" in the Kubernetes API.
  if (v === null || v === undefined) return undefined;
  if (shape === "string") return typeof v === "string" ? v : mismatch(v, path, bad, "a string");
  if (shape === "bool") return typeof v === "boolean" ? v : mismatch(v, path, bad, "true or false");
  if (shape === "int")
    return typeof v === "number" && Number.isInteger(v) ? v : mismatch(v, path, bad, "an integer");
  if (shape === "intOrString") {
    return (typeof v === "number" && Number.isInteger(v)) || typeof v === "string"
      ? v
      : mismatch(v, path, bad, "an integer or a name");
  }
  if (shape === "stringMap") {
    if (typeof v !== "object" || Array.isArray(v)) return mismatch(v, path, bad, "a mapping of strings");
    const out: Record<string, string> = {};
    const m = v as Record<string, unknown>;
    for (const k of Object.keys(m)) {
      const x = m[k];
      if (typeof x === "string") out[k] = x;
      else bad(`${pathText(path)}.${k}`, `expected a string, got ${typeName(x)}`);
    }
    return out;
  }
  if ("array" in shape) {
    if (!Array.isArray(v)) return mismatch(v, path, bad, "a list");
    const out: unknown[] = [];
    for (let i = 0; i < v.length; i++) {
      path.push(i);
      const d = decode(v[i], shape.array, path, bad);
      path.pop();
      if (d !== undefined) out.push(d);
    }
    return out;
  }
  if (typeof v !== "object" || Array.isArray(v)) return mismatch(v, path, bad, "a mapping");
  const out: Record<string, unknown> = {};
  for (const [k, s] of shape.fields) {
    const x = (v as Record<string, unknown>)[k];
    if (x === null || x === undefined) continue;
    path.push(k);
    const d = decode(x, s, path, bad);
    path.pop();
    if (d !== undefined) out[k] = d;
  }
  return out;
}

/** Collects objects from parsed documents into a ClusterState, recording problems. */
class Collector {
  readonly state = emptyClusterState();
  readonly problems: InputProblem[] = [];
  private readonly seen = new Map<string, ObjectSource>();

  add(raw: unknown, source: ObjectSource): void {
    const where = { file: source.file, line: source.line };
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      this.problems.push({
        ...where,
        message: `expected a Kubernetes object (a mapping), got ${typeName(raw)}`,
      });
      return;
    }
    const o = raw as Record<string, unknown>;
    const kind = o.kind;
    if (typeof kind !== "string" || kind === "") {
      this.problems.push({ ...where, field: "kind", message: "required: every object needs a kind" });
      return;
    }
    const spec = KINDS[kind];
    if (spec === undefined) {
      if (kind.endsWith("List") && Array.isArray(o.items)) {
        for (const item of o.items) this.add(item, source);
        return;
      }
      const meta = o.metadata as { name?: unknown } | undefined;
      mlog.debug(`${source.file}: ignoring ${kind} ${String(meta?.name ?? "")} (kpr does not use this kind)`);
      return;
    }
    const metaRaw = o.metadata as Record<string, unknown> | undefined;
    const name = typeof metaRaw?.name === "string" ? metaRaw.name : undefined;
    const ns = spec.namespaced
      ? typeof metaRaw?.namespace === "string"
        ? metaRaw.namespace
        : "default"
      : undefined;
    const object = `${kind} ${ns !== undefined ? `${ns}/` : ""}${name ?? "<unnamed>"}`;
    if (o.apiVersion !== spec.apiVersion) {
      this.problems.push({
        ...where,
        object,
        field: "apiVersion",
        message: `got ${typeName(o.apiVersion)}, expected "${spec.apiVersion}"`,
      });
      return;
    }
    let typeErrors = 0;
    const decoded = decode(raw, spec.shape, [], (field, message) => {
      typeErrors++;
      this.problems.push({ ...where, object, field, message });
    }) as Record<string, unknown> | undefined;
    if (decoded === undefined || typeErrors > 0) return;
    const meta = (decoded.metadata ?? {}) as Record<string, unknown>;
    if (name === undefined || name === "") {
      this.problems.push({ ...where, object, field: "metadata.name", message: "required" });
      return;
    }
    if (ns !== undefined) meta.namespace = ns;
    decoded.metadata = meta;
    decoded.kind = kind;
    decoded.source = source;
    const key = `${kind} ${ns ?? ""}/${name}`;
    const first = this.seen.get(key);
    if (first !== undefined) {
      this.problems.push({
        ...where,
        object,
        message: `defined twice (first in ${first.file}${first.line ? `:${first.line}` : ""})`,
      });
      return;
    }
    this.seen.set(key, source);
    (this.state[spec.bucket] as unknown[]).push(decoded);
  }

  /** Parses one file's text (multi-document YAML or JSON). */
  addText(text: string, file: string): void {
    const fast = fastParse(text);
    // A List in a file of human size: take the exact path so each item gets its own line.
    const hasList = fast?.some(({ value }) => isList(value)) ?? false;
    if (fast === undefined || (hasList && text.length <= EXACT_LIST_MAX)) {
      this.addTextExact(text, file);
      return;
    }
    for (const { value, line } of fast) {
      // Empty documents ("---" at the end) are skipped; List items share the List's line here.
      if (value !== null && value !== undefined) this.add(value, { file, line });
    }
  }

  /** The exact path (the `yaml` library): every error with its line, each List item with its own line. */
  addTextExact(text: string, file: string): void {
    const lineCounter = new LineCounter();
    const docs = parseAllDocuments(text, { lineCounter, prettyErrors: false });
    if (!Array.isArray(docs)) return; // an empty stream
    for (const doc of docs) {
      const lineAt = (offset: number) => lineCounter.linePos(offset).line;
      if (doc.errors.length > 0) {
        for (const e of doc.errors) {
          this.problems.push({
            file,
            line: lineAt(e.pos[0]),
            message: `invalid YAML: ${e.message.split("\n")[0]}`,
          });
        }
        continue;
      }
      let js: unknown;
      try {
        js = doc.toJS({ maxAliasCount: 1000 });
      } catch (e) {
        this.problems.push({
          file,
          line: lineAt(doc.range[0]),
          message: `invalid YAML: ${(e as Error).message}`,
        });
        continue;
      }
      if (js === null || js === undefined) continue; // an empty document ("---" at the end)
      const start = doc.contents?.range[0] ?? doc.range[0];
      const items = (js as { items?: unknown }).items;
      const kind = (js as { kind?: unknown }).kind;
      if (typeof kind === "string" && kind.endsWith("List") && !(kind in KINDS) && Array.isArray(items)) {
        // Give each List item its own line.
        items.forEach((item, i) => {
          const node = doc.getIn(["items", i], true) as { range?: [number, number, number] } | undefined;
          this.add(item, { file, line: lineAt(node?.range?.[0] ?? start) });
        });
      } else {
        this.add(js, { file, line: lineAt(start) });
      }
    }
  }
}

/** Largest file whose Lists are parsed by the (slow) exact path, for per-item lines. */
const EXACT_LIST_MAX = 256 * 1024;

function isList(v: unknown): boolean {
  const o = v as { kind?: unknown; items?: unknown } | null;
  return (
    typeof o?.kind === "string" && o.kind.endsWith("List") && !(o.kind in KINDS) && Array.isArray(o.items)
  );
}

/** A block-mapping key at column 0 (a document's top-level key). */
const TOP_KEY = /^([A-Za-z0-9_"'][^:#]*?)\s*:(?:\s|$)/;
/** A document separator line. */
const SEPARATOR = /^---(\s|$)/;

/**
 * Bun's native YAML parser, ~50x faster than the `yaml` library here, with each document's first
 * line found by scanning for `---` separators. Undefined (use the exact path) on a parse error or
 * whenever the scan and the parser disagree about the documents.
 */
function fastParse(text: string): { value: unknown; line: number }[] | undefined {
  // Directives and "..." end markers change where documents start: leave those to the exact path.
  if (/^(%|\.\.\.\s*$)/m.test(text)) return undefined;
  let parsed: unknown;
  try {
    parsed = Bun.YAML.parse(text);
  } catch {
    return undefined;
  }
  // One pass over the lines without splitting the text (a 2 MB file has ~100k lines): a line is
  // cut out only when its first character can start a separator or a top-level key, or while its
  // document's first content line is still unknown.
  // Bun's parser keeps the last of duplicate keys silently. The common case, files concatenated
  // without "---" (two objects merged into one), shows as a repeated top-level key: exact path.
  let keys = new Set<string>();
  const content = (l: string) => l.trim() !== "" && !l.trimStart().startsWith("#");
  const starts: number[] = [];
  /** First content line (1-based) before the first separator; 0 when none. */
  let head = 0;
  let seps = 0;
  /** Index in `starts` of the current document while its first content line is unknown. */
  let pending = -1;
  let lineNo = 0;
  for (let pos = 0; pos <= text.length; ) {
    let eol = text.indexOf("\n", pos);
    if (eol < 0) eol = text.length;
    lineNo++;
    const c = text.charCodeAt(pos);
    let line: string | undefined;
    if (c === 45 /* - */) {
      line = text.slice(pos, eol);
      if (SEPARATOR.test(line)) {
        keys = new Set();
        if (seps === 0 && head !== 0) starts.push(head);
        seps++;
        // A document without content starts at its separator's line.
        starts.push(lineNo);
        pending = content(line.slice(3)) ? -1 : starts.length - 1;
        pos = eol + 1;
        continue;
      }
    } else if (
      (c >= 65 && c <= 90) ||
      (c >= 97 && c <= 122) ||
      (c >= 48 && c <= 57) ||
      c === 95 ||
      c === 34 ||
      c === 39
    ) {
      line = text.slice(pos, eol);
      const m = TOP_KEY.exec(line);
      if (m) {
        if (keys.has(m[1]!)) return undefined;
        keys.add(m[1]!);
      }
    }
    if (seps === 0 ? head === 0 : pending >= 0) {
      line ??= text.slice(pos, eol);
      if (content(line)) {
        if (seps === 0) head = lineNo;
        else {
          starts[pending] = lineNo;
          pending = -1;
        }
      }
    }
    pos = eol + 1;
  }
  if (seps === 0) starts.push(head !== 0 ? head : 1);
  if (starts.length === 1) return [{ value: parsed, line: starts[0]! }];
  if (!Array.isArray(parsed) || parsed.length !== starts.length) return undefined;
  return parsed.map((value, i) => ({ value, line: starts[i]! }));
}

/** Parses manifest text (multi-document YAML or JSON) into a ClusterState (`exact`: always the `yaml` library). Throws InputError with every problem. */
export function manifestsFromText(text: string, file: string, opts: { exact?: boolean } = {}): ClusterState {
  const c = new Collector();
  if (opts.exact) c.addTextExact(text, file);
  else c.addText(text, file);
  if (c.problems.length > 0) throw new InputError(c.problems);
  return c.state;
}

const MANIFEST_EXT = /\.(ya?ml|json)$/i;

function listDir(dir: string): string[] {
  const out: string[] = [];
  for (const ent of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) out.push(...listDir(p));
    else if (ent.isFile() && MANIFEST_EXT.test(ent.name)) out.push(p);
  }
  return out;
}

/**
 * Reads manifests from files, directories (recursive *.yaml, *.yml, *.json, in name order) and `-`
 * (stdin) into one ClusterState. Throws InputError listing every problem in every file.
 */
export async function readManifests(paths: string[]): Promise<ClusterState> {
  const c = new Collector();
  for (const p of paths) {
    if (p === "-") {
      c.addText(await Bun.stdin.text(), "<stdin>");
      continue;
    }
    let files: string[];
    try {
      files = statSync(p).isDirectory() ? listDir(p) : [p];
    } catch (e) {
      c.problems.push({
        file: p,
        message: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      });
      continue;
    }
    if (files.length === 0) mlog.warn(`${p}: no *.yaml, *.yml or *.json files in this directory`);
    for (const f of files) {
      let text: string;
      try {
        text = readFileSync(f, "utf8");
      } catch (e) {
        c.problems.push({
          file: f,
          message: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        });
        continue;
      }
      c.addText(text, f);
    }
  }
  if (c.problems.length > 0) throw new InputError(c.problems);
  return c.state;
}
