import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readSync,
  realpathSync,
  type Stats,
  statSync,
} from "node:fs";
import { join } from "node:path";
import { LineCounter, parseAllDocuments, type ScalarTag } from "yaml";
import { InputError, type InputProblem } from "../errors.ts";
import { log } from "../log.ts";
import { findDuplicateKeys } from "./dupkeys.ts";
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
  | { object: { [field: string]: Shape }; fields: [string, Shape][]; known?: Set<string> };

// `fields` is the object's entries, listed once (decode runs for every field of every object).
// `also`: fields of the Kubernetes type that kpr does not read; any other field is unknown (a
// typo, warned about as kubectl's strict field validation does). Without `also`, not checked.
const obj = (fields: { [field: string]: Shape }, also?: string): Shape => ({
  object: fields,
  fields: Object.entries(fields),
  ...(also !== undefined
    ? { known: new Set([...Object.keys(fields), ...also.split(/\s+/).filter(Boolean)]) }
    : {}),
});
const arr = (of: Shape): Shape => ({ array: of });

const META = obj(
  { name: "string", namespace: "string", labels: "stringMap", annotations: "stringMap" },
  "generateName selfLink uid resourceVersion generation creationTimestamp deletionTimestamp deletionGracePeriodSeconds ownerReferences finalizers managedFields clusterName",
);
const ENDPOINT_PORT = obj({ name: "string", protocol: "string", port: "int" }, "appProtocol");
const ENDPOINT_ADDRESS = obj({ ip: "string", nodeName: "string" }, "hostname targetRef");
const TOP = "apiVersion kind";
const POD_SPEC =
  "volumes initContainers ephemeralContainers restartPolicy terminationGracePeriodSeconds activeDeadlineSeconds dnsPolicy nodeSelector serviceAccountName serviceAccount automountServiceAccountToken hostPID hostIPC shareProcessNamespace securityContext imagePullSecrets hostname subdomain affinity schedulerName tolerations hostAliases priorityClassName priority dnsConfig readinessGates runtimeClassName enableServiceLinks preemptionPolicy overhead topologySpreadConstraints setHostnameAsFQDN os hostUsers schedulingGates resourceClaims resources";
const CONTAINER =
  "image command args workingDir envFrom env resources resizePolicy restartPolicy volumeMounts volumeDevices livenessProbe readinessProbe startupProbe lifecycle terminationMessagePath terminationMessagePolicy imagePullPolicy securityContext stdin stdinOnce tty";
const POD_STATUS =
  "conditions message reason nominatedNodeName hostIP hostIPs startTime initContainerStatuses containerStatuses qosClass ephemeralContainerStatuses resize resourceClaimStatuses observedGeneration";
const NODE_STATUS =
  "capacity allocatable phase conditions daemonEndpoints nodeInfo images volumesInUse volumesAttached config runtimeHandlers features";

/** Shapes per kind, with the apiVersion each kind must have. */
const KINDS: Record<
  string,
  { apiVersion: string; shape: Shape; namespaced: boolean; bucket: keyof ClusterState }
