/**
 * The manifest source of `kpr run --manifest PATH...`: the files and directories `kpr apply -f`
 * takes, followed with fs.watch (on every directory and on the parent of every path, so a file
 * replaced by rename and a directory removed and created again are seen) plus a periodic stat
 * pass for what watches miss. Only files whose stat changed are read again, each with apply's
 * reader (src/k8s/manifest.ts), so their problems carry the same `file:line`. A file that no
 * longer reads keeps its last good objects (and sets lastError); a path that vanishes or a
 * directory left empty keeps its objects too unless `pruneAll` says to let them go.
 */
import { type FSWatcher, readdirSync, type Stats, statSync, watch } from "node:fs";
import { dirname, join } from "node:path";
import type { ConsolaInstance } from "consola";
import { readManifests } from "../k8s/manifest.ts";
import { type ClusterSource, noChanges, type SourceChanges } from "../k8s/source.ts";
import {
  type ClusterState,
  type EndpointSlice,
  type Endpoints,
  emptyClusterState,
  type Service,
} from "../k8s/types.ts";

const MANIFEST_EXT = /\.(ya?ml|json)$/i;
const LABEL_SERVICE_NAME = "kubernetes.io/service-name";
const EMPTY_LIST = Bun.hash.wyhash("[]");

/** Options of ManifestSource. */
export interface ManifestSourceOptions {
  paths: string[];
  log: ConsolaInstance;
  /** a vanished path or an emptied directory removes its objects (else they are kept) */
  pruneAll?: boolean;
  /** the fallback pass (default 1000 ms) */
  pollMs?: number;
  /** test seam: called after a scan has listed every path, before it reads the files */
  afterList?: () => void;
}

interface FileEntry {
  sig: string;
  /** the last good content */
  state: ClusterState;
  /** "ns/name" → canonical JSON of that service's objects in this file (for change detection) */
  keys: Map<string, bigint>;
  pods: bigint;
  nodes: bigint;
  /** the problem of the current content, when it does not read */
  error?: string;
}

function sigOf(st: Stats): string {
  return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}

function statSigOf(p: string): string {
  try {
    return sigOf(statSync(p));
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? "error";
  }
}

function nsName(o: { metadata: { namespace?: string; name?: string } }): string {
  return `${o.metadata.namespace ?? "default"}/${o.metadata.name ?? ""}`;
}

function sliceService(s: EndpointSlice): string | undefined {
  const svc = s.metadata.labels?.[LABEL_SERVICE_NAME];
  return svc === undefined ? undefined : `${s.metadata.namespace ?? "default"}/${svc}`;
}

/** JSON of an object without where it came from (a line shift is no change). */
function canon(o: { source?: unknown }): string {
  const { source: _s, ...rest } = o;
  return JSON.stringify(rest);
}

function keysOf(st: ClusterState): Map<string, bigint> {
  const parts = new Map<string, string[]>();
  const add = (k: string, text: string) => {
    const l = parts.get(k);
    if (l) l.push(text);
    else parts.set(k, [text]);
  };
  for (const s of st.services) add(nsName(s), `S${canon(s)}`);
  for (const s of st.endpointSlices) {
    const k = sliceService(s);
    if (k !== undefined) add(k, `E${canon(s)}`);
  }
  for (const e of st.endpoints) add(nsName(e), `L${canon(e)}`);
  return new Map([...parts].map(([k, l]) => [k, Bun.hash.wyhash(l.join("\n"))]));
}

/** Files under a directory (recursive *.yaml, *.yml, *.json, in name order) and its directories. */
/**
 * Lists `dir` recursively. Each directory's stat signature is taken before it is read, so a file
 * added while (or just after) it is listed changes the signature and the next stat pass rescans.
 */
function walk(dir: string, files: string[], dirs: string[], sigs: Map<string, string>): void {
  dirs.push(dir);
  sigs.set(dir, statSigOf(dir));
  for (const ent of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) walk(p, files, dirs, sigs);
    else if (ent.isFile() && MANIFEST_EXT.test(ent.name)) files.push(p);
  }
}

