/**
 * The run loop of `kpr run`: source events → debounce → translate only the services that changed
 * → diff against the model kept in memory → write the differing entries into the open datapath.
 * Its first pass (and any resync: a Node change, a relist, a failed or rejected sync) is the
 * pipeline's full pass against the kernel's state, which rewrites nothing still programmed.
 * Nothing is written before the source's first complete sync; the datapath is never torn down
 * (stop() leaves it programmed). The devices are followed: the node's interfaces are looked at
 * every `devicePollMs` (getifaddrs, no process), and when they changed (or every 15th look, for a
 * default route that moved) the pass's devices are resolved again; a different result (a device
 * that appeared, disappeared or was renamed, a new address or MAC) is a full pass that attaches
 * and detaches the programs and exposes NodePorts on the new addresses.
 */
import type { ConsolaInstance } from "consola";
import type { Config } from "../config/config.ts";
import type { NetSnapshot } from "../config/devices.ts";
import { withDevices } from "../config/load.ts";
import { markApplyDone, markApplyStarted } from "../datapath/crashmark.ts";
import { type IfAddr, interfaceAddresses } from "../datapath/ffi.ts";
import { type Datapath, resizePlan } from "../datapath/loader.ts";
import { syncMaglev } from "../datapath/maglevmaps.ts";
import { encodeModel, ProgrammedModel } from "../datapath/mapstate.ts";
import * as recon from "../datapath/reconcile.ts";
import { prepareSocketCleanup } from "../datapath/sockterm.ts";
import { InputError, KprError } from "../errors.ts";
import type { ClusterSource } from "../k8s/source.ts";
import type { ClusterState } from "../k8s/types.ts";
import type { LbModel } from "../lb/model.ts";
import { IncrementalTranslation, type ServiceObjects, translate } from "../lb/translate.ts";
import { Progress } from "../progress.ts";
import { checkRemovalCount, checkRemovals, type GuardOptions } from "./guard.ts";
import { markNodeSources } from "./nodesource.ts";
import {
  disabledMessage,
  modelServices,
  type PassDevices,
  passDevices,
  unsupportedSettings,
} from "./pipeline.ts";
import type { SyncReport } from "./services.ts";

/** Coalescing of events into syncs. */
export interface DebounceOptions {
  /** a sync starts once no event came for this long */
  idleMs: number;
  /** ... or once the oldest pending event is this old, however busy the stream */
  maxDelayMs: number;
}

/** kpr run's numbers (README "How it works"): 1 ms of quiet, at most 20 ms behind the first event. */
export const DEFAULT_DEBOUNCE: DebounceOptions = { idleMs: 1, maxDelayMs: 20 };

/**
 * Calls `run` once per burst of poke()s: after `idleMs` without a poke, or `maxDelayMs` after the
 * first poke of the burst, whichever comes first. `now` and timers are injectable for tests.
 */
export class Debouncer {
  private first: number | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  constructor(
    private readonly run: () => void,
    private readonly opts: DebounceOptions = DEFAULT_DEBOUNCE,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** An event: (re)arms the timer. */
  poke(): void {
    const t = this.now();
    this.first ??= t;
    const due = Math.min(t + this.opts.idleMs, this.first + this.opts.maxDelayMs);
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.fire(), Math.max(0, due - t));
  }

  /** Whether a run is due (a poke not yet followed by its run). */
  get pending(): boolean {
    return this.first !== undefined;
  }

  private fire(): void {
    this.timer = undefined;
    this.first = undefined;
    this.run();
  }

  /** Drops a pending run. */
  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.first = undefined;
  }
}

/** The result of the last sync attempt (for `kpr status` and logs). */
export interface LastSync {
  at: Date;
  ok: boolean;
  error?: string;
  durationMs: number;
}

