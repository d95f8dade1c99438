import { afterAll, describe, expect, it } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultConfig } from "../../src/config/config.ts";
import {
  CONFIG_KEYS,
  configJsonSchema,
  loadConfig,
  parseConfig,
  parseConfigDetailed,
} from "../../src/config/load.ts";
import { InputError } from "../../src/errors.ts";

const dir = mkdtempSync(join(tmpdir(), "kpr-test-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof InputError)
      return e.problems.map((p) => `${p.line ?? "-"} ${p.field ?? ""}: ${p.message}`);
    throw e;
  }
  throw new Error("expected an InputError");
}

describe("parseConfig", () => {
  it("empty text gives the defaults", () => {
    expect(parseConfig("", "c.yaml")).toEqual(defaultConfig());
  });

  it("deep-merges the seed's Helm values onto the defaults", () => {
    const cfg = parseConfig(
      [
        'kubeProxyReplacement: "true"',
        'kubeProxyReplacementHealthzBindAddr: "0.0.0.0:1025"',
        "loadBalancer:",
        "  mode: dsr",
        "  acceleration: best-effort",
        "nodePort:",
        "  enabled: true",
        '  range: "30000,60000"',
      ].join("\n"),
      "c.yaml",
    );
    const want = defaultConfig();
    want.kubeProxyReplacementHealthzBindAddr = "0.0.0.0:1025";
    want.loadBalancer.mode = "dsr";
    want.loadBalancer.acceleration = "best-effort";
    want.nodePort.range = [30000, 60000];
    expect(cfg).toEqual(want);
  });

  it.each([
    ["kubeProxyReplacement: false", (c) => c.kubeProxyReplacement, false],
    ['kubeProxyReplacement: "false"', (c) => c.kubeProxyReplacement, false],
    ['nodePort: {range: "20000-20100"}', (c) => c.nodePort.range, [20000, 20100]],
    ["nodePort: {range: [1, 2]}", (c) => c.nodePort.range, [1, 2]],
    ['devices: "eth0, eth1 eth2"', (c) => c.devices, ["eth0", "eth1", "eth2"]],
    ["devices: [veth-a, veth-b]", (c) => c.devices, ["veth-a", "veth-b"]],
    ["maglev: {tableSize: 251}", (c) => c.maglev.tableSize, 251],
    ["bpf: {root: /sys/fs/bpf/x, lbMapMax: 1000}", (c) => c.bpf, { root: "/sys/fs/bpf/x", lbMapMax: 1000 }],
    [
      "socketLB: {enabled: false, hostNamespaceOnly: 'true'}",
      (c) => c.socketLB,
      { enabled: false, hostNamespaceOnly: true },
    ],
    ["k8s: {serviceProxyName: kpr}", (c) => c.k8s.serviceProxyName, "kpr"],
    ["nodeName: node-1", (c) => c.nodeName, "node-1"],
    ["loadBalancer:", (c) => c.loadBalancer, defaultConfig().loadBalancer],
  ] as [string, (c: ReturnType<typeof defaultConfig>) => unknown, unknown][])("%s", (text, pick, want) => {
    expect(pick(parseConfig(text, "c.yaml"))).toEqual(want);
  });

  it("reports every problem with its line, key path and expectation", () => {
    const text = [
      "loadBalancer:",
      "  mode: fast",
      "  algo: maglev",
      "maglev:",
      "  tableSize: 1000",
      "nodePort:",
      '  range: "40000-30000"',
      "  enabled: yes-please",
      "devices: 42",
      "bogus: 1",
      "cgroup: relative",
    ].join("\n");
    expect(problemsOf(() => parseConfig(text, "c.yaml"))).toEqual([
      '2 loadBalancer.mode: got "fast", expected one of snat, dsr, hybrid',
      "5 maglev.tableSize: got 1000, expected one of the primes 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071",
      '7 nodePort.range: got "40000-30000", expected a range "LOW,HIGH" or "LOW-HIGH" with 1 <= LOW <= HIGH <= 65535',
      '8 nodePort.enabled: got "yes-please", expected true or false (boolean or "true"/"false")',
      "9 devices: got 42, expected a list of interface names (wildcard: eth+) or a comma/space-separated string",
      "11 cgroup: expected a mapping with keys root, hostRoot, autoMount",
    ]);
  });

  it("reports invalid YAML with a line", () => {
    const ps = problemsOf(() => parseConfig("a: 1\nb: [1, 2\nc: 3\n", "c.yaml"));
    expect(ps.length).toBeGreaterThan(0);
    expect(ps[0]).toMatch(/^\d+ : invalid YAML/);
  });

  it("rejects a non-mapping top level", () => {
    expect(problemsOf(() => parseConfig("- a\n- b\n", "c.yaml"))).toEqual([
      "1 : expected a mapping of config keys at the top level",
    ]);
  });
});

describe("loadConfig", () => {
  it("an explicit path that is absent is an InputError (exit 2)", () => {
    let err: unknown;
    try {
      loadConfig(join(dir, "missing.yaml"));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).exitCode).toBe(2);
    expect((err as InputError).message).toContain("missing.yaml");
  });

  it("reads a file", () => {
    const f = join(dir, "ok.yaml");
    writeFileSync(f, "nodeName: n1\nloadBalancer: {algorithm: maglev}\n");
    const cfg = loadConfig(f);
    expect([cfg.nodeName, cfg.loadBalancer.algorithm]).toEqual(["n1", "maglev"]);
  });
});