/** A ClusterSource over manifest files and directories. */
export class ManifestSource implements ClusterSource {
  readonly description: string;
  private files = new Map<string, FileEntry>();
  /** files of each configured path at the last scan that found it readable */
  private listed = new Map<string, string[]>();
  private watchers = new Map<string, FSWatcher>();
  private changes: SourceChanges = noChanges();
  private onChange: () => void = () => {};
  private pollTimer: ReturnType<typeof setTimeout> | undefined;
  private polls = 0;
  /** stat signature of every followed directory and path at the last full scan */
  private dirSigs = new Map<string, string>();
  private scanTimer: ReturnType<typeof setTimeout> | undefined;
  private scanning = false;
  /** paths named by watch events since the last scan */
  private touched = new Set<string>();
  /** the directories followed at the last full scan (the configured ones and those below) */
  private followed = new Set<string>();
  /** the next scan must look at everything (a timer tick, an event without a name) */
  private full = true;
  private rescan = false;
  private pathProblems = new Map<string, string>();
  private snap: ClusterState | undefined;
  /** "ns/name" → that service's objects in every file, kept in step with `files` */
  private index = new Map<string, ServiceObjectsMut>();
  private stopped = false;
  synced = false;
  lastError: string | undefined;

  constructor(private readonly o: ManifestSourceOptions) {
    this.description = `manifest ${o.paths.join(" ")}`;
  }

  async start(onChange: () => void): Promise<void> {
    this.onChange = onChange;
    await this.scan();
    this.schedulePoll();
  }

  /**
   * The fallback pass, every pollMs (1 s): a stat of each followed directory and path. When one
   * changed (a file added, removed or renamed in, which an editor's save does) or every 30th
   * pass, everything is scanned; the watches see in-place edits at once in between. So 10,000
   * files cost a few stats a second, not 10,000.
   */
  private schedulePoll(): void {
    if (this.stopped) return;
    this.pollTimer = setTimeout(() => {
      this.polls++;
      if (this.polls % 30 === 0 || this.dirsChanged()) {
        this.full = true;
        this.kick(0);
      }
      this.schedulePoll();
    }, this.o.pollMs ?? 1000);
  }

  private statSig(p: string): string {
    return statSigOf(p);
  }

  private dirsChanged(): boolean {
    for (const [d, sig] of this.dirSigs) if (this.statSig(d) !== sig) return true;
    return false;
  }

  /** Schedules a scan (coalescing the bursts of events an editor's save makes). */
  private kick(delayMs = 2): void {
    if (this.stopped) return;
    if (this.scanning) {
      this.rescan = true;
      return;
    }
    if (this.scanTimer) return;
    this.scanTimer = setTimeout(() => {
      this.scanTimer = undefined;
      void this.scan();
    }, delayMs);
  }

  private watchDir(dir: string): void {
    if (this.watchers.has(dir)) return;
    try {
      const w = watch(dir, { persistent: false }, (_event, name) => {
        if (typeof name === "string" && name !== "") this.touched.add(join(dir, name));
        else this.full = true;
        this.kick(1);
      });
      w.on("error", () => {
        w.close();
        this.watchers.delete(dir);
        this.kick();
      });
      this.watchers.set(dir, w);
    } catch {
      // not there (yet): the parent's watch or the stat pass finds it
    }
  }

  /** Stats every path and file, reads the changed ones, and reports what changed. */
  async scan(): Promise<void> {
    if (this.scanning || this.stopped) return;
    this.scanning = true;
    try {
      do {
        this.rescan = false;
        const touched = this.touched;
        this.touched = new Set();
        const full = this.full;
        this.full = false;
        if (full || !(await this.scanFiles(touched))) await this.scanOnce();
      } while (this.rescan && !this.stopped);
    } finally {
      this.scanning = false;
    }
  }