/** What the daemon needs. */
export interface DaemonOptions {
  cfg: Config;
  configPath: string;
  source: ClusterSource;
  log: ConsolaInstance;
  guard: GuardOptions;
  /** check the wipe guard on every sync (manifest mode); else only on the first */
  guardEverySync: boolean;
  debounce?: DebounceOptions;
  /** after every sync attempt */
  onSync?: (r: SyncReport) => void;
  /** once, after the first complete sync is programmed */
  onFirstSync?: (r: SyncReport) => void;
  /** for every source event (cheap) */
  onEvent?: () => void;
  /** a one-line state for systemd STATUS= (called when it changes) */
  onStatus?: (s: string) => void;
  /** how often the node's interfaces are looked at (default 2000 ms; 0: devices are not followed) */
  devicePollMs?: number;
  /** what device detection reads (default: the network namespace; see passDevices) */
  net?: NetSnapshot;
}

/** One getifaddrs entry as text (device, family, address, ifindex, MAC). */
function ifAddrText(a: IfAddr): string {
  return `${a.name}/${a.family}/${a.address}/${a.index ?? ""}/${a.mac ? Buffer.from(a.mac).toString("hex") : ""}`;
}

/** What identifies the devices of a pass: names, ifindexes, MACs, addresses, NodePort addresses. */
export function devicesKey(pd: PassDevices): string {
  const all = interfaceAddresses();
  const dev = pd.devices.map((name) =>
    all
      .filter((a) => a.name === name)
      .map(ifAddrText)
      .sort()
      .join(","),
  );
  return JSON.stringify({ devices: pd.devices, dev, nodeAddresses: pd.nodeAddresses ?? null });
}

/** A signature of every interface of the network namespace and its addresses (cheap: getifaddrs). */
function interfacesSignature(): string {
  return interfaceAddresses().map(ifAddrText).sort().join(" ");
}

/** Timestamps of the last sync (performance.now()), for the benchmark. */
export interface SyncTiming {
  firstEventAt?: number;
  startedAt: number;
  /** after the last map write (the same as startedAt when nothing was written) */
  lastWriteAt: number;
  writes: number;
  incremental: boolean;
}

/** Why a sync must retranslate everything against the kernel's state. */
type FullReason = "first" | "resync" | "after-failure" | "config" | "devices";

/** The node agent's loop. */
export class Daemon {
  private cfg: Config;
  private readonly log: ConsolaInstance;
  private readonly debouncer: Debouncer;
  private dp: Datapath | undefined;
  private lock: Disposable | undefined;
  private inc: IncrementalTranslation | undefined;
  private prog: ProgrammedModel | undefined;
  private needFull: FullReason | undefined = "first";
  private running = false;
  private again = false;
  private stopped = false;
  private firstEventAt: number | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private status = "";
  private lastError: string | undefined;
  private idle: Promise<void> = Promise.resolve();
  /** warnings already logged about devices (each once, until it no longer holds) */
  private deviceWarnings = new Set<string>();
  /** the devices of the last full pass (devicesKey) */
  private devices: { key: string; names: string[] } | undefined;
  private checkDevices = false;
  /** the Node objects of the last full pass (a Node change is a full pass: see the source) */
  private nodes: ClusterState["nodes"] = [];
  private deviceTimer: ReturnType<typeof setInterval> | undefined;
  /** the last sync attempt */
  last: LastSync | undefined;
  /** timing of the last sync that wrote (benchmark) */
  timing: SyncTiming | undefined;
  /** the model programmed now (undefined before the first sync) */
  model: LbModel | undefined;

  constructor(private readonly o: DaemonOptions) {
    this.cfg = o.cfg;
    this.log = o.log;
    this.debouncer = new Debouncer(() => void this.sync(), o.debounce ?? DEFAULT_DEBOUNCE);
  }

