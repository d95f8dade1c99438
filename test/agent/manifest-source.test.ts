/**
 * The manifest source of `kpr run --manifest`: edits (in place and by rename), a broken edit that
 * keeps the last good objects with apply's file:line message, a directory emptied or removed that
 * keeps its objects (unless pruneAll), and following a directory created again.
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ManifestSource } from "../../src/agent/manifest-source.ts";
import { log } from "../../src/log.ts";

const tmp = mkdtempSync(join(tmpdir(), "kprB-msrc-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const quiet = log.withTag("test");
quiet.level = -999;

function svcYaml(name: string, ip: string, endpoint: string, port = 80): string {
  return `apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: t }
spec:
  clusterIP: ${ip}
  ports:
  - port: ${port}
    targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: ${name}-a, namespace: t, labels: { kubernetes.io/service-name: ${name} } }
addressType: IPv4
ports: [{ port: 8080 }]
endpoints: [{ addresses: ["${endpoint}"] }]
`;
}

let sources: ManifestSource[] = [];
afterEach(async () => {
  for (const s of sources) await s.stop();
  sources = [];
});

/** Starts a source on `paths`; `changed()` resolves with the next non-empty change set. */
async function follow(
  paths: string[],
  opts: { pruneAll?: boolean; pollMs?: number; afterList?: () => void } = {},
) {
  let notified = 0;
  const src = new ManifestSource({ paths, log: quiet, ...opts });
  sources.push(src);
  await src.start(() => notified++);
  const until = async <T>(what: string, f: () => T | undefined, ms = 3000): Promise<T> => {
    const end = performance.now() + ms;
    for (;;) {
      const v = f();
      if (v !== undefined) return v;
      if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
      await Bun.sleep(5);
    }
  };
  let pending = { all: false, services: new Set<string>(), pods: false };
  const take = () => {
    const c = src.takeChanges();
    pending = {
      all: pending.all || c.all,
      services: new Set([...pending.services, ...c.services]),
      pods: pending.pods || c.pods,
    };
  };
  return {
    src,
    notified: () => notified,
    until,
    /** Waits until the accumulated changes name `key`, then returns and clears them. */
    changedTo: async (key: string, ms = 3000) => {
      await until(
        `a change of ${key}`,
        () => {
          take();
          return pending.services.has(key) ? true : undefined;
        },
        ms,
      );
      const out = pending;
      pending = { all: false, services: new Set(), pods: false };
      return out;
    },
    endpointOf: (key: string) => src.serviceObjects(key).endpointSlices[0]?.endpoints?.[0]?.addresses?.[0],
  };
}