> = {
  Service: {
    apiVersion: "v1",
    namespaced: true,
    bucket: "services",
    shape: obj(
      {
        metadata: META,
        spec: obj(
          {
            type: "string",
            clusterIP: "string",
            clusterIPs: arr("string"),
            ipFamilies: arr("string"),
            ports: arr(
              obj(
                {
                  name: "string",
                  protocol: "string",
                  port: "int",
                  targetPort: "intOrString",
                  nodePort: "int",
                },
                "appProtocol",
              ),
            ),
            externalIPs: arr("string"),
            externalName: "string",
            externalTrafficPolicy: "string",
            internalTrafficPolicy: "string",
            healthCheckNodePort: "int",
            sessionAffinity: "string",
            sessionAffinityConfig: obj({ clientIP: obj({ timeoutSeconds: "int" }, "") }, ""),
            loadBalancerSourceRanges: arr("string"),
            publishNotReadyAddresses: "bool",
            selector: "stringMap",
          },
          "loadBalancerIP ipFamilyPolicy allocateLoadBalancerNodePorts loadBalancerClass trafficDistribution",
        ),
        status: obj(
          {
            loadBalancer: obj(
              { ingress: arr(obj({ ip: "string", hostname: "string", ipMode: "string" }, "ports")) },
              "",
            ),
          },
          "conditions",
        ),
      },
      TOP,
    ),
  },
  EndpointSlice: {
    apiVersion: "discovery.k8s.io/v1",
    namespaced: true,
    bucket: "endpointSlices",
    shape: obj(
      {
        metadata: META,
        addressType: "string",
        endpoints: arr(
          obj(
            {
              addresses: arr("string"),
              conditions: obj({ ready: "bool", serving: "bool", terminating: "bool" }, ""),
              nodeName: "string",
              zone: "string",
              hints: obj(
                { forZones: arr(obj({ name: "string" }, "")), forNodes: arr(obj({ name: "string" }, "")) },
                "",
              ),
            },
            "hostname targetRef deprecatedTopology",
          ),
        ),
        ports: arr(ENDPOINT_PORT),
      },
      TOP,
    ),
  },
  Endpoints: {
    apiVersion: "v1",
    namespaced: true,
    bucket: "endpoints",
    shape: obj(
      {
        metadata: META,
        subsets: arr(
          obj(
            {
              addresses: arr(ENDPOINT_ADDRESS),
              notReadyAddresses: arr(ENDPOINT_ADDRESS),
              ports: arr(ENDPOINT_PORT),
            },
            "",
          ),
        ),
      },
      TOP,
    ),
  },
  Pod: {
    apiVersion: "v1",
    namespaced: true,
    bucket: "pods",
    shape: obj(
      {
        metadata: META,
        spec: obj(
          {
            nodeName: "string",
            hostNetwork: "bool",
            containers: arr(
              obj(
                {
                  name: "string",
                  ports: arr(
                    obj(
                      {
                        name: "string",
                        containerPort: "int",
                        hostPort: "int",
                        hostIP: "string",
                        protocol: "string",
                      },
                      "",
                    ),
                  ),
                },
                CONTAINER,
              ),
            ),
          },
          POD_SPEC,
        ),
        status: obj({ phase: "string", podIP: "string", podIPs: arr(obj({ ip: "string" }, "")) }, POD_STATUS),
      },
      TOP,
    ),
  },
  Node: {
    apiVersion: "v1",
    namespaced: false,
    bucket: "nodes",
    shape: obj(
      {
        metadata: META,
        spec: obj({}),
        status: obj({ addresses: arr(obj({ type: "string", address: "string" }, "")) }, NODE_STATUS),
      },
      TOP,
    ),
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
  unknown?: (field: string, key: string) => void,
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
      const d = decode(v[i], shape.array, path, bad, unknown);
      path.pop();
      if (d !== undefined) out.push(d);
    }
    return out;
  }
  if (typeof v !== "object" || Array.isArray(v)) return mismatch(v, path, bad, "a mapping");
  const out: Record<string, unknown> = {};
  if (shape.known && unknown)
    for (const k of Object.keys(v)) if (!shape.known.has(k)) unknown(pathText([...path, k]), k);
  for (const [k, s] of shape.fields) {
    const x = (v as Record<string, unknown>)[k];
    if (x === null || x === undefined) continue;
    path.push(k);
    const d = decode(x, s, path, bad, unknown);
    path.pop();
    if (d !== undefined) out[k] = d;
  }
  return out;
}

