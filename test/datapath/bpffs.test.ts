import { describe, expect, test } from "bun:test";
import {
  cgroup2Mounts,
  checkBpfRootPlace,
  type MountEntry,
  mountOf,
  unsafeDirReason,
} from "../../src/datapath/bpffs.ts";

const table: MountEntry[] = [
  { mountPoint: "/", fsType: "ext4", source: "/dev/vda" },
  { mountPoint: "/sys", fsType: "sysfs", source: "sysfs" },
  { mountPoint: "/sys/fs/bpf", fsType: "bpf", source: "bpf" },
  { mountPoint: "/sys/fs/cgroup/unified", fsType: "cgroup2", source: "cgroup2" },
  { mountPoint: "/run/kpr/cgroupv2", fsType: "cgroup2", source: "none" },
];

describe("mountOf", () => {
  test.each([
    ["/sys/fs/bpf/kpr", "/sys/fs/bpf", "bpf"],
    ["/sys/fs/bpf", "/sys/fs/bpf", "bpf"],
    ["/sys/fs/bpfx", "/sys", "sysfs"],
    ["/run/kpr/cgroupv2/x", "/run/kpr/cgroupv2", "cgroup2"],
    ["/etc", "/", "ext4"],
  ])("%s is on %s (%s)", (path, point, fs) => {
    expect(mountOf(path, table)).toMatchObject({ mountPoint: point, fsType: fs });
  });
  test("cgroup2 mounts in order", () => {
    expect(cgroup2Mounts(table)).toEqual(["/sys/fs/cgroup/unified", "/run/kpr/cgroupv2"]);
  });
});

describe("bpf.root safety", () => {
  const owners: Record<string, { uid: number; mode: number }> = {
    "/": { uid: 0, mode: 0o755 },
    "/sys": { uid: 0, mode: 0o755 },
    "/sys/fs": { uid: 0, mode: 0o755 },
    "/sys/fs/bpf": { uid: 0, mode: 0o1777 },
    "/sys/fs/bpf/kpr": { uid: 0, mode: 0o700 },
    "/sys/fs/bpf/squat": { uid: 1000, mode: 0o700 },
    "/sys/fs/bpf/open": { uid: 0, mode: 0o777 },
    "/sys/fs/bpf/group": { uid: 0, mode: 0o770 },
    "/sys/fs/bpf/open/kpr": { uid: 0, mode: 0o700 },
    "/sys/fs/bpf/sticky": { uid: 0, mode: 0o1777 },
  };
  const stat = (p: string) => owners[p]!;
  test.each([
    ["/sys/fs/bpf/kpr", undefined],
    ["/sys/fs/bpf/squat", "/sys/fs/bpf/squat is owned by uid 1000, not root"],
    ["/sys/fs/bpf/open", "/sys/fs/bpf/open is writable by everyone (mode 777)"],
    ["/sys/fs/bpf/group", "/sys/fs/bpf/group is writable by its group (mode 770)"],
    ["/sys/fs/bpf/open/kpr", "/sys/fs/bpf/open is writable by everyone (mode 777)"],
    ["/sys/fs/bpf/sticky", "/sys/fs/bpf/sticky is writable by everyone (mode 1777)"],
  ])("%s → %s", (dir, want) => expect(unsafeDirReason(dir, stat), dir).toBe(want));

  test.each([
    ["/sys/fs/bpf/kpr", undefined],
    ["/sys/fs/bpf", "it is a bpffs mount point"],
    ["/etc/kpr", "not on a bpf filesystem"],
  ])("checkBpfRootPlace(%s)", (root, want) => {
    let msg: string | undefined;
    try {
      checkBpfRootPlace(root, root, table);
    } catch (e) {
      msg = (e as Error).message;
    }
    if (want === undefined) expect(msg, root).toBeUndefined();
    else expect(msg, root).toContain(want);
  });
});
