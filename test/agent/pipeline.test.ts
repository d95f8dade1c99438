/**
 * The daemon loop on real pinned maps (no devices, no socket hooks: only maps are programmed):
 * nothing is written before the source's first complete sync, a restart over programmed state
 * rewrites nothing, a change is programmed incrementally and leaves the maps equal to a full
 * apply of the same state, a rejected change keeps the last good state, the guard refuses a wipe,
 * and stop() leaves everything programmed. Plus the debouncer's coalescing bounds.
 */
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { Daemon, Debouncer } from "../../src/agent/daemon.ts";
import { applyOnce } from "../../src/agent/pipeline.ts";
import { type Config, defaultConfig } from "../../src/config/config.ts";
import { BpfMap } from "../../src/datapath/bpf.ts";
import { LB_STATE_MAPS } from "../../src/datapath/lbmaps.ts";
import { hex, type MapState, modelToMapState, previousIdsFromState } from "../../src/datapath/mapstate.ts";
import { readPinnedState } from "../../src/datapath/reconcile.ts";
import { type ClusterSource, noChanges, type SourceChanges } from "../../src/k8s/source.ts";
import type { ClusterState } from "../../src/k8s/types.ts";
import { translate } from "../../src/lb/translate.ts";
import { log } from "../../src/log.ts";
import { needs } from "../harness/env.ts";
import { useTopology } from "../harness/netns.ts";
import { ep, node, slice, state, svc } from "../lb/_fixtures.ts";

/** What device detection sees: nothing (these tests run in the host's network namespace). */
const NO_NET = { links: [], routes: [] };
const quiet = log.withTag("test");
quiet.level = -999;

describe("Debouncer", () => {
  test("a burst runs once, after the idle window", async () => {
    let runs = 0;
    const d = new Debouncer(() => runs++, { idleMs: 20, maxDelayMs: 1000 });
    for (let i = 0; i < 50; i++) d.poke();
    expect(runs, "nothing before the idle window").toBe(0);
    const end = performance.now() + 2000;
    while (runs === 0 && performance.now() < end) await Bun.sleep(2);
    await Bun.sleep(40);
    expect(runs, "one run for 50 pokes").toBe(1);
  });

  test("a steady stream cannot starve it: runs at least every maxDelayMs", async () => {
    let runs = 0;
    const d = new Debouncer(() => runs++, { idleMs: 50, maxDelayMs: 30 });
    const t0 = performance.now();
    while (performance.now() - t0 < 300) {
      d.poke(); // always sooner than the idle window
      await Bun.sleep(5);
    }
    d.cancel();
    expect(runs, "runs during 300 ms of pokes every 5 ms (idle 50 ms never reached)").toBeGreaterThanOrEqual(
      3,
    );
    expect(runs, "still coalesced (60 pokes)").toBeLessThan(30);
  });
});

/** A source over an in-memory state the test edits. */
class TestSource implements ClusterSource {
  readonly description = "test source";
  synced = false;
  lastError: string | undefined;
  private changes: SourceChanges = noChanges();
  private notify: () => void = () => {};
  constructor(public st: ClusterState) {}
  async start(onChange: () => void): Promise<void> {
    this.notify = onChange;
  }
  snapshot(): ClusterState {
    return this.st;
  }
  serviceObjects(key: string) {
    const name = (o: { metadata: { namespace?: string; name?: string } }) =>
      `${o.metadata.namespace ?? "default"}/${o.metadata.name}`;
    return {
      services: this.st.services.filter((s) => name(s) === key),
      endpointSlices: this.st.endpointSlices.filter(
        (s) =>
          `${s.metadata.namespace ?? "default"}/${s.metadata.labels?.["kubernetes.io/service-name"]}` === key,
      ),
      endpoints: [],
    };
  }
  takeChanges(): SourceChanges {
    const c = this.changes;
    this.changes = noChanges();
    return c;
  }
  async stop(): Promise<void> {}
  /** Replaces the state; `keys` changed (undefined: all). */
  set(st: ClusterState, keys?: string[], opts: { synced?: boolean; lastError?: string } = {}): void {
    this.st = st;
    if (keys) for (const k of keys) this.changes.services.add(k);
    else this.changes.all = true;
    if (opts.synced !== undefined) this.synced = opts.synced;
    this.lastError = opts.lastError;
    this.notify();
  }
}