/** Collects objects from parsed documents into a ClusterState, recording problems. */
class Collector {
  readonly state = emptyClusterState();
  readonly problems: InputProblem[] = [];
  /** problems found beyond MAX_PROBLEMS: counted, not kept */
  more = 0;
  /** bytes of large files' documents the (slow) exact path may still parse in this run */
  private exactBudget = EXACT_MAX;
  /** fields the Kubernetes API does not know, per file (lines resolved once the file is read) */
  private unknown: { line: number; object: string; field: string; key: string }[] = [];
  unknownCount = 0;
  private readonly seen = new Map<string, ObjectSource>();

  /** Records a problem; past MAX_PROBLEMS only counts it. */
  problem(p: InputProblem): void {
    if (this.problems.length < MAX_PROBLEMS) this.problems.push(p);
    else this.more++;
  }

  /** Whether enough problems are known that reading further is pointless. */
  get full(): boolean {
    return this.problems.length >= MAX_PROBLEMS;
  }

  /** The InputError for what was collected (the first MAX_PROBLEMS, and a count of the rest). */
  error(): InputError {
    const shown = [...this.problems];
    if (this.more > 0)
      shown.push({
        message: `... and ${this.more} more problems (only the first ${MAX_PROBLEMS} are listed)`,
      });
    return new InputError(shown);
  }

  /** Warns about the unknown fields found in `text` (file `file`), with their lines. */
  warnUnknown(text: string, file: string): void {
    for (const u of this.unknown) {
      this.unknownCount++;
      if (this.unknownCount > MAX_WARNINGS) continue;
      const line = lineOfKey(text, u.line, u.key) ?? u.line;
      mlog.warn(
        `${file}:${line}: ${u.object}: ${u.field}: unknown field (the Kubernetes API does not know it; kpr ignores it — a typo?)`,
      );
    }
    this.unknown = [];
  }

