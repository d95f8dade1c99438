/**
 * Kernel feature probe for `kpr bpf probe`: what is present, what is missing and which kpr
 * feature needs it. Read-only: loads small programs and creates throwaway maps, never attaches.
 */
import { existsSync, readFileSync } from "node:fs";
import { release } from "node:os";
import type { Config } from "../config/config.ts";
import { hasTcx } from "./attach.ts";
import { BpfMap, MapType, ProgType } from "./bpf.ts";
import { cgroup2Mounts, mounts } from "./bpffs.ts";
import {
  BpfError,
  errnoName,
  ethtoolDriver,
  libbpfVersion,
  listInterfaces,
  netnsCookie,
  unsafeLibbpf,
} from "./ffi.ts";
import { embeddedObject, kernelAtLeast } from "./objects.ts";

/** One probed feature. */
export interface Feature {
  name: string;
  present: boolean;
  /** what was found (version, driver, error) */
  detail: string;
  /** the kpr feature that uses it */
  neededBy: string;
  /** true when the current config cannot work without it */
  required: boolean;
}

export interface ProbeReport {
  kernel: string;
  libbpf: string;
  features: Feature[];
  /** required features that are missing */
  missing: string[];
}

/**
 * Drivers with native XDP in mainline Linux. Native support is decided by the device's driver
 * name (SIOCETHTOOL GDRVINFO in the current netns) against this list: probing for real would mean
 * attaching to the device, which the probe must not do.
 */
export const NATIVE_XDP_DRIVERS = new Set([
  "veth",
  "virtio_net",
  "tun",
  "bond",
  "netdevsim",
  "mlx4_en",
  "mlx4_core",
  "mlx5_core",
  "i40e",
  "ice",
  "igb",
  "igc",
  "ixgbe",
  "ixgbevf",
  "bnxt_en",
  "nfp",
  "qede",
  "ena",
  "hv_netvsc",
  "sfc",
  "thunder-nicvf",
  "ionic",
  "stmmaceth",
  "mvneta",
  "mvpp2",
  "fec",
  "gve",
  "fsl_enetc",
  "fsl-dpaa2-eth",
  "tsnep",
  "lan966x-switch",
  "mtk_soc_eth",
  "octeontx2-nicpf",
  "cpsw",
  "atlantic",
  "idpf",
]);

const HOOKS: { prog: string; hook: string; v6: boolean }[] = [
  { prog: "probe_connect4", hook: "connect4", v6: false },
  { prog: "probe_sendmsg4", hook: "sendmsg4", v6: false },
  { prog: "probe_recvmsg4", hook: "recvmsg4", v6: false },
  { prog: "probe_getpeer4", hook: "getpeername4", v6: false },
  { prog: "probe_connect6", hook: "connect6", v6: true },
  { prog: "probe_sendmsg6", hook: "sendmsg6", v6: true },
  { prog: "probe_recvmsg6", hook: "recvmsg6", v6: true },
  { prog: "probe_getpeer6", hook: "getpeername6", v6: true },
];

function fsSupported(name: string): boolean {
  try {
    return readFileSync("/proc/filesystems", "utf8")
      .split("\n")
      .some((l) => l.split("\t").pop() === name);
  } catch {
    return false;
  }
}

function probeResult(r: number): { present: boolean; detail: string } {
  if (r === 1) return { present: true, detail: "supported" };
  if (r === 0) return { present: false, detail: "not supported by this kernel" };
  return { present: false, detail: `probe failed: ${errnoName(r)}` };
}

/** Loads one program of the embedded probe object on its own: does the kernel accept it? */
async function loadsAlone(bytes: Uint8Array, prog: string): Promise<{ present: boolean; detail: string }> {
  const { openObject } = await import("./bpf.ts");
  using obj = openObject(bytes, "probe");
  for (const p of obj.programs()) obj.setAutoload(p, p === prog);
  try {
    obj.load();
    return { present: true, detail: "program loads" };
  } catch (e) {
    if (e instanceof BpfError) return { present: false, detail: `load failed: ${errnoName(e.errno)}` };
    throw e;
  }
}

