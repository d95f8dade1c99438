/**
 * bpf.root squatting and `kpr cleanup`'s reach: a bpf.root another user owns or can write is
 * refused; cleanup removes only kpr's own pins (a foreign pin and its directory stay), refuses
 * a bpf.root that is a bpffs mount point, and undoes the cgroup directories kpr made. An apply
 * notices a replaced map pin (programs reading another map than the one it writes).
 */
import { describe, expect, test } from "bun:test";
import {
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { BpfMap, MapType } from "../../src/datapath/bpf.ts";
import { cleanupCgroupRoot, ensureCgroup2 } from "../../src/datapath/bpffs.ts";
import { needs } from "../harness/env.ts";
import { cgroup2Mount, REPO_ROOT, useTopology } from "../harness/netns.ts";

const skip = needs(
  { root: true, built: true, tools: ["ip", "nsenter", "mount", "umount"] },
  "bpffs squatting and cleanup",
);

describe.skipIf(!!skip)("bpf.root ownership and cleanup's reach", () => {
  const topo = useTopology({
    setup: async (t) => {
      await t.addNs("node");
      t.writeConfig({ socketLB: { enabled: false }, nodeName: "node-1" });
    },
  });
  const demo = join(REPO_ROOT, "examples/demo");

  test("a bpf.root owned by another user is refused, nothing is pinned there", async () => {
    const t = topo();
    mkdirSync(t.bpfRoot, { recursive: true, mode: 0o700 });
    chownSync(t.bpfRoot, 1000, 1000);
    try {
      const r = await t.kpr("node", ["apply", "-f", demo]);
      expect(r.code, `exit code\n${r.stderr}`).toBe(1);
      expect(r.stderr, "names the owner").toContain(`${t.bpfRoot} is owned by uid 1000, not root`);
      expect(readdirSync(t.bpfRoot), "nothing pinned in the squatted root").toEqual([]);
    } finally {
      chownSync(t.bpfRoot, 0, 0);
    }
  });

  test("cleanup removes kpr's pins only: a foreign pin and its directory stay", async () => {
    const t = topo();
    const applied = await t.kpr("node", ["apply", "-f", demo]);
    expect(applied.code, `apply\n${applied.stderr}`).toBe(0);
    const foreign = join(t.bpfRoot, "maps", "cilium_foreign");
    {
      using m = BpfMap.create({
        name: "foreign",
        type: MapType.HASH,
        keySize: 4,
        valueSize: 4,
        maxEntries: 4,
      });
      m.pin(foreign);
    }
    const r = await t.kpr("node", ["cleanup"]);
    expect(r.code, `cleanup\n${r.stderr}`).toBe(0);
    expect(existsSync(foreign), "the foreign pin is still there").toBe(true);
    expect(readdirSync(join(t.bpfRoot, "maps")), "only the foreign pin is left").toEqual(["cilium_foreign"]);
    expect(r.stderr, "says what it left").toContain("entries kpr did not create");
  });

  test("a bpf.root reached through a symlink: apply pins at its target, cleanup leaves no mount and no directory", async () => {
    const t = topo();
    const link = join(t.tmpDir, "bpf-link");
    // a root of its own below the topology's (which other tests leave a foreign pin in)
    const target = join(t.bpfRoot, "via-link");
    mkdirSync(target, { recursive: true, mode: 0o700 });
    symlinkSync(target, link);
    const cfg = join(t.tmpDir, "link-config.yaml");
    writeFileSync(
      cfg,
      `bpf:\n  root: ${link}\ncgroup:\n  root: ${t.cgroupDir}\nsocketLB:\n  enabled: false\n`,
    );
    const bpfMounts = () =>
      readFileSync("/proc/self/mountinfo", "utf8")
        .split("\n")
        .filter((l) => / - bpf /.test(l) && (l.includes(` ${target} `) || l.includes(` ${link} `)));
    const a = await t.kpr("node", ["apply", "-f", demo], { config: cfg });
    expect(a.code, `apply through the symlink\n${a.stderr}`).toBe(0);
    expect(existsSync(join(target, "maps", "kpr_lb4_svc")), "pins at the symlink's target").toBe(true);
    expect(bpfMounts(), "no bpffs mounted at the root or the link").toEqual([]);
    // what an older kpr left: a bpffs mounted at the resolved root, inside /sys/fs/bpf
    expect(
      Bun.spawnSync(["mount", "-t", "bpf", "-o", "mode=0777", "bpf", target]).exitCode,
      "mount a stray bpffs",
    ).toBe(0);
    try {
      const c = await t.kpr("node", ["cleanup"], { config: cfg });
      expect(c.code, `cleanup through the symlink\n${c.stderr}`).toBe(0);
      expect(c.stdout + c.stderr, "the stray mount is named").toContain(`stray bpffs mount at ${target}`);
      expect(bpfMounts(), "no bpffs left at the root").toEqual([]);
      const again = await t.kpr("node", ["apply", "-f", demo], { config: cfg });
      expect(again.code, `re-apply\n${again.stderr}`).toBe(0);
      const c2 = await t.kpr("node", ["cleanup"], { config: cfg });
      expect(c2.code, `cleanup\n${c2.stderr}`).toBe(0);
      expect(
        existsSync(target) ? readdirSync(target) : "gone",
        `the root directory is gone\n${c2.stdout}${c2.stderr}`,
      ).toBe("gone");
    } finally {
      if (bpfMounts().length > 0) Bun.spawnSync(["umount", "-l", target]);
      rmSync(link, { force: true });
    }
  });

  test("cleanup refuses a bpf.root that is a bpffs mount point", async () => {
    const t = topo();
    const mnt = join(t.tmpDir, "bpfmnt");
    mkdirSync(mnt, { recursive: true });
    const cfg = join(t.tmpDir, "mnt-config.yaml");
    writeFileSync(
      cfg,
      `bpf:\n  root: ${mnt}\ncgroup:\n  root: ${t.cgroupDir}\nsocketLB:\n  enabled: false\n`,
    );
    expect(Bun.spawnSync(["mount", "-t", "bpf", "-o", "mode=0700", "bpf", mnt]).exitCode, "mount bpffs").toBe(
      0,
    );
    try {
      const keep = join(mnt, "someone_elses_pin");
      {
        using m = BpfMap.create({
          name: "other",
          type: MapType.HASH,
          keySize: 4,
          valueSize: 4,
          maxEntries: 4,
        });
        m.pin(keep);
      }
      const r = await t.kpr("node", ["cleanup"], { config: cfg });
      expect(r.code, `cleanup exit code\n${r.stderr}`).toBe(2);
      expect(r.stderr, "says why").toContain("it is a bpffs mount point");
      expect(existsSync(keep), "nothing removed").toBe(true);
      const a = await t.kpr("node", ["apply", "-f", demo], { config: cfg });
      expect(a.code, `apply exit code\n${a.stderr}`).toBe(2);
    } finally {
      Bun.spawnSync(["umount", mnt]);
      rmdirSync(mnt);
    }
  });

  test("a replaced map pin is noticed: the apply fails before writing, naming the map", async () => {
    const t = topo();
    const cfg = join(t.tmpDir, "socklb-config.yaml");
    writeFileSync(cfg, `bpf:\n  root: ${t.bpfRoot}\ncgroup:\n  root: ${t.cgroupDir}\nnodeName: node-1\n`);
    const first = await t.kpr("node", ["apply", "-f", demo], { config: cfg });
    expect(first.code, `first apply\n${first.stderr}`).toBe(0);
    const pin = join(t.bpfRoot, "maps", "kpr_lb4_svc");
    const spec = (() => {
      using m = BpfMap.openPinned(pin);
      return {
        type: m.type,
        keySize: m.keySize,
        valueSize: m.valueSize,
        maxEntries: m.maxEntries,
        flags: m.spec.flags,
      };
    })();
    rmSync(pin);
    {
      using m = BpfMap.create({ name: "kpr_lb4_svc", ...spec });
      m.pin(pin);
    }
    const again = await t.kpr("node", ["apply", "-f", demo], { config: cfg });
    expect(again.code, `apply over a replaced pin\n${again.stderr}`).toBe(1);
    expect(again.stderr, "names the map").toMatch(/do not use the maps pinned under .*kpr_lb4_svc/);
    {
      using m = BpfMap.openPinned(pin);
      expect([...m.entries()].length, "nothing written into the impostor").toBe(0);
    }
    const clean = await t.kpr("node", ["cleanup"], { config: cfg });
    expect(clean.code, `cleanup\n${clean.stderr}`).toBe(0);
  });

  test("the cgroup directories kpr made are removed by its cleanup", () => {
    const t = topo();
    mkdirSync(t.bpfRoot, { recursive: true, mode: 0o700 });
    const base = join(cgroup2Mount(), t.prefix);
    const root = join(base, "made", "here");
    ensureCgroup2(root, t.bpfRoot);
    expect(existsSync(root), "made").toBe(true);
    expect(cleanupCgroupRoot(root, t.bpfRoot), "removed, innermost first").toEqual([
      `dir ${root}`,
      `dir ${join(base, "made")}`,
    ]);
    expect(existsSync(join(base, "made")), "gone").toBe(false);
    expect(existsSync(base), "the directory that was there before stays").toBe(true);
  });
});