  add(raw: unknown, source: ObjectSource): void {
    const where = { file: source.file, line: source.line };
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      this.problem({
        ...where,
        message: `expected a Kubernetes object (a mapping), got ${typeName(raw)}`,
      });
      return;
    }
    const o = raw as Record<string, unknown>;
    const kind = o.kind;
    if (typeof kind !== "string" || kind === "") {
      this.problem({ ...where, field: "kind", message: "required: every object needs a kind" });
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
    const object = `${kind} ${ns !== undefined ? `${ns.slice(0, 63)}/` : ""}${name !== undefined ? name.slice(0, 253) : "<unnamed>"}`;
    if (o.apiVersion !== spec.apiVersion) {
      this.problem({
        ...where,
        object,
        field: "apiVersion",
        message: `got ${typeName(o.apiVersion)}, expected "${spec.apiVersion}"`,
      });
      return;
    }
    let typeErrors = 0;
    const decoded = decode(
      raw,
      spec.shape,
      [],
      (field, message) => {
        typeErrors++;
        this.problem({ ...where, object, field, message });
      },
      (field, key) => this.unknown.push({ line: source.line ?? 1, object, field, key }),
    ) as Record<string, unknown> | undefined;
    if (decoded === undefined || typeErrors > 0) return;
    const meta = (decoded.metadata ?? {}) as Record<string, unknown>;
    if (name === undefined || name === "") {
      this.problem({ ...where, object, field: "metadata.name", message: "required" });
      return;
    }
    if (name.length > 253 || (ns?.length ?? 0) > 63) {
      const field = name.length > 253 ? "metadata.name" : "metadata.namespace";
      this.problem({
        ...where,
        object: `${kind} ${(ns ?? "").slice(0, 63)}${ns !== undefined ? "/" : ""}${name.slice(0, 63)}…`,
        field,
        message: `longer than the Kubernetes API allows (${field === "metadata.name" ? 253 : 63} characters)`,
      });
      return;
    }
    if (ns !== undefined) meta.namespace = ns;
    decoded.metadata = meta;
    decoded.kind = kind;
    decoded.source = source;
    const key = `${kind} ${ns ?? ""}/${name}`;
    const first = this.seen.get(key);
    if (first !== undefined) {
      this.problem({
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
    if (text.includes("\0")) {
      this.problem({ file, message: "binary data, not YAML or JSON (a NUL byte)" });
      return;
    }
    for (const d of findDuplicateKeys(text, MAX_PROBLEMS)) {
      this.problem({
        file,
        line: d.line,
        field: d.key,
        message: `duplicate key (first at line ${d.firstLine}; the Kubernetes API rejects it)`,
      });
    }
    if (this.full) return;
    // JSON (kubectl get -o json): JSON.parse is ~8x faster than the YAML parser on the same bytes.
    // A List in a file of human size still takes the exact path, for each item's own line.
    const json = parseJson(text);
    if (json) {
      const list = isList(json.value) ? (json.value as { items: unknown[] }).items : undefined;
      // each item of a List of human size at its own line, found by a scan of the JSON text
      const lines = list && text.length <= EXACT_LIST_MAX ? jsonItemLines(text) : undefined;
      if (!list || text.length > EXACT_LIST_MAX || lines?.length === list.length) {
        if (list)
          for (let i = 0; i < list.length; i++) this.add(list[i], { file, line: lines?.[i] ?? json.line });
        else if (json.value !== null) this.add(json.value, { file, line: json.line });
        this.warnUnknown(text, file);
        return;
      }
    }
    // YAML 1.1 (the Kubernetes API's reader) takes 0120 for octal 80, Bun's parser for 120;
    // aliases can make a small text a huge object: both go to the exact path.
    const special = LEADING_ZERO.test(text) || ALIAS.test(text);
    const fast = special ? undefined : fastParse(text);
    // A List in a file of human size: take the exact path so each item gets its own line.
    const hasList = fast?.some(({ value }) => isList(value)) ?? false;
    if (fast === undefined || (hasList && text.length <= EXACT_LIST_MAX)) {
      if (text.length <= EXACT_MAX) this.addTextExact(text, file);
      else this.addTextByDocument(text, file);
    } else {
      for (const { value, line } of fast) {
        // Empty documents ("---" at the end) are skipped; List items share the List's line here.
        if (value !== null && value !== undefined) this.add(value, { file, line });
      }
    }
    this.warnUnknown(text, file);
  }

  /**
   * A large file the fast parser refused as a whole: each document on its own, through the
   * fast parser, and through the exact path (for lines) only when it is small.
   */
  addTextByDocument(text: string, file: string): void {
    let line = 1;
    for (const doc of splitDocuments(text)) {
      if (this.full) return;
      const startLine = line;
      line += countLines(doc);
      if (doc.trim() === "" || /^---\s*$/.test(doc.trim())) continue;
      const special = LEADING_ZERO.test(doc) || ALIAS.test(doc);
      let value: unknown;
      let ok = false;
      if (!special) {
        try {
          value = Bun.YAML.parse(doc);
          ok = true;
        } catch {}
      }
      if (ok) {
        if (value !== null && value !== undefined) {
          if (isList(value))
            for (const item of (value as { items: unknown[] }).items)
              this.add(item, { file, line: startLine });
          else this.add(value, { file, line: startLine });
        }
        continue;
      }
      if (doc.length <= EXACT_DOC_MAX && doc.length <= this.exactBudget) {
        this.exactBudget -= doc.length;
        this.addTextExact(doc, file, startLine - 1);
        continue;
      }
      this.problem({
        file,
        line: startLine,
        message: special
          ? `a document of ${doc.length} bytes with YAML aliases or numbers with a leading zero: not read (write numbers in decimal, expand the aliases, or split the file)`
          : `invalid YAML in a document of ${doc.length} bytes (not located further: check it with a YAML linter)`,
      });
    }
  }

  /** The exact path (the `yaml` library): every error with its line, each List item with its own line. */
  addTextExact(text: string, file: string, lineOffset = 0): void {
    const lineCounter = new LineCounter();
    const docs = parseAllDocuments(text, {
      lineCounter,
      prettyErrors: false,
      customTags: (tags) => [OCTAL_INT, ...tags],
    });
    if (!Array.isArray(docs)) return; // an empty stream
    for (const doc of docs) {
      const lineAt = (offset: number) => lineOffset + lineCounter.linePos(offset).line;
      if (doc.errors.length > 0) {
        for (const e of doc.errors) {
          if (this.full) return;
          this.problem({
            file,
            line: lineAt(e.pos[0]),
            message: `invalid YAML: ${e.message.split("\n")[0]}`,
          });
        }
        continue;
      }
      let js: unknown;
      try {
        js = doc.toJS({ maxAliasCount: 100 });
      } catch (e) {
        this.problem({
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
/** Largest file the exact path parses whole (the `yaml` library needs ~3 s per 100 KiB of junk). */
const EXACT_MAX = 256 * 1024;
/** Largest single document of a bigger file that the exact path parses. */
const EXACT_DOC_MAX = 64 * 1024;
/** Problems kept (and printed); the rest are counted. */
export const MAX_PROBLEMS = 100;
/** Unknown-field warnings printed; the rest are counted. */
const MAX_WARNINGS = 50;
/** Largest manifest file kpr reads (checked before reading: bigger ones are refused); a dump of a 10,000-service cluster (about 19 MB of YAML) fits. */
export const MAX_FILE_BYTES = 32 * 1024 * 1024;
/** Largest total of manifest bytes one run reads. */
export const MAX_TOTAL_BYTES = 32 * 1024 * 1024;

/** A plain scalar with a leading zero (0120): an octal number to the Kubernetes API's reader. */
const LEADING_ZERO = /(?:^|[\s[,{:-])[-+]?0[0-9][0-9_]*[ \t]*(?:$|[,\]}#\r])/m;
/** YAML 1.1's octal integers (0120 = 80), as the Kubernetes API's YAML reader takes them. */
const OCTAL_INT: ScalarTag = {
  tag: "tag:yaml.org,2002:int",
  default: true,
  test: /^[-+]?0[0-7]+$/,
  resolve: (s: string) => Number.parseInt(s, 8),
};

/** A YAML alias (`*name`) in a value position. */
const ALIAS = /(?:^|[\s[,:-])\*[^\s,\]}]+/m;

/** The documents of a YAML stream, split at `---` lines (each keeps its separator line). */
function splitDocuments(text: string): string[] {
  const out: string[] = [];
  const re = /^---(?:\s|$)/gm;
  let last = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    last = m.index;
    if (m[0].length === 0) re.lastIndex++;
  }
  out.push(text.slice(last));
  return out;
}

function countLines(s: string): number {
  let n = 0;
  for (let i = s.indexOf("\n"); i >= 0; i = s.indexOf("\n", i + 1)) n++;
  return n;
}

/** The 1-based line, from `from` on, where `key` appears as a mapping key (YAML or JSON). */
function lineOfKey(text: string, from: number, key: string): number | undefined {
  const esc = key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const re = new RegExp(`(?:^|[\\s{,-])["']?${esc}["']?\\s*:`);
  let line = 1;
  let pos = 0;
  while (line < from) {
    const e = text.indexOf("\n", pos);
    if (e < 0) return undefined;
    pos = e + 1;
    line++;
  }
  for (let n = 0; pos <= text.length && n < 100_000; n++) {
    let e = text.indexOf("\n", pos);
    if (e < 0) e = text.length;
    if (re.test(text.slice(pos, e))) return line;
    pos = e + 1;
    line++;
  }
  return undefined;
}

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

/**
 * The line each element of the top-level object's "items" array starts on, in a JSON text that
 * JSON.parse accepted (so strings and nesting are well formed); undefined when there is no such
 * array. A scan for strings, nesting and newlines: ~50x cheaper than the YAML library's parse,
 * which gave the lines before.
 */
function jsonItemLines(text: string): number[] | undefined {
  let line = 1;
  let depth = 0;
  let key = "";
  let inItems = false;
  let itemsDepth = -1;
  let expectValue = false;
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 10) {
      line++;
      continue;
    }
    if (c === 34 /* " */) {
      const start = i + 1;
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 92 /* \ */) i++;
        else if (d === 34) break;
        else if (d === 10) line++;
      }
      if (inItems && depth === itemsDepth && expectValue) {
        out.push(line);
        expectValue = false;
      } else if (depth === 1) key = text.slice(start, i);
      continue;
    }
    if (c === 123 /* { */ || c === 91 /* [ */) {
      if (inItems && depth === itemsDepth && expectValue) {
        out.push(line);
        expectValue = false;
      }
      depth++;
      if (c === 91 && depth === 2 && key === "items" && itemsDepth < 0) {
        inItems = true;
        itemsDepth = 2;
        expectValue = true;
      }
      continue;
    }
    if (c === 125 /* } */ || c === 93 /* ] */) {
      if (inItems && depth === itemsDepth && c === 93) inItems = false;
      depth--;
      continue;
    }
    if (c === 44 /* , */ && inItems && depth === itemsDepth) {
      expectValue = true;
      continue;
    }
    if (inItems && depth === itemsDepth && expectValue && c > 32) {
      out.push(line); // a number, true, false or null item
      expectValue = false;
    }
  }
  return itemsDepth < 0 ? undefined : out;
}

/**
 * The value of a text that is one JSON object (first non-blank character "{") and the line it
 * starts on; undefined for anything else (YAML, several documents, invalid JSON: the YAML paths
 * then read it and report its problems).
 */
function parseJson(text: string): { value: unknown; line: number } | undefined {
  let i = 0;
  let line = 1;
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 10) line++;
    else if (c !== 32 && c !== 9 && c !== 13 && c !== 0xfeff) break;
  }
  if (text.charCodeAt(i) !== 123 /* { */) return undefined;
  try {
    return { value: JSON.parse(text), line };
  } catch {
    return undefined;
  }
}

/** Parses manifest text (multi-document YAML or JSON) into a ClusterState (`exact`: always the `yaml` library). Throws InputError with every problem. */
export function manifestsFromText(text: string, file: string, opts: { exact?: boolean } = {}): ClusterState {
  const c = new Collector();
  if (opts.exact) c.addTextExact(text, file);
  else c.addText(text, file);
  if (c.problems.length > 0) throw c.error();
  return c.state;
}

const MANIFEST_EXT = /\.(ya?ml|json)$/i;
const mib = (n: number) => `${Math.round(n / 1024 / 1024)} MiB`;

/** What kind of thing a stat describes, for a problem ("a FIFO", "a character device"). */
function fileKind(st: Stats): string {
  if (st.isFIFO()) return "a FIFO";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  if (st.isSocket()) return "a socket";
  if (st.isDirectory()) return "a directory";
  return "not a regular file";
}

/**
 * Manifest files under `dir` (recursive, name order). Symlinks to regular files are followed
 * (and said so); symlinks to directories are not followed (a loop is possible), and said so;
 * other special files with a manifest name are problems.
 */
function listDir(dir: string, c: Collector, depth = 0): string[] {
  const out: string[] = [];
  if (depth > 32) {
    c.problem({ file: dir, message: "directories nested more than 32 deep: not read" });
    return out;
  }
  for (const ent of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) out.push(...listDir(p, c, depth + 1));
    else if (!MANIFEST_EXT.test(ent.name)) continue;
    else if (ent.isFile()) out.push(p);
    else if (ent.isSymbolicLink()) {
      let st: Stats;
      try {
        st = statSync(p);
      } catch (e) {
        c.problem({ file: p, message: `broken symlink: ${(e as NodeJS.ErrnoException).code ?? e}` });
        continue;
      }
      if (st.isFile()) {
        mlog.info(`${p}: following the symlink to ${realpathSync(p)}`);
        out.push(p);
      } else if (st.isDirectory())
        mlog.warn(`${p}: a symlink to a directory, not followed (name it with -f to read it)`);
      else c.problem({ file: p, message: `${fileKind(st)}, not a regular file: not read` });
    } else c.problem({ file: p, message: "not a regular file (a FIFO, socket or device): not read" });
  }
  return out;
}

/** Reads a regular file of at most `limit` bytes; never blocks on a FIFO or device. */
function readBounded(path: string, limit: number): { text?: string; problem?: string } {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    return { problem: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { problem: `${fileKind(st)}, not a regular file: not read` };
    if (st.size > limit)
      return {
        problem: `${mib(st.size)} is more than kpr reads (${mib(MAX_FILE_BYTES)} per file, ${mib(MAX_TOTAL_BYTES)} in all): split the input or apply it in parts`,
      };
    const buf = Buffer.allocUnsafe(Math.min(st.size, limit) + 1);
    let n = 0;
    for (;;) {
      const r = readSync(fd, buf, n, buf.length - n, null);
      if (r === 0) break;
      n += r;
      if (n === buf.length) return { problem: `grew past ${mib(limit)} while being read: not read` };
    }
    return { text: buf.toString("utf8", 0, n) };
  } catch (e) {
    return { problem: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` };
  } finally {
    closeSync(fd);
  }
}

/** Reads stdin up to `limit` bytes; undefined when there is more. */
async function readStdinBounded(limit: number): Promise<string | undefined> {
  const chunks: Uint8Array[] = [];
  let n = 0;
  for await (const chunk of Bun.stdin.stream()) {
    n += chunk.length;
    if (n > limit) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * Reads manifests from files, directories (recursive *.yaml, *.yml, *.json, in name order) and `-`
 * (stdin) into one ClusterState. Reads regular files only (symlinks to them followed), at most
 * MAX_FILE_BYTES each and MAX_TOTAL_BYTES in all. Throws InputError listing the problems (the
 * first MAX_PROBLEMS, and how many more).
 */
export async function readManifests(paths: string[]): Promise<ClusterState> {
  const c = new Collector();
  let budget = MAX_TOTAL_BYTES;
  const parse = (text: string, file: string) => {
    budget -= text.length;
    try {
      c.addText(text, file);
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      c.problem({ file, message: "nested too deeply to read (a hostile or broken document?)" });
    }
  };
  for (const p of paths) {
    if (c.full) {
      c.more++;
      continue;
    }
    if (p === "-") {
      const text = await readStdinBounded(Math.min(MAX_FILE_BYTES, budget));
      if (text === undefined)
        c.problem({
          file: "<stdin>",
          message: `more than ${mib(MAX_FILE_BYTES)}: not read (split the input)`,
        });
      else parse(text, "<stdin>");
      continue;
    }
    let files: string[];
    try {
      const st = statSync(p);
      if (lstatSync(p).isSymbolicLink()) mlog.info(`${p}: following the symlink to ${realpathSync(p)}`);
      files = st.isDirectory() ? listDir(p, c) : [p];
    } catch (e) {
      c.problem({
        file: p,
        message: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      });
      continue;
    }
    if (files.length === 0) mlog.warn(`${p}: no *.yaml, *.yml or *.json files in this directory`);
    for (const f of files) {
      if (c.full) {
        c.more++;
        continue;
      }
      const r = readBounded(f, Math.min(MAX_FILE_BYTES, Math.max(budget, 0)));
      if (r.problem !== undefined) c.problem({ file: f, message: r.problem });
      else parse(r.text!, f);
    }
  }
  if (c.unknownCount > MAX_WARNINGS)
    mlog.warn(
      `${c.unknownCount - MAX_WARNINGS} more unknown fields (only the first ${MAX_WARNINGS} are listed)`,
    );
  if (c.problems.length > 0) throw c.error();
  return c.state;
}