/** Probes the running kernel against what `cfg` needs. */
export async function probeKernel(cfg: Config): Promise<ProbeReport> {
  const lib = unsafeLibbpf();
  const kernel = release();
  const features: Feature[] = [];
  const add = (f: Feature) => features.push(f);
  const socketLB = cfg.socketLB.enabled;
  const northSouth = cfg.nodePort.enabled;
  const accel = cfg.loadBalancer.acceleration;

  add({
    name: "kernel ≥ 5.10",
    present: kernelAtLeast(kernel, 5, 10),
    detail: kernel,
    neededBy: "kpr (kernel floor)",
    required: true,
  });
  const lv = libbpfVersion();
  add({
    name: "libbpf ≥ 1.0",
    present: Number(lv.split(".")[0]) >= 1,
    detail: lv,
    neededBy: "kpr",
    required: true,
  });

  const bpfMounts = mounts()
    .filter((m) => m.fsType === "bpf")
    .map((m) => m.mountPoint);
  add({
    name: "bpffs",
    present: fsSupported("bpf"),
    detail: bpfMounts.length
      ? `mounted at ${bpfMounts.join(", ")}`
      : `not mounted (kpr mounts it for ${cfg.bpf.root})`,
    neededBy: "pinned maps and links (state survives restarts)",
    required: true,
  });
  add({
    name: "kernel BTF",
    present: existsSync("/sys/kernel/btf/vmlinux"),
    detail: existsSync("/sys/kernel/btf/vmlinux") ? "/sys/kernel/btf/vmlinux" : "no /sys/kernel/btf/vmlinux",
    neededBy: "bpftool map dumps with types (optional; kpr checks its structs against its own objects' BTF)",
    required: false,
  });

  const cg = cgroup2Mounts();
  add({
    name: "cgroup v2",
    present: fsSupported("cgroup2"),
    detail: cg.length ? `mounted at ${cg.join(", ")}` : `not mounted (kpr mounts it at ${cfg.cgroup.root})`,
    neededBy: "socket LB",
    required: socketLB,
  });

  // program types
  const progTypes: [string, number, string, boolean][] = [
    ["program type sched_cls (tc)", ProgType.SCHED_CLS, "north-south LB (tc on devices)", true],
    ["program type xdp", ProgType.XDP, "XDP acceleration", accel !== "disabled"],
    ["program type cgroup_sock_addr", ProgType.CGROUP_SOCK_ADDR, "socket LB", socketLB],
  ];
  for (const [name, type, neededBy, required] of progTypes)
    add({ name, ...probeResult(lib.libbpf_probe_bpf_prog_type(type, null)), neededBy, required });

  const tcx = hasTcx();
  add({
    name: "tcx (tc BPF links)",
    present: tcx,
    detail: tcx
      ? "BPF_PROG_QUERY on tcx answers (kernel ≥ 6.6)"
      : "absent: tc programs attach as clsact filters",
    neededBy: "tc attach as pinned links (clsact fallback otherwise)",
    required: false,
  });

  // socket hooks, each program loaded on its own from the embedded probe object
  const probeBytes = await embeddedObject("probe");
  for (const h of HOOKS) {
    add({
      name: `socket hook cgroup/${h.hook}`,
      ...(await loadsAlone(probeBytes, h.prog)),
      neededBy: h.v6 ? "socket LB (IPv6)" : "socket LB",
      required: socketLB && !h.v6,
    });
  }
  for (const [prog, name, neededBy, required] of [
    ["probe_tc", "tc program load", "north-south LB", true],
    ["probe_xdp", "XDP program load", "XDP acceleration", accel !== "disabled"],
  ] as const)
    add({ name, ...(await loadsAlone(probeBytes, prog)), neededBy, required });

  // helpers
  const helpers: [string, number, number, string, boolean][] = [
    [
      "helper bpf_redirect_neigh (tc)",
      ProgType.SCHED_CLS,
      152,
      "north-south LB: forwarding to remote backends",
      northSouth,
    ],
    [
      "helper bpf_fib_lookup (tc)",
      ProgType.SCHED_CLS,
      69,
      "north-south LB: forwarding to remote backends",
      northSouth,
    ],
    ["helper bpf_fib_lookup (xdp)", ProgType.XDP, 69, "XDP acceleration", accel !== "disabled"],
    [
      "helper bpf_get_socket_cookie (sock_addr)",
      ProgType.CGROUP_SOCK_ADDR,
      46,
      "socket LB (reverse translation for recvmsg/getpeername)",
      socketLB,
    ],
    [
      "helper bpf_get_netns_cookie (sock_addr)",
      ProgType.CGROUP_SOCK_ADDR,
      122,
      "socketLB.hostNamespaceOnly",
      socketLB && cfg.socketLB.hostNamespaceOnly,
    ],
  ];
  for (const [name, type, id, neededBy, required] of helpers)
    add({ name, ...probeResult(lib.libbpf_probe_bpf_helper(type, id, null)), neededBy, required });
  add({
    name: "SO_NETNS_COOKIE (kernel ≥ 5.14)",
    ...probeNetnsCookie(),
    neededBy: "socketLB.hostNamespaceOnly (kpr reads the host namespace's cookie with it)",
    required: socketLB && cfg.socketLB.hostNamespaceOnly,
  });

  add({
    name: "kfunc bpf_sock_destroy + iter/udp (kernel ≥ 6.5)",
    ...(await probeSockDestroy()),
    neededBy:
      "socket LB: destroying connected UDP sockets of removed backends (else they keep sending to the old backend until the client reconnects)",
    required: false,
  });

  // map types
  const maps: [string, number, string, boolean][] = [
    ["map type LRU hash", MapType.LRU_HASH, "connection tracking, SNAT, session affinity", true],
    ["map type LPM trie", MapType.LPM_TRIE, "loadBalancerSourceRanges", true],
    ["map type per-CPU array", MapType.PERCPU_ARRAY, "counters", true],
    ["map type per-CPU hash", MapType.PERCPU_HASH, "counters", true],
  ];
  for (const [name, type, neededBy, required] of maps)
    add({ name, ...probeResult(lib.libbpf_probe_bpf_map_type(type, null)), neededBy, required });

  add({
    name: "map batch operations",
    ...probeBatch(),
    neededBy: "fast bulk map updates (falls back to one update per entry)",
    required: false,
  });

  // XDP per device
  const devices = cfg.devices.length
    ? cfg.devices
    : listInterfaces()
        .map((i) => i.name)
        .filter((n) => n !== "lo");
  const present = new Set(listInterfaces().map((i) => i.name));
  for (const dev of devices) {
    if (!present.has(dev)) {
      add({
        name: `XDP on ${dev}`,
        present: false,
        detail: "no such device in this network namespace",
        neededBy: "devices",
        required: true,
      });
      continue;
    }
    const driver = ethtoolDriver(dev);
    const native = NATIVE_XDP_DRIVERS.has(driver);
    add({
      name: `XDP native on ${dev}`,
      present: native,
      detail: driver
        ? `driver ${driver}${native ? " has native XDP" : " is not known to have native XDP"} (by driver name)`
        : "no driver info (virtual device?)",
      neededBy: "loadBalancer.acceleration=native",
      required: accel === "native",
    });
    add({
      name: `XDP generic on ${dev}`,
      present: true,
      detail: "every device supports generic (skb) XDP",
      neededBy: "loadBalancer.acceleration=best-effort (fallback)",
      required: false,
    });
  }

  return {
    kernel,
    libbpf: lv,
    features,
    missing: features.filter((f) => f.required && !f.present).map((f) => f.name),
  };
}