function cluster(endpoints: Record<string, string[]>, badPort = false): ClusterState {
  const s = state({ nodes: [node("node-1", ["192.168.1.10"])] });
  let i = 0;
  for (const [name, ips] of Object.entries(endpoints)) {
    i++;
    s.services.push(
      svc(name, {
        type: "NodePort",
        clusterIP: `10.96.0.${i}`,
        ports: [{ port: badPort && name === "web" ? 70000 : 80, targetPort: 8080, nodePort: 30000 + i }],
      }),
    );
    s.endpointSlices.push(
      slice(
        name,
        `${name}-a`,
        [{ port: 8080 }],
        ips.map((ip) => ep(ip)),
      ),
    );
  }
  return s;
}

function dump(st: MapState | undefined): Record<string, string[]> {
  return Object.fromEntries(
    LB_STATE_MAPS.map((m) => [
      m,
      [...(st?.[m].entries() ?? [])].map(([k, e]) => `${k}=${hex(e.value)}`).sort(),
    ]),
  );
}

const skip = needs({ root: true, bpfObjects: ["sock", "tc"] }, "agent daemon on pinned maps");

describe.skipIf(!!skip)("Daemon on pinned maps", () => {
  const topo = useTopology({ setup: async () => {} });
  const config = (): Config => {
    const c = defaultConfig();
    c.nodeName = "node-1";
    c.bpf.root = topo().bpfRoot;
    c.cgroup.root = topo().cgroupDir;
    c.socketLB.enabled = false;
    return c;
  };
  const start = async (src: TestSource, over: Partial<ConstructorParameters<typeof Daemon>[0]> = {}) => {
    const d = new Daemon({
      cfg: config(),
      configPath: "<test>",
      source: src,
      log: quiet,
      guard: { pruneAll: false },
      guardEverySync: true,
      debounce: { idleMs: 1, maxDelayMs: 5 },
      // in the host's network namespace: detect no devices (nothing attaches to its interfaces)
      net: NO_NET,
      devicePollMs: 0,
      ...over,
    });
    await d.start();
    await d.settled();
    return d;
  };
  const expectProgrammed = (st: ClusterState, what: string) => {
    const cfg = config();
    const programmed = readPinnedState(cfg);
    // what a full apply would program (it keeps the ids in use)
    const want = modelToMapState(
      translate(st, cfg, { previous: previousIdsFromState(programmed!) }),
      cfg,
    ).state;
    expect(dump(programmed), what).toEqual(dump(want));
  };

  test("start-up, incremental changes, rejections and stop", async () => {
    const cfg = config();
    const initial = cluster({ web: ["10.244.0.1", "10.244.0.2"], api: ["10.244.0.3"] });
    await applyOnce(initial, {
      cfg,
      configPath: "<test>",
      log: quiet,
      guard: { pruneAll: false },
      net: NO_NET,
    });
    const before = dump(readPinnedState(cfg));
    expect(before.kpr_lb4_svc?.length, "programmed by apply").toBeGreaterThan(0);

    // an unreachable source at start-up: nothing is written, however long it lasts
    const src = new TestSource(cluster({}));
    src.lastError = "connect ECONNREFUSED 127.0.0.1:6443";
    const d = await start(src);
    src.set(cluster({}), ["default/web"], { lastError: "still down" });
    await d.settled();
    expect(d.last, "no sync attempted").toBeUndefined();
    expect(dump(readPinnedState(cfg)), "datapath exactly as it was").toEqual(before);

    // the source syncs with the same state: the first (full) sync rewrites nothing
    src.set(initial, undefined, { synced: true });
    await d.settled();
    expect(d.last?.ok, `first sync ok: ${d.last?.error}`).toBe(true);
    expect(d.timing?.writes, "restart over programmed state: no writes").toBe(0);
    expect(dump(readPinnedState(cfg)), "unchanged").toEqual(before);

    // one endpoint changes: incremental, only the differing entries
    const moved = cluster({ web: ["10.244.0.1", "10.244.0.9"], api: ["10.244.0.3"] });
    src.set(moved, ["default/web"]);
    await d.settled();
    expect(d.last?.ok, `incremental sync ok: ${d.last?.error}`).toBe(true);
    expect(d.timing?.incremental, "incremental").toBe(true);
    expect(d.timing?.writes, "a few writes, not a reprogramming").toBeLessThan(30);
    expectProgrammed(moved, "maps equal a full apply of the new state");

    // a broken change is rejected; the last good state stays programmed
    const good = dump(readPinnedState(cfg));
    src.set(cluster({ web: ["10.244.0.1"], api: ["10.244.0.3"] }, true), ["default/web"]);
    await d.settled();
    expect(d.last?.ok, "rejected").toBe(false);
    expect(d.last?.error, "names file and field").toMatch(
      /web\.yaml:1: Service default\/web: spec\.ports\[0\]\.port/,
    );
    expect(dump(readPinnedState(cfg)), "last good state kept").toEqual(good);

    // removing every service is refused by the guard
    src.set(cluster({}), ["default/web", "default/api"]);
    await d.settled();
    expect(d.last?.ok, "wipe refused").toBe(false);
    expect(d.last?.error, "guard message").toContain("refused: it would remove all 2 programmed services");
    expect(dump(readPinnedState(cfg)), "nothing removed").toEqual(good);

    // one service goes, another arrives; then a full resync agrees
    const next = cluster({ api: ["10.244.0.3", "10.244.0.4"], db: ["10.244.0.5"] });
    src.set(next, ["default/web", "default/api", "default/db"]);
    await d.settled();
    expect(d.last?.ok, `after the fix: ${d.last?.error}`).toBe(true);
    expectProgrammed(next, "maps after remove + add");
    src.set(next);
    await d.settled();
    expect(d.timing?.incremental, "a resync is a full pass").toBe(false);
    expect(d.timing?.writes, "which finds nothing to write").toBe(0);

    // SIGHUP: a shrink below what the maps hold is refused (old config stays); growing them is
    // migrated by the full pass that follows; another change is a full pass too
    const tiny = config();
    tiny.bpf.lbMapMax = 2;
    await expect(d.reload(tiny), "shrink below the content refused").rejects.toThrow(
      /reload: resize map kpr_lb4_svc from 65536 to 2 entries: it holds \d+ .*the old config stays in effect/,
    );
    const bigger = config();
    bigger.bpf.lbMapMax = 131072;
    expect(await d.reload(bigger), "changed keys").toEqual(["bpf"]);
    await d.settled();
    expect(d.last?.ok, `sync after the resize: ${d.last?.error}`).toBe(true);
    expectProgrammed(next, "same services after the resize");
    for (const [name, size] of [
      ["kpr_lb4_svc", 131072],
      ["kpr_lb4_be", 131072],
      ["kpr_svc_meta", 65536],
    ] as const) {
      using m = BpfMap.openPinned(`${cfg.bpf.root}/maps/${name}`);
      expect(m.maxEntries, `${name} resized`).toBe(size);
    }
    expect(existsSync(`${cfg.bpf.root}/maps-resizing`), "no staging left").toBe(false);
    const other = config();
    other.bpf.lbMapMax = 131072;
    other.nodePort.range = [30000, 32000];
    expect(await d.reload(other), "changed keys").toEqual(["nodePort"]);
    await d.settled();
    expect(d.last?.ok, `sync after the reload: ${d.last?.error}`).toBe(true);
    expect(d.timing?.incremental, "a reload is a full pass").toBe(false);
    expectProgrammed(next, "same services after the reload");

    await d.stop();
    expectProgrammed(next, "stop() leaves the datapath programmed");
  });
});