  /** Starts following the source. Resolves once it is started (not synced). */
  async start(): Promise<void> {
    for (const w of unsupportedSettings(this.cfg)) this.log.warn(w);
    if (!this.cfg.kubeProxyReplacement) this.log.warn(disabledMessage(this.o.configPath));
    this.setStatus(`waiting for the first complete sync from ${this.o.source.description}`);
    await this.o.source.start(() => this.event());
    this.followDevices();
    this.debouncer.poke();
  }

  /** Looks at the interfaces every devicePollMs; a change (or every 15th look) asks for a re-check. */
  private followDevices(): void {
    const every = this.o.devicePollMs ?? 2000;
    if (every <= 0) return;
    let sig = "";
    let looks = 0;
    try {
      sig = interfacesSignature();
    } catch {}
    this.deviceTimer = setInterval(() => {
      let now = sig;
      try {
        now = interfacesSignature();
      } catch (e) {
        this.log.debug(`devices: ${(e as Error).message}`);
      }
      if (now === sig && ++looks % 15 !== 0) return;
      sig = now;
      this.checkDevices = true;
      this.debouncer.poke();
    }, every);
    this.deviceTimer.unref?.();
  }

  private event(): void {
    this.firstEventAt ??= performance.now();
    this.o.onEvent?.();
    this.debouncer.poke();
  }

  private setStatus(s: string): void {
    if (s === this.status) return;
    this.status = s;
    this.o.onStatus?.(s);
  }

  /** Resolves when no sync runs or is due (tests). */
  async settled(): Promise<void> {
    for (;;) {
      await this.idle;
      if (!this.running && !this.debouncer.pending) return;
      await Bun.sleep(1);
    }
  }

  /**
   * Runs one sync now (the debouncer calls it): skipped until the source has synced once;
   * serialised (a sync asked for while one runs follows it).
   */
  async sync(): Promise<void> {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    let done!: () => void;
    this.idle = new Promise((r) => {
      done = r;
    });
    try {
      do {
        this.again = false;
        await this.syncOnce();
      } while (this.again && !this.stopped);
    } finally {
      this.running = false;
      done();
    }
  }