/**
 * The stale-UDP-socket iterator (sockterm.bpf.c): the kernel's BTF must name the bpf_sock_destroy
 * kfunc (6.5+), and the iterator must load — against a throwaway kpr_sk4_rnat, nothing attached.
 */
async function probeSockDestroy(): Promise<{ present: boolean; detail: string }> {
  const { sockDestroySupport } = await import("./sockterm.ts");
  const sup = sockDestroySupport();
  if (!sup.supported) return { present: false, detail: sup.detail };
  const { openObject } = await import("./bpf.ts");
  try {
    using obj = openObject(await embeddedObject("sockterm"), "kpr_sockterm");
    obj.setMaxEntries("kpr_sk4_rnat", 1);
    obj.load();
    return { present: true, detail: `${sup.detail}; the socket iterator loads` };
  } catch (e) {
    return {
      present: false,
      detail: `${sup.detail}, but the socket iterator does not load: ${(e as Error).message.split("\n")[0]}`,
    };
  }
}

/** getsockopt(SO_NETNS_COOKIE): 5.14+; older kernels answer ENOPROTOOPT. */
function probeNetnsCookie(): { present: boolean; detail: string } {
  try {
    return { present: true, detail: `this namespace's cookie is ${netnsCookie()}` };
  } catch (e) {
    const errno = e instanceof BpfError ? e.errno : 0;
    return {
      present: false,
      detail: `getsockopt SO_NETNS_COOKIE: ${errno ? errnoName(errno) : (e as Error).message}`,
    };
  }
}

/** BPF_MAP_LOOKUP_BATCH on a throwaway hash map: ENOENT (empty) means the kernel has batch ops. */
function probeBatch(): { present: boolean; detail: string } {
  let m: BpfMap | undefined;
  try {
    m = BpfMap.create({ name: "kpr_probe", type: MapType.HASH, keySize: 4, valueSize: 4, maxEntries: 1 });
    const cnt = new Uint32Array([1]);
    const r = unsafeLibbpf().bpf_map_lookup_batch(
      m.fd,
      null,
      new Uint8Array(8),
      new Uint8Array(4),
      new Uint8Array(4),
      cnt,
      null,
    );
    return r === 0 || r === -2
      ? { present: true, detail: "BPF_MAP_*_BATCH available" }
      : { present: false, detail: `lookup batch: ${errnoName(r)}` };
  } catch (e) {
    return { present: false, detail: (e as Error).message };
  } finally {
    m?.close();
  }
}
