import { afterAll, describe, expect, it } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InputError } from "../../src/errors.ts";
import { manifestsFromText, readManifests } from "../../src/k8s/manifest.ts";

const dir = mkdtempSync(join(tmpdir(), "kprB-manifest-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof InputError) {
      return e.problems.map((p) =>
        [`${p.file}:${p.line ?? "-"}`, p.object, p.field, p.message].filter(Boolean).join(" | "),
      );
    }
    throw e;
  }
  throw new Error("expected an InputError");
}

const SVC = `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.1
  ports: [{port: 80, targetPort: http}]
  unknownField: kept-out
`;

describe("manifestsFromText", () => {
  it("reads multi-document YAML, defaults the namespace, keeps the source line, drops unknown fields", () => {
    const text = `${SVC}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\n# empty\n---\napiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 192.168.50.2}]}
`;
    const s = manifestsFromText(text, "m.yaml");
    expect(s).toEqual({
      services: [
        {
          kind: "Service",
          metadata: { name: "web", namespace: "default" },
          spec: { clusterIP: "10.96.0.1", ports: [{ port: 80, targetPort: "http" }] },
          source: { file: "m.yaml", line: 1 },
        },
      ],
      endpointSlices: [],
      endpoints: [],
      pods: [],
      nodes: [
        {
          kind: "Node",
          metadata: { name: "node-1" },
          status: { addresses: [{ type: "InternalIP", address: "192.168.50.2" }] },
          source: { file: "m.yaml", line: 15 },
        },
      ],
    });
  });

  it("keeps a Pod's hostNetwork (translate skips hostPorts of hostNetwork pods)", () => {
    const s = manifestsFromText(
      `apiVersion: v1
kind: Pod
metadata: {name: exporter, namespace: mon}
spec:
  nodeName: node-1
  hostNetwork: true
  containers: [{name: c, ports: [{containerPort: 9100, hostPort: 9100}]}]
status: {phase: Running, podIP: 192.168.50.2}
`,
      "p.yaml",
    );
    expect(s.pods[0]?.spec?.hostNetwork).toBe(true);
  });

  it("reads JSON and kind: List (each item with its own line)", () => {
    const json = JSON.stringify(
      {
        apiVersion: "v1",
        kind: "List",
        items: [
          {
            apiVersion: "v1",
            kind: "Service",
            metadata: { name: "a", namespace: "x" },
            spec: { clusterIP: "10.0.0.1" },
          },
          {
            apiVersion: "discovery.k8s.io/v1",
            kind: "EndpointSlice",
            metadata: { name: "a-1", namespace: "x", labels: { "kubernetes.io/service-name": "a" } },
            addressType: "IPv4",
            endpoints: [{ addresses: ["10.244.1.1"], conditions: { ready: true } }],
          },
        ],
      },
      null,
      2,
    );
    const s = manifestsFromText(json, "l.json");
    expect(s.services.map((x) => [x.metadata.namespace, x.metadata.name, x.source?.line])).toEqual([
      ["x", "a", 5],
    ]);
    expect(s.endpointSlices.map((x) => [x.metadata.name, x.source?.line, x.endpoints?.length])).toEqual([
      ["a-1", 16, 1],
    ]);
  });

  it.each([
    ["plain", `${SVC}---\n${SVC.replace("name: web", "name: b")}`],
    [
      "leading ---, comments, trailing ---",
      `# c\n---\n# d\n\n${SVC}---  # x\n\n${SVC.replace("name: web", "name: b")}---\n`,
    ],
    [
      "content on the --- line",
      "--- {apiVersion: v1, kind: Node, metadata: {name: n}}\n--- {apiVersion: v1, kind: Node, metadata: {name: m}}\n",
    ],
  ])("the fast path finds the same objects and lines as the yaml library: %s", (_name, text) => {
    expect(manifestsFromText(text, "f.yaml")).toEqual(manifestsFromText(text, "f.yaml", { exact: true }));
  });

  it("reports files concatenated without --- (duplicate keys) instead of merging objects", () => {
    const ps = problems(() => manifestsFromText(`${SVC}${SVC.replace("name: web", "name: b")}`, "cat.yaml"));
    expect(ps[0]).toMatch(/^cat\.yaml:8 \| apiVersion \| duplicate key \(first at line 1/);
  });

  it("reports unparsable YAML with its line", () => {
    expect(problems(() => manifestsFromText("kind: Service\nmetadata: {name: a\n", "bad.yaml"))[0]).toMatch(
      /^bad\.yaml:\d+ \| invalid YAML: /,
    );
  });

  it("reports every type error, missing kind/name, wrong apiVersion and duplicates together", () => {
    const text = `apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  ports: [{port: "eighty", nodePort: 1.5}]
  externalIPs: 1.2.3.4
---
metadata: {name: nokind}
---
apiVersion: v1
kind: Service
metadata: {namespace: x}
---
apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata: {name: old}
---
apiVersion: v1
kind: Pod
metadata: {name: p, labels: {version: 2}}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
---
- just a list
`;
    expect(problems(() => manifestsFromText(text, "m.yaml"))).toEqual([
      'm.yaml:1 | Service default/a | spec.ports[0].port | expected an integer, got string "eighty"',
      "m.yaml:1 | Service default/a | spec.ports[0].nodePort | expected an integer, got number 1.5",
      'm.yaml:1 | Service default/a | spec.externalIPs | expected a list, got string "1.2.3.4"',
      "m.yaml:8 | kind | required: every object needs a kind",
      "m.yaml:10 | Service x/<unnamed> | metadata.name | required",
      'm.yaml:14 | EndpointSlice default/old | apiVersion | got string "discovery.k8s.io/v1beta1", expected "discovery.k8s.io/v1"',
      "m.yaml:18 | Pod default/p | metadata.labels.version | expected a string, got number 2",
      "m.yaml:26 | expected a Kubernetes object (a mapping), got a list",
    ]);
  });

  it("reports an object defined twice", () => {
    expect(problems(() => manifestsFromText(`${SVC}---\n${SVC}`, "d.yaml"))).toEqual([
      "d.yaml:9 | Service default/web | defined twice (first in d.yaml:1)",
    ]);
  });
});

describe("JSON input (read with JSON.parse)", () => {
  const list = (n: number) => ({
    apiVersion: "v1",
    kind: "List",
    items: Array.from({ length: n }, (_, i) => ({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: `s${i}`, namespace: "ns" },
      spec: { clusterIP: `10.96.${i >> 8}.${i & 255}`, ports: [{ port: 80, targetPort: 8080 }] },
    })),
  });

  it("a large JSON List reads the same objects as the YAML reader, at the List's line", () => {
    const text = `\n\n${JSON.stringify(list(3000), null, 1)}`;
    expect(text.length, "past the exact path's List size").toBeGreaterThan(256 * 1024);
    const got = manifestsFromText(text, "big.json");
    const viaYaml = manifestsFromText(`# yaml\n${text}`, "big.json"); // a comment: not JSON, YAML path
    expect(got.services.length).toBe(3000);
    expect(got.services.map((s) => s.spec)).toEqual(viaYaml.services.map((s) => s.spec));
    expect(got.services[2999]?.source, "the List's line").toEqual({ file: "big.json", line: 3 });
  });

  it("a small JSON List still gives each item its own line", () => {
    const st = manifestsFromText(JSON.stringify(list(2), null, 2), "small.json");
    expect(st.services.map((s) => s.source?.line)).toEqual([5, 22]);
  });

  it("a JSON List's item lines (found by a scan, not the YAML library) equal the exact path's", () => {
    const items = [
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: 'a"b{[', namespace: "n", annotations: { x: '}]\\"' } },
      },
      {
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: "n1" },
        status: { addresses: [{ type: "InternalIP", address: "10.0.0.1" }] },
      },
      { apiVersion: "v1", kind: "Service", metadata: { name: "c", namespace: "n" } },
    ];
    for (const text of [
      JSON.stringify({ apiVersion: "v1", kind: "List", items }, null, 2),
      `{"kind":"List","metadata":{"items":[1]},"items":[\n${items.map((i) => JSON.stringify(i)).join(",\n\n")}\n],"apiVersion":"v1"}`,
    ]) {
      const fast = manifestsFromText(text, "l.json");
      const exact = manifestsFromText(text, "l.json", { exact: true });
      const lines = (st: typeof fast) =>
        [...st.services, ...st.nodes].map((o) => `${o.metadata.name}@${o.source?.line}`);
      expect(lines(fast)).toEqual(lines(exact));
    }
  });

  it("duplicate keys and invalid JSON are still reported with their lines", () => {
    expect(problems(() => manifestsFromText('{"kind": "Service",\n "kind": "Node"}', "d.json"))).toContain(
      "d.json:2 | kind | duplicate key (first at line 1; the Kubernetes API rejects it)",
    );
    expect(problems(() => manifestsFromText(`{"kind": "Service",\n "metadata": [}`, "x.json"))[0]).toMatch(
      /^x\.json:2 \| invalid YAML/,
    );
  });
});