  private async syncOnce(): Promise<void> {
    const src = this.o.source;
    if (src.lastError !== this.lastError) {
      this.lastError = src.lastError;
      if (src.lastError !== undefined)
        this.setStatus(`source: ${src.lastError.split("\n")[0]} (datapath left as it is)`);
    }
    if (!src.synced) {
      // Nothing is removed (nor written) before a complete sync: the changes wait for it.
      if (this.needFull === "first") return;
      if (src.lastError === undefined) this.setStatus(`relisting from ${src.description}`);
      return;
    }
    const firstEventAt = this.firstEventAt;
    this.firstEventAt = undefined;
    const startedAt = performance.now();
    const cpu0 = process.cpuUsage();
    const at = new Date();
    const changes = src.takeChanges();
    if (this.checkDevices) await this.recheckDevices();
    const full = this.needFull ?? (changes.all || !this.cfg.kubeProxyReplacement ? "resync" : undefined);
    let report: SyncReport;
    try {
      const r = full ? await this.fullSync(full) : this.incrementalSync(changes.services, changes.pods);
      const durationMs = performance.now() - startedAt;
      report = {
        ok: true,
        at,
        durationMs,
        model: this.cfg.kubeProxyReplacement ? this.model! : { node: this.model!.node, frontends: [] },
        serviceChanges: r.serviceChanges,
        endpointChanges: r.endpointChanges,
        ...(firstEventAt !== undefined ? { firstEventAt } : {}),
      };
      this.timing = {
        ...(firstEventAt !== undefined ? { firstEventAt } : {}),
        startedAt,
        lastWriteAt: r.lastWriteAt ?? startedAt,
        writes: r.writes,
        incremental: !full,
      };
      const first = full === "first";
      this.needFull = undefined;
      const lastWriteAt = r.lastWriteAt ?? startedAt;
      const cpu = process.cpuUsage(cpu0);
      const latency =
        firstEventAt !== undefined
          ? ` (event → last map write ${(lastWriteAt - firstEventAt).toFixed(2)} ms)`
          : "";
      if (r.writes > 0 || full) this.log.info(`${r.summary}${latency}`);
      else this.log.debug(`${r.summary}${latency}`);
      if (firstEventAt !== undefined)
        this.log.debug(
          `sync timing ${JSON.stringify({
            firstEventEpochMs: performance.timeOrigin + firstEventAt,
            lastWriteEpochMs: performance.timeOrigin + lastWriteAt,
            eventToLastWriteMs: lastWriteAt - firstEventAt,
            syncCpuMs: (cpu.user + cpu.system) / 1000,
            writes: r.writes,
            incremental: !full,
          })}`,
        );
      this.last = { at, ok: true, durationMs };
      this.o.onSync?.(report);
      if (first) this.o.onFirstSync?.(report);
      if (full) this.collectWhenIdle();
      if (src.lastError === undefined)
        this.setStatus(
          `${this.model!.frontends.length} frontends programmed from ${src.description}; last sync ${at.toISOString()}`,
        );
    } catch (e) {
      const err = e as Error;
      const durationMs = performance.now() - startedAt;
      // The changes were taken: only a full pass can now tell what is programmed and what is not.
      if (this.needFull !== "first") this.needFull = "after-failure";
      const msg = err instanceof KprError ? err.message : (err.stack ?? String(err));
      this.log.error(
        `sync failed: ${msg}${err instanceof InputError ? " (the last good state stays programmed)" : ""}`,
      );
      this.last = { at, ok: false, error: msg, durationMs };
      this.o.onSync?.({
        ok: false,
        at,
        durationMs,
        error: msg,
        serviceChanges: changes.services.size,
        endpointChanges: 0,
        ...(firstEventAt !== undefined ? { firstEventAt } : {}),
      });
      this.setStatus(`last sync failed: ${msg.split("\n")[0]}`);
      // Bad input waits for the next change; a runtime failure (a map write) is retried.
      if (!(err instanceof KprError && err.exitCode === 2)) this.retry();
    }
  }

  /**
   * A full pass leaves the garbage of a whole translation and encoding (hundreds of MB at 10,000
   * services): collected at once while idle, rather than by a collection in the middle of a later
   * one-endpoint sync (its pause was that sync's p99), and handed back to the system.
   */
  private collectWhenIdle(): void {
    setTimeout(() => {
      if (this.running || this.stopped) return;
      // the socket iterator too, so the first removed UDP backend's sync does not load it
      if (this.dp) prepareSocketCleanup(this.dp.lbMaps);
      Bun.gc(true);
    }, 20).unref?.();
  }

  /** Resolves the devices again; a result that differs from the last full pass asks for one. */
  private async recheckDevices(): Promise<void> {
    this.checkDevices = false;
    if (this.needFull || !this.devices || !this.cfg.kubeProxyReplacement) return;
    let key: string;
    let pd: PassDevices;
    try {
      pd = await this.passDevices();
      key = devicesKey(pd);
    } catch (e) {
      this.log.warn(`devices: ${(e as Error).message}`);
      return;
    }
    if (key === this.devices.key) return;
    const was = this.devices.names;
    const gone = was.filter((d) => !pd.devices.includes(d));
    const added = pd.devices.filter((d) => !was.includes(d));
    const what = [
      ...(added.length ? [`${added.join(", ")} appeared`] : []),
      ...(gone.length ? [`${gone.join(", ")} gone`] : []),
    ];
    this.log.info(
      `devices changed (${what.length ? what.join("; ") : "addresses or links"}): now ${pd.devices.join(", ") || "none"}; a full pass attaches and detaches`,
    );
    this.dp?.close();
    this.dp = undefined;
    this.needFull = "devices";
  }

