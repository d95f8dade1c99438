import { describe, expect, test } from "bun:test";
import { cgroup2Mounts, type MountEntry, mountOf } from "../../src/datapath/bpffs.ts";

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
