/**
 * A generator of malformed and hostile inputs for `kpr apply`: manifests (truncations, type
 * confusion, special addresses, duplicate keys, huge and deep documents, binary junk, alias
 * bombs) and configs (the same, for the config file). Deterministic for a seed.
 */

/** One input: what it is, and the files it consists of. */
export interface HostileCase {
  name: string;
  /** "manifest": applied with the valid config; "config": the valid manifest applied with it */
  target: "manifest" | "config";
  content: string | Uint8Array;
}

/** A small PRNG (mulberry32), so a failing case can be regenerated from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The valid manifest the corpus mutates: a NodePort service, its slice, a hostPort pod. */
export function baseManifest(): string {
  return `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  externalIPs: [192.0.2.10]
  loadBalancerSourceRanges: [10.0.0.0/8]
  ports:
  - name: http
    port: 80
    targetPort: 8080
    nodePort: 30080
    protocol: TCP
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
endpoints:
- addresses: [10.244.0.5]
  conditions: {ready: true}
  nodeName: node-1
- addresses: [10.244.0.6]
  conditions: {ready: true}
  nodeName: node-2
---
apiVersion: v1
kind: Pod
metadata:
  name: hp
  namespace: default
spec:
  nodeName: node-1
  containers:
  - name: c
    ports:
    - containerPort: 9000
      hostPort: 9000
      hostIP: 127.0.0.1
status:
  phase: Running
  podIP: 10.244.0.7
`;
}

/** The valid config the corpus mutates (bpf.root and cgroup.root are added by the test). */
export function baseConfig(): string {
  return `socketLB:
  enabled: false
nodeName: node-1
loadBalancer:
  mode: snat
nodePort:
  range: "30000-32767"
`;
}

const SPECIAL = [
  "0.0.0.0",
  "127.0.0.1",
  "255.255.255.255",
  "224.0.0.1",
  "169.254.1.1",
  "::",
  "::1",
  "1.2.3.4.5",
  "",
  "x",
];
const CONFUSION = [
  "[]",
  "{}",
  "[[[]]]",
  "-1",
  "99999999999999999999",
  "1.5",
  "true",
  "null",
  '"80"',
  "0x50",
  "0120",
  "~",
  "!!binary AAAA",
  "&a x",
];

function nesting(depth: number): string {
  return `${"[".repeat(depth)}${"]".repeat(depth)}`;
}

function aliasBomb(levels: number): string {
  const lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
  for (let i = 1; i < levels; i++)
    lines.push(
      `a${i}: &a${i} [${Array(9)
        .fill(`*a${i - 1}`)
        .join(",")}]`,
    );
  return `${lines.join("\n")}\n`;
}

function junk(rand: () => number, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = Math.floor(rand() * 256);
  return out;
}

/** Replaces the value of the n-th `key: value` line of text with `value`. */
function replaceValue(text: string, rand: () => number, value: string): string {
  const lines = text.split("\n");
  const idx = lines.map((l, i) => (/^\s*-?\s*[A-Za-z]+: \S/.test(l) ? i : -1)).filter((i) => i >= 0);
  const i = idx[Math.floor(rand() * idx.length)]!;
  lines[i] = lines[i]!.replace(/: .*$/, `: ${value}`);
  return lines.join("\n");
}

/** The corpus for `seed`: `n` generated cases plus a fixed set of the nastiest ones. */
export function hostileCorpus(seed: number, n: number): HostileCase[] {
  const rand = prng(seed);
  const m = baseManifest();
  const c = baseConfig();
  const out: HostileCase[] = [
    { name: "empty manifest", target: "manifest", content: "" },
    { name: "manifest: binary junk 64 KiB", target: "manifest", content: junk(rand, 65536) },
    {
      name: "manifest: 1 MB of YAML junk",
      target: "manifest",
      content: "a: [\n- b: {\n  c: d: e\n".repeat(45000),
    },
    { name: "manifest: nesting 100,000 deep", target: "manifest", content: `kind: ${nesting(100_000)}\n` },
    {
      name: "manifest: JSON nesting 100,000 deep",
      target: "manifest",
      content: `{"kind":${nesting(100_000)}}`,
    },
    { name: "manifest: alias bomb", target: "manifest", content: `${aliasBomb(9)}kind: Service\n` },
    {
      name: "manifest: alias bomb in a field kpr reads",
      target: "manifest",
      content: m.replace(
        "  externalIPs: [192.0.2.10]",
        `  externalIPs: &x [${Array(50).fill('"1.2.3.4"').join(",")}]\n  x: [*x,*x,*x,*x]`,
      ),
    },
    { name: "manifest: 20 MB file", target: "manifest", content: `# ${"x".repeat(20 * 1024 * 1024)}\n` },
    {
      name: "manifest: 5,000 documents of one bad Service each",
      target: "manifest",
      content: `${"apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: 7}\n---\n".repeat(5000)}`,
    },
    {
      name: "manifest: nested duplicate key",
      target: "manifest",
      content: m.replace("    port: 80\n", "    port: 80\n    port: 81\n"),
    },
    {
      name: "manifest: invalid UTF-8",
      target: "manifest",
      content: new Uint8Array([...new TextEncoder().encode(m), 0xff, 0xfe, 0xc0]),
    },
    {
      name: "manifest: a 1 MB string",
      target: "manifest",
      content: m.replace("name: web\n", `name: ${"w".repeat(1 << 20)}\n`),
    },
    { name: "config: alias bomb", target: "config", content: aliasBomb(9) },
    { name: "config: binary junk", target: "config", content: junk(rand, 4096) },
    { name: "config: 20 MB", target: "config", content: `# ${"x".repeat(20 * 1024 * 1024)}\n` },
    { name: "config: nesting 100,000 deep", target: "config", content: `devices: ${nesting(100_000)}\n` },
    { name: "config: duplicate key", target: "config", content: `${c}nodeName: node-2\n` },
  ];
  for (let i = 0; i < n; i++) {
    const kind = Math.floor(rand() * 6);
    const target = rand() < 0.75 ? "manifest" : "config";
    const base = target === "manifest" ? m : c;
    let content: string;
    let name: string;
    if (kind === 0) {
      const at = Math.floor(rand() * base.length);
      content = base.slice(0, at);
      name = `truncated at ${at}`;
    } else if (kind === 1 || kind === 2) {
      const v = CONFUSION[Math.floor(rand() * CONFUSION.length)]!;
      content = replaceValue(base, rand, v);
      name = `a value replaced by ${v}`;
    } else if (kind === 3 && target === "manifest") {
      const v = SPECIAL[Math.floor(rand() * SPECIAL.length)]!;
      const which = ["10.96.0.10", "192.0.2.10", "10.244.0.5", "127.0.0.1", "10.0.0.0/8"][
        Math.floor(rand() * 5)
      ]!;
      content = base.replace(which, v);
      name = `${which} replaced by ${JSON.stringify(v)}`;
    } else if (kind === 4) {
      const at = Math.floor(rand() * base.length);
      const bytes = junk(rand, 16);
      content = base.slice(0, at) + String.fromCharCode(...bytes) + base.slice(at);
      name = `16 junk bytes at ${at}`;
    } else {
      const lines = base.split("\n");
      const i1 = Math.floor(rand() * lines.length);
      const i2 = Math.floor(rand() * lines.length);
      [lines[i1], lines[i2]] = [lines[i2]!, lines[i1]!];
      content = lines.join("\n");
      name = `lines ${i1 + 1} and ${i2 + 1} swapped`;
    }
    out.push({ name: `${target}: ${name}`, target, content });
  }
  return out;
}