describe("ManifestSource", () => {
  test("reads a directory, reports the services an in-place edit and a rename-replace change, within 1 s", async () => {
    const dir = join(tmp, "edit");
    mkdirSync(dir);
    writeFileSync(join(dir, "a.yaml"), svcYaml("a", "10.96.0.1", "10.244.0.1"));
    writeFileSync(join(dir, "b.yaml"), svcYaml("b", "10.96.0.2", "10.244.0.2"));
    const f = await follow([dir], { pollMs: 60_000 });
    expect(f.src.synced, "synced after the first read").toBe(true);
    expect(f.src.lastError, "no error").toBeUndefined();
    const first = f.src.takeChanges();
    expect(first.all, "first read: all").toBe(true);
    expect(f.src.snapshot().services.length, "services").toBe(2);

    const t0 = performance.now();
    writeFileSync(join(dir, "a.yaml"), svcYaml("a", "10.96.0.1", "10.244.0.9"));
    const c = await f.changedTo("t/a", 1000);
    expect(performance.now() - t0, "seen within 1 s (fs.watch, the stat pass is off)").toBeLessThan(1000);
    expect([...c.services], "only a changed").toEqual(["t/a"]);
    expect(f.endpointOf("t/a"), "new endpoint").toBe("10.244.0.9");

    // an editor's save: write a temp file, rename it over the original
    writeFileSync(join(dir, ".b.yaml.swp"), "not a manifest");
    writeFileSync(join(dir, "b.tmp"), svcYaml("b", "10.96.0.2", "10.244.0.8"));
    renameSync(join(dir, "b.tmp"), join(dir, "b.yaml"));
    const c2 = await f.changedTo("t/b", 1000);
    expect([...c2.services], "only b changed").toEqual(["t/b"]);
    expect(f.endpointOf("t/b"), "renamed-in endpoint").toBe("10.244.0.8");

    // a file moved elsewhere in the tree: same objects, no change but the source line
    writeFileSync(join(dir, "c.yaml"), svcYaml("c", "10.96.0.3", "10.244.0.3"));
    await f.changedTo("t/c", 1000);
    unlinkSync(join(dir, "c.yaml"));
    const gone = await f.changedTo("t/c", 1000);
    expect(gone.services.has("t/c"), "c removed").toBe(true);
    expect(f.src.serviceObjects("t/c").services, "c's objects gone").toEqual([]);
  });

  test("what happens beside a followed directory (in its parent) costs no full scan; a rename into it and a replaced directory are read", async () => {
    const parent = join(tmp, "beside");
    const dir = join(parent, "m");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "a.yaml"), svcYaml("a", "10.96.0.31", "10.244.3.1"));
    let fullScans = 0;
    const f = await follow([dir], { pollMs: 100, afterList: () => fullScans++ });
    f.src.takeChanges();
    const before = fullScans;
    // siblings come and go in the parent (an editor's or a tool's scratch files and directories)
    for (let i = 0; i < 5; i++) {
      writeFileSync(join(parent, `scratch-${i}.json`), "{}");
      mkdirSync(join(parent, `scratch-dir-${i}`));
      writeFileSync(join(parent, `scratch-dir-${i}`, "x.yaml"), "kind: Junk");
      await Bun.sleep(60);
    }
    await Bun.sleep(400); // several stat passes
    expect(fullScans - before, "no full scan for the parent's other entries").toBe(0);
    // a save by rename from the parent into the directory (the stat pass may see the directory's
    // new stat before the watch event is handled, and then scans it: either way the edit is read)
    writeFileSync(join(parent, "a.tmp"), svcYaml("a", "10.96.0.31", "10.244.3.2"));
    renameSync(join(parent, "a.tmp"), join(dir, "a.yaml"));
    await f.changedTo("t/a", 1000);
    expect(f.endpointOf("t/a"), "renamed-in endpoint").toBe("10.244.3.2");
    const afterRename = fullScans;
    // the followed directory itself replaced: a full scan
    rmSync(dir, { recursive: true });
    mkdirSync(dir);
    writeFileSync(join(dir, "b.yaml"), svcYaml("b", "10.96.0.32", "10.244.3.3"));
    await f.changedTo("t/b", 2000);
    expect(fullScans - afterRename, "a replaced directory is scanned").toBeGreaterThan(0);
  });

  test("a broken edit keeps the last good objects and reports apply's file:line message", async () => {
    const dir = join(tmp, "broken");
    mkdirSync(dir);
    const file = join(dir, "web.yaml");
    writeFileSync(file, svcYaml("web", "10.96.0.10", "10.244.1.1"));
    const f = await follow([dir], { pollMs: 60_000 });
    f.src.takeChanges();
    writeFileSync(file, `${svcYaml("web", "10.96.0.10", "10.244.1.2")}\n---\nkind: [broken\n`);
    await f.until("lastError", () => f.src.lastError);
    expect(f.src.lastError, "file:line of the problem").toMatch(new RegExp(`${file}:\\d+`));
    expect(f.endpointOf("t/web"), "last good objects kept").toBe("10.244.1.1");
    expect(f.src.takeChanges().services.size, "no service change reported").toBe(0);
    writeFileSync(file, svcYaml("web", "10.96.0.10", "10.244.1.3"));
    await f.changedTo("t/web", 1000);
    expect(f.src.lastError, "error cleared by the fix").toBeUndefined();
    expect(f.endpointOf("t/web"), "the fixed version").toBe("10.244.1.3");
  });

  test("an emptied or vanished directory keeps its objects; the directory is followed when it comes back", async () => {
    const dir = join(tmp, "vanish");
    mkdirSync(dir);
    writeFileSync(join(dir, "a.yaml"), svcYaml("a", "10.96.0.1", "10.244.0.1"));
    const f = await follow([dir], { pollMs: 100 });
    f.src.takeChanges();
    unlinkSync(join(dir, "a.yaml"));
    await f.until("the empty-directory warning", () => f.src.lastError);
    expect(f.src.lastError, "says it keeps them").toContain("stay programmed");
    expect(f.src.snapshot().services.length, "objects kept (emptied)").toBe(1);
    rmSync(dir, { recursive: true });
    await f.until("the vanished-directory warning", () =>
      f.src.lastError?.includes("ENOENT") ? true : undefined,
    );
    expect(f.src.snapshot().services.length, "objects kept (vanished)").toBe(1);
    expect(f.src.takeChanges().services.size, "no removal reported").toBe(0);

    mkdirSync(dir);
    writeFileSync(join(dir, "a.yaml"), svcYaml("a", "10.96.0.1", "10.244.0.7"));
    await f.changedTo("t/a", 2000);
    expect(f.endpointOf("t/a"), "followed again").toBe("10.244.0.7");
    expect(f.src.lastError, "healthy again").toBeUndefined();
  });

  test("a file written while its new directory is being listed is still seen (CI race, fixed)", async () => {
    // A directory created and then filled: the scan the creation triggers can list it before the
    // files land. The stat pass must then see the directory differ from what was listed.
    const dir = join(tmp, "race");
    let armed = true;
    const f = await follow([dir], {
      pollMs: 100,
      afterList: () => {
        // the first scan that finds the directory: it has been listed (empty), not yet watched
        if (!armed || !existsSync(dir)) return;
        armed = false;
        writeFileSync(join(dir, "late.yaml"), svcYaml("late", "10.96.0.9", "10.244.0.9"));
      },
    });
    mkdirSync(dir);
    await f.changedTo("t/late", 1500);
    expect(f.endpointOf("t/late"), "the late file is read").toBe("10.244.0.9");
  });

  test("with pruneAll an emptied directory lets its objects go", async () => {
    const dir = join(tmp, "prune");
    mkdirSync(dir);
    writeFileSync(join(dir, "a.yaml"), svcYaml("a", "10.96.0.1", "10.244.0.1"));
    const f = await follow([dir], { pruneAll: true, pollMs: 100 });
    f.src.takeChanges();
    unlinkSync(join(dir, "a.yaml"));
    const c = await f.changedTo("t/a", 2000);
    expect(c.services.has("t/a"), "a removed").toBe(true);
    expect(f.src.snapshot().services, "no objects").toEqual([]);
  });

  test("a missing path or a broken file at start-up: not synced (the agent writes nothing)", async () => {
    const missing = await follow([join(tmp, "nope")], { pollMs: 60_000 });
    expect(missing.src.synced, "missing path: not synced").toBe(false);
    expect(missing.src.lastError, "says why").toContain("ENOENT");
    const dir = join(tmp, "badstart");
    mkdirSync(dir);
    writeFileSync(join(dir, "x.yaml"), "kind: [oops\n");
    const bad = await follow([dir], { pollMs: 60_000 });
    expect(bad.src.synced, "broken file: not synced").toBe(false);
    writeFileSync(join(dir, "x.yaml"), svcYaml("x", "10.96.0.5", "10.244.0.5"));
    await bad.until("synced after the fix", () => (bad.src.synced ? true : undefined));
    expect(bad.src.takeChanges().all, "the first complete read is a full change").toBe(true);
  });
});