  private async scanOnce(): Promise<void> {
    const log = this.o.log;
    const wantDirs = new Set<string>();
    const followed = new Set<string>();
    const present: string[] = [];
    const problems = new Map<string, string>();
    // Signatures taken before anything is listed or read: a change racing this scan (a directory
    // created, then filled) differs from them at the next stat pass instead of going unseen.
    const sigs = new Map<string, string>();
    for (const p of this.o.paths) {
      // the parent is watched for events naming p; the stat pass looks at p itself (the parent's
      // own stat changes with every sibling, which is not kpr's business)
      wantDirs.add(dirname(p));
      sigs.set(p, this.statSig(p));
      let st: Stats;
      try {
        st = statSync(p);
      } catch (e) {
        const had = this.listed.get(p) ?? [];
        const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
        if (had.length > 0 && !this.o.pruneAll) {
          problems.set(
            p,
            `${p}: cannot read: ${code} (its ${had.length} file(s) stay programmed as last read; --prune-all lets them go)`,
          );
          present.push(...had);
        } else {
          problems.set(p, `${p}: cannot read: ${code}`);
          this.listed.delete(p);
        }
        continue;
      }
      let files: string[];
      if (st.isDirectory()) {
        files = [];
        const dirs: string[] = [];
        try {
          walk(p, files, dirs, sigs);
        } catch (e) {
          problems.set(p, `${p}: cannot list: ${(e as Error).message}`);
          present.push(...(this.listed.get(p) ?? []));
          continue;
        }
        for (const d of dirs) {
          wantDirs.add(d);
          followed.add(d);
        }
        const had = this.listed.get(p) ?? [];
        if (files.length === 0 && had.length > 0 && !this.o.pruneAll) {
          problems.set(
            p,
            `${p}: no *.yaml, *.yml or *.json files left (its ${had.length} file(s) stay programmed as last read; --prune-all lets them go)`,
          );
          present.push(...had);
          continue;
        }
      } else files = [p];
      this.listed.set(p, files);
      present.push(...files);
    }
    this.followed = followed;
    this.o.afterList?.();
    for (const d of wantDirs) this.watchDir(d);
    for (const d of followed) if (!sigs.has(d)) sigs.set(d, this.statSig(d));
    this.dirSigs = sigs;
    for (const [d, w] of this.watchers)
      if (!wantDirs.has(d)) {
        w.close();
        this.watchers.delete(d);
      }

    const ch = this.changes;
    let changed = false;
    const keep = new Set(present);
    for (const [f, e] of this.files)
      if (!keep.has(f)) {
        this.files.delete(f);
        this.reindex(e.state, -1);
        this.diff(e, undefined, ch);
        changed = true;
      }
    for (const f of present) {
      let st: Stats;
      try {
        st = statSync(f);
      } catch {
        const had = this.files.get(f);
        if (had && !this.o.pruneAll) continue; // vanished with its path: kept above
        if (had) {
          this.files.delete(f);
          this.reindex(had.state, -1);
          this.diff(had, undefined, ch);
          changed = true;
        }
        continue;
      }
      const sig = sigOf(st);
      const had = this.files.get(f);
      if (had && had.sig === sig) {
        if (had.error) problems.set(f, had.error);
        continue;
      }
      if (await this.readFile(f, had, sig, ch)) changed = true;
      const e = this.files.get(f);
      if (e?.error) problems.set(f, e.error);
    }
    // keep the files' order as listed (the snapshot's object order follows apply's)
    const ordered = new Map<string, FileEntry>();
    for (const f of present) {
      const e = this.files.get(f);
      if (e) ordered.set(f, e);
    }
    this.files = ordered;

    for (const [p, msg] of problems)
      if (this.pathProblems.get(p) !== msg && !this.files.get(p)?.error) log.warn(msg);
    this.pathProblems = problems;
    const lastError = problems.size === 0 ? undefined : [...problems.values()].join("\n");
    // Synced once every file read: a start with a broken file or a missing path writes nothing.
    const synced = this.synced || problems.size === 0;
    const notify = changed || lastError !== this.lastError || synced !== this.synced;
    this.lastError = lastError;
    if (synced && !this.synced) ch.all = true;
    this.synced = synced;
    if (changed) this.snap = undefined;
    if (notify) this.onChange();
  }

  /**
   * The quick path for watch events naming known files that are still there (edited in place or
   * replaced by rename): only those are stat'ed and read. False when an event names anything else
   * (a new or removed file, a directory): the caller scans everything.
   */
  private async scanFiles(paths: Set<string>): Promise<boolean> {
    if (!this.synced) return false;
    const targets: [string, FileEntry, Stats][] = [];
    for (const p of paths) {
      const had = this.files.get(p);
      if (!had) {
        if (this.o.paths.includes(p)) return false;
        // the parent of a configured path is watched for that path only: anything else there
        // (a sibling file or directory) is not kpr's
        if (!this.followed.has(dirname(p))) continue;
        if (MANIFEST_EXT.test(p) || !this.isNoise(p)) return false;
        continue; // an editor's swap or temp file
      }
      try {
        const st = statSync(p);
        if (!st.isFile()) return false;
        targets.push([p, had, st]);
      } catch {
        return false;
      }
    }
    const ch = this.changes;
    let changed = false;
    for (const [f, had, st] of targets) {
      const sig = sigOf(st);
      if (had.sig === sig) continue;
      if (await this.readFile(f, had, sig, ch)) changed = true;
    }
    // a rename into a directory changes its stat: seen here, it needs no full scan from the poll
    for (const [f] of targets) {
      const d = dirname(f);
      if (this.dirSigs.has(d)) this.dirSigs.set(d, this.statSig(d));
    }
    const problems = new Map(this.pathProblems);
    for (const [f] of targets) {
      const e = this.files.get(f);
      if (e?.error) problems.set(f, e.error);
      else problems.delete(f);
    }
    this.pathProblems = problems;
    const lastError = problems.size === 0 ? undefined : [...problems.values()].join("\n");
    const notify = changed || lastError !== this.lastError;
    this.lastError = lastError;
    if (changed) this.snap = undefined;
    if (notify) this.onChange();
    return true;
  }