  /**
   * The pipeline's device step for this daemon (absent devices left out, each warning once), with
   * the Node objects of `state` (default: of the last full pass; a snapshot costs much at 10,000
   * services).
   */
  private passDevices(state: Pick<ClusterState, "nodes"> = { nodes: this.nodes }): Promise<PassDevices> {
    const seen = new Set<string>();
    return passDevices(this.cfg, this.o.configPath, state, this.log, {
      absent: "skip",
      ...(this.o.net ? { net: this.o.net } : {}),
      warn: (m) => {
        seen.add(m);
        if (!this.deviceWarnings.has(m)) this.log.warn(m);
        this.deviceWarnings.add(m);
      },
    }).then((pd) => {
      // a warning that no longer holds may be logged again when it holds again
      for (const m of this.deviceWarnings) if (!seen.has(m)) this.deviceWarnings.delete(m);
      return pd;
    });
  }

  private retry(): void {
    if (this.retryTimer || this.stopped) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.debouncer.poke();
    }, 1000);
  }

  private async fullSync(reason: FullReason): Promise<SyncResult> {
    const log = this.log;
    const state = this.o.source.snapshot();
    this.nodes = state.nodes;
    const pd = await this.passDevices(state);
    const devicesNow = { key: devicesKey(pd), names: pd.devices };
    const { nodeAddresses } = pd;
    // the pass works on the devices it resolved (the settings record keeps them)
    const cfg = withDevices(this.cfg, pd.devices);
    if (!this.cfg.kubeProxyReplacement) {
      const model = translate(state, cfg, nodeAddresses ? { nodeAddresses } : {});
      this.model = model;
      this.inc = undefined;
      return {
        summary: `${disabledMessage(this.o.configPath)}`,
        writes: 0,
        serviceChanges: 0,
        endpointChanges: 0,
      };
    }
    this.lock ??= await recon.lockState(this.cfg, log);
    const { previous, services } = recon.readProgrammed(this.cfg);
    const progress = new Progress(log, performance.now());
    const model = translate(state, cfg, {
      ...(nodeAddresses !== undefined ? { nodeAddresses } : {}),
      previous,
      progress: (done, total) => progress.tick(() => `full sync: translating ${done}/${total} services`),
    });
    markNodeSources(model.frontends);
    if (reason === "first" || this.o.guardEverySync)
      checkRemovals(services, await modelServices(model), this.o.guard, "sync");
    if (pd.detected && (reason === "first" || reason === "devices"))
      log.info(`devices (detected): ${pd.devices.join(", ") || "none"}`);
    const r = await recon.applyModel(model, cfg, {
      log,
      progress,
      ...(this.dp ? { datapath: this.dp } : { keepDatapath: true }),
    });
    if (r.datapath) this.dp = r.datapath;
    this.devices = devicesNow;
    const lastWriteAt = performance.now();
    this.inc = undefined;
    this.prog = undefined;
    this.inc = IncrementalTranslation.seed(model, cfg);
    this.prog = ProgrammedModel.of(model, this.cfg.loadBalancer.algorithm === "maglev");
    this.model = model;
    // a full pass leaves much garbage (the snapshot's translation, the plan): return it now, so
    // the steady state's resident memory is the model's
    Bun.gc(true);
    const why = reason === "first" ? "first sync" : reason === "resync" ? "resync" : reason;
    return {
      summary: `${why}: ${r.summary}`,
      writes: r.writes,
      lastWriteAt,
      serviceChanges: new Set(model.frontends.map((f) => f.service)).size,
      endpointChanges: r.ops.filter((o) => o.map === "kpr_lb4_be").length,
    };
  }

  private incrementalSync(keys: Set<string>, pods: boolean): SyncResult {
    const inc = this.inc!;
    const prog = this.prog!;
    const dp = this.dp!;
    if (keys.size === 0 && !pods)
      return { summary: "no changes", writes: 0, serviceChanges: 0, endpointChanges: 0 };
    const t0 = performance.now();
    const src = this.o.source;
    const objs = new Map<string, ServiceObjects>();
    const removed: string[] = [];
    for (const k of keys) {
      const o = src.serviceObjects(k);
      objs.set(k, o);
      if (o.services.length === 0 && inc.frontendsOf(k).length > 0) removed.push(k);
    }
    if (this.o.guardEverySync) checkRemovalCount(removed, inc.serviceCount, this.o.guard, "sync");
    const delta = inc.update(objs, pods ? src.snapshot().pods : undefined);
    markNodeSources(delta.added);
    const { ops, skipped } = prog.change(delta);
    // the crash marker makes the next start diff every entry if this sync is cut short
    if (ops.length > 0) markApplyStarted(this.cfg.bpf.root);
    const writes = recon.executeOps(ops, dp.lbMaps, { log: this.log });
    if (ops.some((o) => o.kind === "delete"))
      recon.pruneAffinity(dp.map("kpr_lb4_aff"), (fe, be) => prog.hasFrontend(fe) && prog.hasBackend(be));
    for (const s of skipped) this.log.debug(`skipped frontend ${s.frontend}: ${s.reason}`);
    this.model = inc.model();
    // Maglev tables follow the backends they were computed from (only changed ones are rebuilt)
    if (ops.length > 0 && this.cfg.loadBalancer.algorithm === "maglev")
      syncMaglev(
        { outer: dp.map("kpr_lb4_maglev"), cfg: dp.map("kpr_maglev_cfg"), sig: dp.map("kpr_lb4_mgsig") },
        encodeModel(this.model, true),
        this.cfg,
        this.log,
      );
    const lastWriteAt = performance.now();
    if (ops.length > 0) markApplyDone(this.cfg.bpf.root);
    const endpointChanges = ops.filter((o) => o.map === "kpr_lb4_be").length;
    return {
      summary: `${keys.size} service${keys.size === 1 ? "" : "s"}${pods ? " and this node's pods" : ""} changed: ${writes} map writes in ${(lastWriteAt - t0).toFixed(2)} ms`,
      writes,
      lastWriteAt,
      serviceChanges: keys.size,
      endpointChanges,
    };
  }

  /**
   * Takes a new config (SIGHUP). A change of bpf.root cannot be carried out in place: it is
   * refused (KprError) and the old config stays. Anything else is applied by a full pass that
   * reloads the programs where they changed (link updates; the pinned maps, connection tracking
   * included, are kept). New map sizes (bpf.lbMapMax, the CT/NAT sizes) are migrated by that pass
   * without dropping connections; a shrink below what a map holds is refused here.
   */
  async reload(cfg: Config): Promise<string[]> {
    const old = this.cfg;
    if (cfg.bpf.root !== old.bpf.root)
      throw new KprError(
        `reload: bpf.root changed from ${old.bpf.root} to ${cfg.bpf.root}: refused (restart kpr run to move its state; the old config stays in effect)`,
      );
    try {
      resizePlan(cfg);
    } catch (e) {
      throw new KprError(`reload: ${(e as Error).message} (the old config stays in effect)`);
    }
    const changed = Object.keys(cfg).filter(
      (k) => JSON.stringify(cfg[k as keyof Config]) !== JSON.stringify(old[k as keyof Config]),
    );
    if (changed.length === 0) return [];
    while (this.running) await this.idle;
    this.cfg = cfg;
    this.dp?.close();
    this.dp = undefined;
    this.needFull = "config";
    this.debouncer.poke();
    return changed;
  }

  /** Stops following the source and closes the maps; the datapath stays programmed. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.debouncer.cancel();
    if (this.deviceTimer) clearInterval(this.deviceTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.o.source.stop();
    await this.idle;
    this.dp?.close();
    this.dp = undefined;
    this.lock?.[Symbol.dispose]();
    this.lock = undefined;
  }
}

interface SyncResult {
  summary: string;
  writes: number;
  lastWriteAt?: number;
  serviceChanges: number;
  endpointChanges: number;
}