describe("readManifests", () => {
  it("reads files and directories recursively (*.yaml, *.yml, *.json in name order)", async () => {
    const d = join(dir, "tree");
    mkdirSync(join(d, "sub"), { recursive: true });
    writeFileSync(join(d, "b.yaml"), SVC.replace("name: web", "name: b"));
    writeFileSync(join(d, "sub", "a.yml"), SVC.replace("name: web", "name: a"));
    writeFileSync(
      join(d, "c.json"),
      JSON.stringify({
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "c" },
        spec: { clusterIP: "10.0.0.3" },
      }),
    );
    writeFileSync(join(d, "notes.txt"), "not a manifest: {");
    const single = join(dir, "single.yaml");
    writeFileSync(single, SVC.replace("name: web", "name: s"));
    const s = await readManifests([d, single]);
    expect(s.services.map((x) => `${x.metadata.name}@${x.source?.file.slice(dir.length)}`)).toEqual([
      "b@/tree/b.yaml",
      "c@/tree/c.json",
      "a@/tree/sub/a.yml",
      "s@/single.yaml",
    ]);
  });

  it("reports missing paths and problems of several files in one error", async () => {
    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, "apiVersion: v1\nkind: Service\nmetadata: {name: 5}\n");
    let err: unknown;
    try {
      await readManifests([join(dir, "nope.yaml"), bad]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).problems.map((p) => [p.file?.slice(dir.length), p.field, p.message])).toEqual([
      ["/nope.yaml", undefined, "cannot read: ENOENT"],
      ["/bad.yaml", "metadata.name", "expected a string, got number 5"],
    ]);
  });
});
