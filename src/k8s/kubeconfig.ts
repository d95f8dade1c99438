/**
 * Which kubeconfig the API source uses, in kubectl's and k3s's order: `--kubeconfig`,
 * `KUBECONFIG`, `~/.kube/config`, `/etc/rancher/k3s/k3s.yaml`, then the in-cluster service
 * account. kpr talks to the API server's address written there, never through the `kubernetes`
 * ClusterIP: kpr is what programs that ClusterIP.
 */
import { existsSync } from "node:fs";
import { isIPv6 } from "node:net";
import { homedir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { EXIT_INPUT, KprError } from "../errors.ts";

/** Where k3s writes its admin kubeconfig. */
export const K3S_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml";
/** Where the kubelet mounts a pod's service account. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** The kubeconfig chosen and why. */
export interface KubeconfigChoice {
  kc: KubeConfig;
  /** which rule chose it */
  origin: "--kubeconfig" | "KUBECONFIG" | "~/.kube/config" | "k3s" | "in-cluster";
  /** the file(s) read; for in-cluster, the service account directory */
  path: string;
  /** the API server URL of the current context */
  server: string;
}

/** Inputs of resolveKubeconfig; every default is the real machine's, tests override them. */
export interface KubeconfigInputs {
  /** the `--kubeconfig` flag */
  flag?: string;
  env?: Record<string, string | undefined>;
  /** home directory (default: env.HOME, else os.homedir()) */
  home?: string;
  k3sPath?: string;
  serviceAccountDir?: string;
}

function load(files: string[], origin: KubeconfigChoice["origin"]): KubeconfigChoice {
  const kc = new KubeConfig();
  try {
    kc.loadFromFile(files[0]!);
    for (const f of files.slice(1)) {
      const more = new KubeConfig();
      more.loadFromFile(f);
      kc.mergeConfig(more, true);
    }
  } catch (e) {
    throw new KprError(
      `kubeconfig ${files.join(":")}: ${(e as Error).message} (chosen by ${origin})`,
      EXIT_INPUT,
    );
  }
  return finish(kc, origin, files.join(":"));
}

function finish(kc: KubeConfig, origin: KubeconfigChoice["origin"], path: string): KubeconfigChoice {
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server)
    throw new KprError(
      `kubeconfig ${path}: the current context "${kc.getCurrentContext()}" names no cluster with a server (chosen by ${origin})`,
      EXIT_INPUT,
    );
  return { kc, origin, path, server: cluster.server };
}

/**
 * Picks and loads the kubeconfig. Throws KprError (exit 2) when the chosen file is missing or
 * unreadable, or when nothing is found at all.
 */
export function resolveKubeconfig(inputs: KubeconfigInputs = {}): KubeconfigChoice {
  const env = inputs.env ?? process.env;
  if (inputs.flag !== undefined) {
    if (!existsSync(inputs.flag))
      throw new KprError(`kubeconfig ${inputs.flag}: no such file (given by --kubeconfig)`, EXIT_INPUT);
    return load([inputs.flag], "--kubeconfig");
  }
  const fromEnv = (env.KUBECONFIG ?? "").split(":").filter((f) => f !== "");
  if (fromEnv.length) {
    const present = fromEnv.filter((f) => existsSync(f));
    if (!present.length)
      throw new KprError(`kubeconfig ${env.KUBECONFIG}: no such file (given by KUBECONFIG)`, EXIT_INPUT);
    return load(present, "KUBECONFIG");
  }
  const home = inputs.home ?? env.HOME ?? homedir();
  const user = join(home, ".kube", "config");
  if (existsSync(user)) return load([user], "~/.kube/config");
  const k3s = inputs.k3sPath ?? K3S_KUBECONFIG;
  if (existsSync(k3s)) return load([k3s], "k3s");
  const sa = inputs.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (existsSync(join(sa, "token")) && host && port) {
    const kc = new KubeConfig();
    kc.loadFromClusterAndUser(
      {
        name: "inCluster",
        server: `https://${isIPv6(host) ? `[${host}]` : host}:${port}`,
        caFile: join(sa, "ca.crt"),
        skipTLSVerify: false,
      },
      {
        name: "inClusterUser",
        authProvider: { name: "tokenFile", config: { tokenFile: join(sa, "token") } },
      },
    );
    return finish(kc, "in-cluster", sa);
  }
  throw new KprError(
    `kubeconfig: none found (tried --kubeconfig, KUBECONFIG, ${user}, ${k3s}, the service account in ${sa} with KUBERNETES_SERVICE_HOST/PORT) (pass --kubeconfig FILE, or use --manifest)`,
    EXIT_INPUT,
  );
}
