import { defineCommand } from "citty";
import { DEFAULT_CONFIG_PATH } from "../config/config.ts";
import { InputError, type InputProblem, KprError } from "../errors.ts";
import { log } from "../log.ts";
import { commonArgs, configFromArgs } from "./_common.ts";
import { guardArgs, guardFromArgs } from "./apply.ts";

const rlog = log.withTag("run");

/** Values of every --manifest occurrence (citty keeps only the last one). */
export function manifestArgs(rawArgs: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const a = rawArgs[i]!;
    if (a === "--") break;
    const m = /^--manifest=(.*)$/.exec(a);
    if (m) out.push(m[1]!);
    else if (a === "--manifest") {
      const v = rawArgs[i + 1];
      if (v !== undefined) out.push(v);
      i++;
    }
  }
  return out;
}

/**
 * `kpr run --config FILE [--kubeconfig FILE]` (follows the Kubernetes API) or
 * `kpr run --config FILE --manifest PATH...` (follows manifest files): the node agent.
 */
export default defineCommand({
  meta: {
    name: "run",
    description:
      "Run the node agent: follow the Kubernetes API (or manifest files) and keep this node's services programmed",
  },
  args: {
    ...commonArgs,
    kubeconfig: {
      type: "string",
      description:
        "Kubeconfig of the API server (default: KUBECONFIG, ~/.kube/config, /etc/rancher/k3s/k3s.yaml, in-cluster)",
      valueHint: "FILE",
    },
    manifest: {
      type: "string",
      description:
        "Follow manifest files instead of the API: a file or directory as apply -f takes; repeatable",
      valueHint: "PATH",
    },
    ...guardArgs,
  },
  async run({ args, rawArgs }) {
    const manifests = manifestArgs(rawArgs);
    if (manifests.length === 0 && typeof args.manifest === "string") manifests.push(args.manifest);
    const problems: InputProblem[] = [];
    if (manifests.includes("-"))
      problems.push({
        file: "<flags>",
        field: "--manifest",
        message: "- (stdin) cannot be followed: name files or directories",
      });
    if (manifests.length > 0 && typeof args.kubeconfig === "string")
      problems.push({
        file: "<flags>",
        field: "--kubeconfig",
        message: "not with --manifest (one source at a time)",
      });
    if (problems.length > 0) throw new InputError(problems);
    const guard = await guardFromArgs(args);
    const configPath = args.config ?? DEFAULT_CONFIG_PATH;
    let cfg = await configFromArgs(args);

    const { Daemon } = await import("../agent/daemon.ts");
    const { startAgentServices } = await import("../agent/services.ts");
    const notify = await import("../agent/notify.ts");
    const agentState = await import("../agent/agentstate.ts");

    let source: import("../k8s/source.ts").ClusterSource;
    if (manifests.length > 0) {
      const { ManifestSource } = await import("../agent/manifest-source.ts");
      source = new ManifestSource({ paths: manifests, log: rlog, pruneAll: guard.pruneAll });
    } else {
      const { ApiSource } = await import("../k8s/api.ts");
      source = new ApiSource({
        ...(typeof args.kubeconfig === "string" ? { kubeconfig: args.kubeconfig } : {}),
        nodeName: cfg.nodeName,
        ...(cfg.k8s.serviceProxyName !== "" ? { serviceProxyName: cfg.k8s.serviceProxyName } : {}),
        log: rlog,
      });
    }

    // A bind failure exits 1 here, before anything is touched.
    let services = await startAgentServices(cfg, { log: rlog });
    using _watchdog = notify.startWatchdog();
    const startedAt = new Date().toISOString();
    let frontends: number | undefined;
    let lastSync: import("../agent/agentstate.ts").AgentState["lastSync"];
    const record = () => {
      try {
        agentState.writeAgentState(cfg, {
          pid: process.pid,
          source: source.description,
          startedAt,
          config: configPath,
          ...(lastSync ? { lastSync } : {}),
          ...(frontends !== undefined ? { frontends } : {}),
          ...(source.lastError !== undefined ? { sourceError: source.lastError } : {}),
        });
      } catch (e) {
        rlog.warn(
          `write ${agentState.agentStatePath(cfg)}: ${(e as Error).message} (kpr status will not see this daemon)`,
        );
      }
    };
    record();

    const daemon = new Daemon({
      cfg,
      configPath,
      source,
      log: rlog,
      guard,
      guardEverySync: manifests.length > 0,
      onEvent: () => services.queuedUpdate(),
      onSync: (r) => {
        services.onSync(r);
        lastSync = {
          at: r.at.toISOString(),
          ok: r.ok,
          ...(r.error !== undefined ? { error: r.error } : {}),
          durationMs: Math.round(r.durationMs * 1000) / 1000,
        };
        if (r.ok && r.model) frontends = r.model.frontends.length;
        record();
      },
      onFirstSync: (r) => {
        notify.notifyReady(`synced ${r.model?.frontends.length ?? 0} frontends from ${source.description}`);
      },
      onStatus: (s) => {
        notify.notifyStatus(s);
        // the source's problem shows in kpr status also before the first sync
        record();
      },
    });

    rlog.info(`following ${source.description} (config ${configPath}, bpf root ${cfg.bpf.root})`);
    const done = new Promise<number>((resolve) => {
      let stopping = false;
      const stop = async (sig: string) => {
        if (stopping) return;
        stopping = true;
        rlog.info(`${sig}: stopping; the datapath stays programmed (kpr cleanup removes it)`);
        notify.notifyStopping();
        try {
          await daemon.stop();
          await services.stop();
        } finally {
          agentState.removeAgentState(cfg);
        }
        resolve(0);
      };
      process.on("SIGTERM", () => void stop("SIGTERM"));
      process.on("SIGINT", () => void stop("SIGINT"));
      process.on("SIGHUP", () => {
        void (async () => {
          try {
            const next = await configFromArgs(args);
            const changed = await daemon.reload(next);
            if (changed.length === 0) {
              rlog.info(`SIGHUP: ${configPath} unchanged`);
              return;
            }
            const addrsChanged =
              next.kubeProxyReplacementHealthzBindAddr !== cfg.kubeProxyReplacementHealthzBindAddr ||
              next.prometheus.serveAddr !== cfg.prometheus.serveAddr;
            cfg = next;
            if (addrsChanged) {
              await services.stop();
              services = await startAgentServices(cfg, { log: rlog });
            }
            rlog.info(`SIGHUP: reloaded ${configPath} (changed: ${changed.join(", ")})`);
          } catch (e) {
            const msg = e instanceof KprError ? e.message : String(e);
            rlog.error(`SIGHUP: ${msg}${e instanceof InputError ? " (the old config stays in effect)" : ""}`);
          }
        })();
      });
    });
    await daemon.start();
    return await done;
  },
});