  /** A path that is no manifest and no directory kpr follows (an editor's temp file). */
  private isNoise(p: string): boolean {
    try {
      return !statSync(p).isDirectory();
    } catch {
      return true;
    }
  }

  /** Reads one file again; true when its objects changed (added to `ch`). */
  private async readFile(
    f: string,
    had: FileEntry | undefined,
    sig: string,
    ch: SourceChanges,
  ): Promise<boolean> {
    const log = this.o.log;
    let state: ClusterState;
    try {
      state = await readManifests([f]);
    } catch (e) {
      const msg = (e as Error).message;
      if (!had || had.error !== msg)
        log.error(
          `rejected ${f}: ${msg} (${had ? "its last good version stays programmed" : "nothing of it is programmed"})`,
        );
      if (had) {
        had.sig = sig;
        had.error = msg;
      } else
        this.files.set(f, {
          sig,
          state: emptyClusterState(),
          keys: new Map(),
          pods: 0n,
          nodes: 0n,
          error: msg,
        });
      return false;
    }
    const entry: FileEntry = {
      sig,
      state,
      keys: keysOf(state),
      pods: Bun.hash.wyhash(JSON.stringify(state.pods.map(canon))),
      nodes: Bun.hash.wyhash(JSON.stringify(state.nodes.map(canon))),
    };
    if (had?.error) log.info(`${f} reads again`);
    if (had) this.reindex(had.state, -1);
    this.reindex(entry.state, 1);
    this.files.set(f, entry);
    return this.diff(had, entry, ch);
  }

  /** Adds to `ch` what differs between two versions of a file; true when anything does. */
  private diff(a: FileEntry | undefined, b: FileEntry | undefined, ch: SourceChanges): boolean {
    let any = false;
    const ka = a?.keys ?? new Map<string, bigint>();
    const kb = b?.keys ?? new Map<string, bigint>();
    for (const [k, v] of ka)
      if (kb.get(k) !== v) {
        ch.services.add(k);
        any = true;
      }
    for (const k of kb.keys())
      if (!ka.has(k)) {
        ch.services.add(k);
        any = true;
      }
    if ((a?.pods ?? EMPTY_LIST) !== (b?.pods ?? EMPTY_LIST)) {
      ch.pods = true;
      any = true;
    }
    if ((a?.nodes ?? EMPTY_LIST) !== (b?.nodes ?? EMPTY_LIST)) {
      ch.all = true;
      any = true;
    }
    return any;
  }

  snapshot(): ClusterState {
    if (this.snap) return this.snap;
    const out = emptyClusterState();
    for (const e of this.files.values()) {
      out.services.push(...e.state.services);
      out.endpointSlices.push(...e.state.endpointSlices);
      out.endpoints.push(...e.state.endpoints);
      out.pods.push(...e.state.pods);
      out.nodes.push(...e.state.nodes);
    }
    this.snap = out;
    return out;
  }

  serviceObjects(key: string): Pick<ClusterState, "services" | "endpointSlices" | "endpoints"> {
    return this.index.get(key) ?? { services: [], endpointSlices: [], endpoints: [] };
  }

  /** Adds (n = 1) or removes (n = -1) a file's objects to or from the index. */
  private reindex(st: ClusterState, n: 1 | -1): void {
    const touch = <T>(k: string, pick: (o: ServiceObjectsMut) => T[], obj: T) => {
      let o = this.index.get(k);
      if (!o) {
        if (n < 0) return;
        o = { services: [], endpointSlices: [], endpoints: [] };
        this.index.set(k, o);
      }
      const list = pick(o);
      if (n > 0) list.push(obj);
      else {
        const i = list.indexOf(obj);
        if (i >= 0) list.splice(i, 1);
        if (o.services.length + o.endpointSlices.length + o.endpoints.length === 0) this.index.delete(k);
      }
    };
    for (const s of st.services) touch(nsName(s), (o) => o.services, s);
    for (const s of st.endpointSlices) {
      const k = sliceService(s);
      if (k !== undefined) touch(k, (o) => o.endpointSlices, s);
    }
    for (const e of st.endpoints) touch(nsName(e), (o) => o.endpoints, e);
  }

  takeChanges(): SourceChanges {
    const c = this.changes;
    this.changes = noChanges();
    return c;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pollTimer) clearTimeout(this.pollTimer);
    if (this.scanTimer) clearTimeout(this.scanTimer);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }
}

interface ServiceObjectsMut {
  services: Service[];
  endpointSlices: EndpointSlice[];
  endpoints: Endpoints[];
}
