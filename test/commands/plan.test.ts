/**
 * Dry run and apply agree: the dry run runs apply's own capacity check and address-family skips,
 * and lists the Services it leaves out (headless, another proxy's name, ExternalName) with why.
 */
import { afterAll, describe, expect, it } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { stringify } from "yaml";
import { defaultConfig } from "../../src/config/config.ts";
import { emptyClusterState } from "../../src/k8s/types.ts";
import { skippedServices } from "../../src/lb/plancheck.ts";
import { needs, ownNetns } from "../harness/env.ts";
import { useTopology } from "../harness/netns.ts";

const ROOT = resolve(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/main.ts");
const DEMO = join(ROOT, "examples/demo");
const tmp = mkdtempSync(join(tmpdir(), "kprP-plan-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** kpr in a network namespace of its own: device detection sees no interface of this machine's */
async function kpr(args: string[]) {
  const proc = Bun.spawn([...ownNetns(), process.execPath, MAIN, ...args], {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, KPR_LOG_FORMAT: "text", KPR_NODE_NAME: "node-1", NO_COLOR: "1" },
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout, stderr };
}

const svc = (name: string, over: Record<string, unknown> = {}, labels: Record<string, string> = {}) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: "default", labels },
  spec: { type: "ClusterIP", clusterIP: "10.96.1.1", ports: [{ port: 80, protocol: "TCP" }], ...over },
});

describe("skipped services", () => {
  it("names every Service translate leaves out, with the reason", () => {
    const state = emptyClusterState();
    state.services.push(
      svc("ext", { type: "ExternalName", externalName: "x.example" }) as never,
      svc("hl", { clusterIP: "None" }) as never,
      svc("hl2", {}, { "service.kubernetes.io/headless": "" }) as never,
      svc("other", {}, { "service.kubernetes.io/service-proxy-name": "istio" }) as never,
      svc("ours", {}) as never,
    );
    expect(skippedServices(state, defaultConfig())).toEqual([
      { what: "Service default/ext", reason: "type ExternalName (DNS only, nothing to program)" },
      { what: "Service default/hl", reason: "headless (clusterIP: None)" },
      { what: "Service default/hl2", reason: "headless (label service.kubernetes.io/headless)" },
      {
        what: "Service default/other",
        reason:
          "label service.kubernetes.io/service-proxy-name=istio: served by another proxy (k8s.serviceProxyName is unset)",
      },
    ]);
    const cfg = defaultConfig();
    cfg.k8s.serviceProxyName = "istio";
    expect(
      skippedServices(state, cfg).map((s) => s.what),
      "with a proxy name, unlabelled ones are skipped",
    ).toEqual(["Service default/ext", "Service default/hl", "Service default/hl2", "Service default/ours"]);
  });
});

describe("apply --dry-run", () => {
  it("fails on capacity exactly as apply would (exit 2, apply's message)", async () => {
    const cfg = join(tmp, "small.yaml");
    writeFileSync(cfg, "bpf: {lbMapMax: 8, root: /sys/fs/bpf/kprP-absent}\n");
    const r = await kpr(["apply", "--dry-run", "-f", DEMO, "--config", cfg]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain("apply: input too large: kpr_lb4_svc needs");
    expect(r.stderr).toContain("holds 8");
  });

  it("lists skipped Services and IPv6 frontends, as warnings and under the plan", async () => {
    const f = join(tmp, "mixed.yaml");
    writeFileSync(
      f,
      [
        svc("v6", { clusterIP: "fd00::10", clusterIPs: ["fd00::10"], ipFamilies: ["IPv6"] }),
        svc("hl", { clusterIP: "None" }),
        svc("v4", {}),
      ]
        .map((o) => stringify(o))
        .join("---\n"),
    );
    const r = await kpr(["apply", "--dry-run", "-f", f, "--config", join(ROOT, "examples/config.yaml")]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("Skipped (2):");
    expect(r.stdout).toContain("  Service default/hl: headless (clusterIP: None)");
    expect(r.stdout).toContain("  [fd00::10]:80/TCP: IPv6 frontends are not programmed yet (IPv4 datapath)");
    expect(r.stderr).toContain("skipped [fd00::10]:80/TCP");
    const j = await kpr([
      "apply",
      "--dry-run",
      "-o",
      "json",
      "-f",
      f,
      "--config",
      join(ROOT, "examples/config.yaml"),
    ]);
    expect(JSON.parse(j.stdout).length, "-o json stays the plan's entries").toBe(2);
  });
});

const skip = needs({ root: true, built: true, tools: ["ip", "nsenter"] }, "apply agrees with its dry run");

describe.skipIf(!!skip)("apply agrees with its dry run", () => {
  const topo = useTopology({
    setup: async (t) => {
      await t.addNs("node");
    },
  });

  it("the apply fails with the dry run's message and changes nothing", async () => {
    const cfg = topo().writeConfig({ nodeName: "node-1", bpf: { lbMapMax: 8 } });
    const dry = await topo().kpr("node", ["apply", "--dry-run", "-f", DEMO, "--config", cfg]);
    const real = await topo().kpr("node", ["apply", "-f", DEMO, "--config", cfg]);
    const msg = (s: string) => /apply: input too large[^"\n]*/.exec(s)?.[0];
    expect(dry.code, dry.stderr).toBe(2);
    expect(real.code, real.stderr).toBe(2);
    expect(msg(dry.stderr), "dry run names the overflow").toBeDefined();
    expect(msg(real.stderr), "same message").toBe(msg(dry.stderr)!);
  });

  it("apply -o json prints the result as data", async () => {
    const cfg = topo().writeConfig({ nodeName: "node-1" });
    const r = await topo().kpr("node", ["apply", "-f", DEMO, "-o", "json", "--config", cfg]);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ changed: true, planned: "full", skipped: [] });
    expect(j.writes).toBeGreaterThan(0);
    await topo().kpr("node", ["cleanup", "--config", cfg]);
  });
});