describe("Cilium compatibility", () => {
  const warningsOf = (text: string) =>
    parseConfigDetailed(text, "c.yaml").warnings.map(
      (w) => `${w.line ?? "-"} ${w.field ?? ""}: ${w.message}`,
    );

  it("unknown keys are warnings, not errors; near misses of kpr's keys get a suggestion", () => {
    const text = [
      "loadBalancer:",
      "  mdoe: dsr",
      "  algo: maglev",
      "bogus: 1",
      "ipam: {mode: kubernetes}",
    ].join("\n");
    const { config, warnings } = parseConfigDetailed(text, "c.yaml");
    expect(config.loadBalancer, "ignored keys change nothing").toEqual(defaultConfig().loadBalancer);
    expect(warnings.map((w) => `${w.line ?? "-"} ${w.field ?? ""}: ${w.message}`)).toEqual([
      '2 loadBalancer.mdoe: unknown key, ignored (did you mean "loadBalancer.mode"?)',
      '3 loadBalancer.algo: unknown key, ignored (did you mean "loadBalancer.algorithm"?)',
      "- : 2 key(s) kpr does not use, ignored: bogus, ipam",
    ]);
  });

  it("a real Cilium values file loads: the keys kpr knows are used, the rest is ignored", () => {
    const values = [
      "kubeProxyReplacement: true",
      'k8sServiceHost: "10.0.0.1"',
      'k8sServicePort: "6443"',
      "k8sServiceProxyName: kpr-proxy",
      "devices: eth+",
      "cgroup:",
      "  autoMount:",
      "    enabled: false",
      "  hostRoot: /sys/fs/cgroup",
      "bpf:",
      '  lbMapMax: "131072"',
      "  ctTcpMax: 524288",
      '  ctAnyMax: "262144"',
      "  natMax: 524288",
      "  masquerade: true",
      "nodePort:",
      "  enabled: true",
      "  addresses: [10.0.0.0/8, 'fd00::/64']",
      "hubble: {enabled: false}",
      "operator: {replicas: 1}",
      "loadBalancer: {algorithm: maglev}",
      "maglev: {tableSize: '65521'}",
    ].join("\n");
    const { config, warnings } = parseConfigDetailed(values, "values.yaml");
    expect(config.k8s.serviceProxyName, "k8sServiceProxyName").toBe("kpr-proxy");
    expect(config.cgroup, "cgroup.hostRoot + autoMount").toEqual({
      root: "/sys/fs/cgroup",
      autoMount: { enabled: false },
    });
    expect(config.bpf, "numeric strings and map sizes").toEqual({
      root: "/sys/fs/bpf/kpr",
      lbMapMax: 131072,
      ctTcpMax: 524288,
      ctAnyMax: 262144,
      natMax: 524288,
    });
    expect(config.devices).toEqual(["eth+"]);
    expect(config.nodePort.addresses).toEqual(["10.0.0.0/8", "fd00::/64"]);
    expect(config.maglev.tableSize).toBe(65521);
    expect(warnings.map((w) => w.message)).toEqual([
      "5 key(s) kpr does not use, ignored: k8sServiceHost, k8sServicePort, bpf.masquerade, hubble, operator",
    ]);
  });

  it("cgroup.root and cgroup.hostRoot that disagree are an error", () => {
    expect(problemsOf(() => parseConfig("cgroup: {root: /a, hostRoot: /b}", "c.yaml"))).toEqual([
      "1 cgroup.hostRoot: conflicts with cgroup.root (set one)",
    ]);
  });

  it("bad map sizes and CIDRs name the key", () => {
    expect(
      problemsOf(() => parseConfig("bpf: {ctTcpMax: '12x'}\nnodePort: {addresses: [10.0.0.1]}", "c.yaml")),
    ).toEqual([
      '1 bpf.ctTcpMax: got "12x", expected an integer 1..16777216',
      '2 nodePort.addresses: got ["10.0.0.1"], expected a list of CIDRs or a comma/space-separated string ("10.0.0.1" is not one)',
    ]);
  });

  it("warnings are only warnings: no unknown-key warning for kpr's own keys", () => {
    expect(warningsOf("loadBalancer: {mode: snat}\nk8s: {serviceProxyName: x}")).toEqual([]);
  });
});

describe("JSON Schema", () => {
  it("is generated from the validator's definition: every accepted key has a property", () => {
    const schema = configJsonSchema() as {
      properties: Record<string, { properties?: Record<string, unknown> }>;
    };
    for (const key of CONFIG_KEYS) {
      let node: unknown = schema;
      for (const k of key.split("."))
        node = (node as { properties: Record<string, unknown> }).properties?.[k];
      expect(node, `schema has ${key}`).toBeDefined();
    }
    expect(schema.properties.loadBalancer!.properties!.mode).toMatchObject({
      enum: ["snat", "dsr", "hybrid"],
    });
  });

  it("the committed copy (config.schema.json) is current", async () => {
    const committed = await Bun.file(join(import.meta.dir, "../../config.schema.json")).json();
    expect(committed, "regenerate with: kpr config schema > config.schema.json").toEqual(configJsonSchema());
  });
});
