/**
 * Kubeconfig resolution order: --kubeconfig, KUBECONFIG, ~/.kube/config, k3s's file, in-cluster
 * service account; with a temporary HOME, environment and paths, never the machine's own.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KprError } from "../../src/errors.ts";
import { type KubeconfigChoice, type KubeconfigInputs, resolveKubeconfig } from "../../src/k8s/kubeconfig.ts";

const dir = mkdtempSync(join(tmpdir(), "kpr-kubeconfig-"));
const file = (name: string, server: string) => {
  const p = join(dir, name);
  writeFileSync(
    p,
    [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      `- name: c-${name}`,
      "  cluster:",
      `    server: ${server}`,
      "users:",
      `- name: u-${name}`,
      "  user:",
      "    token: t",
      "contexts:",
      `- name: x-${name}`,
      "  context:",
      `    cluster: c-${name}`,
      `    user: u-${name}`,
      `current-context: x-${name}`,
      "",
    ].join("\n"),
  );
  return p;
};

mkdirSync(join(dir, "home", ".kube"), { recursive: true });
mkdirSync(join(dir, "sa"));
writeFileSync(join(dir, "sa", "token"), "satoken");
writeFileSync(join(dir, "sa", "ca.crt"), "");
const paths = {
  flag: file("flag.yaml", "https://10.0.0.1:6443"),
  env: file("env.yaml", "https://10.0.0.2:6443"),
  home: file("home/.kube/config", "https://10.0.0.3:6443"),
  k3s: file("k3s.yaml", "https://127.0.0.1:6443"),
  sa: join(dir, "sa"),
};
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const inputs = (
  have: { flag?: boolean; env?: boolean; home?: boolean; k3s?: boolean; sa?: boolean },
  extraEnv: Record<string, string> = {},
): KubeconfigInputs => ({
  flag: have.flag ? paths.flag : undefined,
  env: {
    ...(have.env ? { KUBECONFIG: paths.env } : {}),
    ...(have.sa ? { KUBERNETES_SERVICE_HOST: "10.0.0.5", KUBERNETES_SERVICE_PORT: "6443" } : {}),
    ...extraEnv,
  },
  home: have.home ? join(dir, "home") : join(dir, "nohome"),
  k3sPath: have.k3s ? paths.k3s : join(dir, "no-k3s.yaml"),
  serviceAccountDir: have.sa ? paths.sa : join(dir, "no-sa"),
});

describe("resolveKubeconfig order", () => {
  test.each([
    [{ flag: true, env: true, home: true, k3s: true, sa: true }, "--kubeconfig", "https://10.0.0.1:6443"],
    [{ env: true, home: true, k3s: true, sa: true }, "KUBECONFIG", "https://10.0.0.2:6443"],
    [{ home: true, k3s: true, sa: true }, "~/.kube/config", "https://10.0.0.3:6443"],
    [{ k3s: true, sa: true }, "k3s", "https://127.0.0.1:6443"],
    [{ sa: true }, "in-cluster", "https://10.0.0.5:6443"],
  ] as [Record<string, boolean>, KubeconfigChoice["origin"], string][])("%j → %s", (have, origin, server) => {
    const c = resolveKubeconfig(inputs(have));
    expect({ origin: c.origin, server: c.server }, "choice").toEqual({ origin, server });
    expect(c.kc.getCurrentCluster()?.server, "loaded config's server").toBe(server);
  });

  test("in-cluster uses the service account's token file and CA", () => {
    const c = resolveKubeconfig(inputs({ sa: true }));
    expect(c.path, "path").toBe(paths.sa);
    expect(c.kc.getCurrentCluster()?.caFile, "CA").toBe(join(paths.sa, "ca.crt"));
    expect(c.kc.getCurrentUser()?.authProvider?.config?.tokenFile, "token file").toBe(
      join(paths.sa, "token"),
    );
  });

  test("KUBECONFIG with several files: merged, the first one's context wins, missing ones skipped", () => {
    const c = resolveKubeconfig({
      ...inputs({}),
      env: { KUBECONFIG: `${join(dir, "missing.yaml")}:${paths.env}:${paths.flag}` },
    });
    expect(c.origin, "origin").toBe("KUBECONFIG");
    expect(c.server, "first present file's context").toBe("https://10.0.0.2:6443");
    expect(c.kc.getClusters().length, "merged clusters").toBe(2);
  });

  test.each([
    [
      "--kubeconfig names a missing file",
      { ...inputs({ home: true }), flag: "/nonexistent/kubeconfig" },
      "--kubeconfig",
    ],
    [
      "KUBECONFIG names only missing files",
      { ...inputs({ home: true }), env: { KUBECONFIG: "/nonexistent/a" } },
      "KUBECONFIG",
    ],
    ["nothing anywhere", inputs({}), "none found"],
    ["service account without KUBERNETES_SERVICE_HOST", { ...inputs({ sa: true }), env: {} }, "none found"],
  ])("%s → exit 2 naming the cause", (_what, inp, needle) => {
    let err: unknown;
    try {
      resolveKubeconfig(inp);
    } catch (e) {
      err = e;
    }
    expect(err, "a KprError").toBeInstanceOf(KprError);
    expect((err as KprError).exitCode, "bad input").toBe(2);
    expect((err as KprError).message, "message").toContain(needle);
  });

  test("a file that is not a kubeconfig → exit 2 naming the file", () => {
    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, "clusters: [\n");
    let err: unknown;
    try {
      resolveKubeconfig({ ...inputs({}), flag: bad });
    } catch (e) {
      err = e;
    }
    expect((err as KprError).exitCode, "bad input").toBe(2);
    expect((err as KprError).message, "names the file").toContain(bad);
  });
});
