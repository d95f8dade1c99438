/**
 * The one `bun:ffi` module: libbpf.so.1 and the few libc calls kpr needs, C-string and struct
 * helpers, and libbpf's error conventions turned into `BpfError`. Raw pointers stay behind names
 * starting with `unsafe`; everything above this file speaks typed objects (bpf.ts, attach.ts).
 */
import { CString, dlopen, type Pointer as FfiPointer, JSCallback, ptr, read, toArrayBuffer } from "bun:ffi";
import { fstatSync, statSync } from "node:fs";
import { KprError } from "../errors.ts";
import { log } from "../log.ts";

/** A raw C pointer as bun:ffi hands it out. */
export type Pointer = FfiPointer | bigint;

const libbpfSymbols = {
  libbpf_set_print: { args: ["ptr"], returns: "ptr" },
  libbpf_strerror: { args: ["i32", "ptr", "u64"], returns: "i32" },
  libbpf_num_possible_cpus: { args: [], returns: "i32" },
  libbpf_probe_bpf_prog_type: { args: ["i32", "ptr"], returns: "i32" },
  libbpf_probe_bpf_map_type: { args: ["i32", "ptr"], returns: "i32" },
  libbpf_probe_bpf_helper: { args: ["i32", "i32", "ptr"], returns: "i32" },
  libbpf_major_version: { args: [], returns: "u32" },
  libbpf_minor_version: { args: [], returns: "u32" },
  // objects
  bpf_object__open_mem: { args: ["ptr", "u64", "ptr"], returns: "ptr" },
  bpf_object__load: { args: ["ptr"], returns: "i32" },
  bpf_object__close: { args: ["ptr"], returns: "void" },
  bpf_object__btf: { args: ["ptr"], returns: "ptr" },
  bpf_object__next_map: { args: ["ptr", "ptr"], returns: "ptr" },
  bpf_object__next_program: { args: ["ptr", "ptr"], returns: "ptr" },
  // maps (object side)
  bpf_map__name: { args: ["ptr"], returns: "ptr" },
  bpf_map__type: { args: ["ptr"], returns: "i32" },
  bpf_map__key_size: { args: ["ptr"], returns: "u32" },
  bpf_map__value_size: { args: ["ptr"], returns: "u32" },
  bpf_map__max_entries: { args: ["ptr"], returns: "u32" },
  bpf_map__set_max_entries: { args: ["ptr", "u32"], returns: "i32" },
  bpf_map__map_flags: { args: ["ptr"], returns: "u32" },
  bpf_map__fd: { args: ["ptr"], returns: "i32" },
  bpf_map__reuse_fd: { args: ["ptr", "i32"], returns: "i32" },
  bpf_map__is_internal: { args: ["ptr"], returns: "bool" },
  bpf_map__btf_key_type_id: { args: ["ptr"], returns: "u32" },
  bpf_map__btf_value_type_id: { args: ["ptr"], returns: "u32" },
  // programs (object side)
  bpf_program__name: { args: ["ptr"], returns: "ptr" },
  bpf_program__section_name: { args: ["ptr"], returns: "ptr" },
  bpf_program__type: { args: ["ptr"], returns: "i32" },
  bpf_program__expected_attach_type: { args: ["ptr"], returns: "i32" },
  bpf_program__fd: { args: ["ptr"], returns: "i32" },
  bpf_program__set_autoload: { args: ["ptr", "bool"], returns: "i32" },
  bpf_program__autoload: { args: ["ptr"], returns: "bool" },
  bpf_program__set_log_buf: { args: ["ptr", "ptr", "u64"], returns: "i32" },
  bpf_program__set_log_level: { args: ["ptr", "u32"], returns: "i32" },
  // map fds
  bpf_map_create: { args: ["i32", "ptr", "u32", "u32", "u32", "ptr"], returns: "i32" },
  bpf_map_lookup_elem: { args: ["i32", "ptr", "ptr"], returns: "i32" },
  bpf_map_update_elem: { args: ["i32", "ptr", "ptr", "u64"], returns: "i32" },
  bpf_map_delete_elem: { args: ["i32", "ptr"], returns: "i32" },
  bpf_map_get_next_key: { args: ["i32", "ptr", "ptr"], returns: "i32" },
  bpf_map_lookup_batch: { args: ["i32", "ptr", "ptr", "ptr", "ptr", "ptr", "ptr"], returns: "i32" },
  bpf_map_update_batch: { args: ["i32", "ptr", "ptr", "ptr", "ptr"], returns: "i32" },
  bpf_map_delete_batch: { args: ["i32", "ptr", "ptr", "ptr"], returns: "i32" },
  // fds, pins, info
  bpf_obj_pin: { args: ["i32", "ptr"], returns: "i32" },
  bpf_obj_get: { args: ["ptr"], returns: "i32" },
  bpf_obj_get_info_by_fd: { args: ["i32", "ptr", "ptr"], returns: "i32" },
  bpf_prog_get_fd_by_id: { args: ["u32"], returns: "i32" },
  bpf_map_get_fd_by_id: { args: ["u32"], returns: "i32" },
  bpf_prog_test_run_opts: { args: ["i32", "ptr"], returns: "i32" },
  bpf_prog_query: { args: ["i32", "i32", "u32", "ptr", "ptr", "ptr"], returns: "i32" },
  // links
  bpf_link_create: { args: ["i32", "i32", "i32", "ptr"], returns: "i32" },
  bpf_link_update: { args: ["i32", "i32", "ptr"], returns: "i32" },
  bpf_link_detach: { args: ["i32"], returns: "i32" },
  bpf_iter_create: { args: ["i32"], returns: "i32" },
  // tc (clsact) and XDP (netlink)
  bpf_tc_hook_create: { args: ["ptr"], returns: "i32" },
  bpf_tc_hook_destroy: { args: ["ptr"], returns: "i32" },
  bpf_tc_attach: { args: ["ptr", "ptr"], returns: "i32" },
  bpf_tc_detach: { args: ["ptr", "ptr"], returns: "i32" },
  bpf_tc_query: { args: ["ptr", "ptr"], returns: "i32" },
  bpf_xdp_query_id: { args: ["i32", "i32", "ptr"], returns: "i32" },
  bpf_xdp_detach: { args: ["i32", "u32", "ptr"], returns: "i32" },
  // BTF
  btf__find_by_name_kind: { args: ["ptr", "ptr", "u32"], returns: "i32" },
  btf__type_by_id: { args: ["ptr", "u32"], returns: "ptr" },
  btf__name_by_offset: { args: ["ptr", "u32"], returns: "ptr" },
  btf__resolve_size: { args: ["ptr", "u32"], returns: "i64" },
  btf__resolve_type: { args: ["ptr", "u32"], returns: "i32" },
  btf__load_vmlinux_btf: { args: [], returns: "ptr" },
  btf__free: { args: ["ptr"], returns: "void" },
} as const;

const libcSymbols = {
  __errno_location: { args: [], returns: "ptr" },
  close: { args: ["i32"], returns: "i32" },
  if_nametoindex: { args: ["ptr"], returns: "u32" },
  if_nameindex: { args: [], returns: "ptr" },
  if_freenameindex: { args: ["ptr"], returns: "void" },
  getifaddrs: { args: ["ptr"], returns: "i32" },
  pthread_sigmask: { args: ["i32", "ptr", "ptr"], returns: "i32" },
  connect: { args: ["i32", "ptr", "u32"], returns: "i32" },
  getsockname: { args: ["i32", "ptr", "ptr"], returns: "i32" },
  freeifaddrs: { args: ["ptr"], returns: "void" },
  mount: { args: ["ptr", "ptr", "ptr", "u64", "ptr"], returns: "i32" },
  umount2: { args: ["ptr", "i32"], returns: "i32" },
  socket: { args: ["i32", "i32", "i32"], returns: "i32" },
  sendto: { args: ["i32", "ptr", "u64", "i32", "ptr", "u32"], returns: "i64" },
  ioctl: { args: ["i32", "u64", "ptr"], returns: "i32" },
  getsockopt: { args: ["i32", "i32", "i32", "ptr", "ptr"], returns: "i32" },
  open: { args: ["ptr", "i32", "u32"], returns: "i32" },
  flock: { args: ["i32", "i32"], returns: "i32" },
  read: { args: ["i32", "ptr", "u64"], returns: "i64" },
  setns: { args: ["i32", "i32"], returns: "i32" },
  unshare: { args: ["i32"], returns: "i32" },
  bind: { args: ["i32", "ptr", "u32"], returns: "i32" },
  setsockopt: { args: ["i32", "i32", "i32", "ptr", "u32"], returns: "i32" },
  vsnprintf: { args: ["ptr", "u64", "ptr", "ptr"], returns: "i32" },
} as const;

type LibbpfFns = ReturnType<typeof dlopen<typeof libbpfSymbols>>["symbols"];
type LibcFns = ReturnType<typeof dlopen<typeof libcSymbols>>["symbols"];

let libbpfLib: LibbpfFns | undefined;
let libcLib: LibcFns | undefined;
let printCallback: JSCallback | undefined;
const libbpfLog = log.withTag("libbpf");

/** libc (opened on first use). */
export function unsafeLibc(): LibcFns {
  if (!libcLib) {
    try {
      libcLib = dlopen("libc.so.6", libcSymbols).symbols;
    } catch (e) {
      throw new KprError(`open libc.so.6: ${(e as Error).message}`);
    }
  }
  return libcLib;
}

/**
 * libbpf.so.1 (opened on first use, so commands that never touch the kernel need no libbpf).
 * libbpf's own messages go to the debug log instead of stderr.
 */
export function unsafeLibbpf(): LibbpfFns {
  if (!libbpfLib) {
    try {
      libbpfLib = dlopen("libbpf.so.1", libbpfSymbols).symbols;
    } catch (e) {
      throw new KprError(
        `open libbpf.so.1: ${(e as Error).message} (install libbpf 1.x: apt-get install libbpf1)`,
      );
    }
    installPrint(libbpfLib);
  }
  return libbpfLib;
}

function installPrint(lib: LibbpfFns): void {
  const libc = unsafeLibc();
  const buf = new Uint8Array(4096);
  // libbpf formats with a va_list; vsnprintf takes it as the same opaque pointer on x86_64 and
  // arm64 (both pass va_list by reference), so the message is rendered in C and read back.
  printCallback = new JSCallback(
    (level: number, fmt: Pointer, ap: Pointer) => {
      const n = libc.vsnprintf(buf, buf.length, fmt, ap);
      if (n <= 0) return 0;
      const msg = new TextDecoder().decode(buf.subarray(0, Math.min(n, buf.length - 1))).trimEnd();
      if (level === 0) libbpfLog.debug(msg);
      else libbpfLog.trace(msg);
      return 0;
    },
    { args: ["i32", "ptr", "ptr"], returns: "i32" },
  );
  lib.libbpf_set_print(printCallback.ptr);
}

/** The calling thread's errno (read right after a libc or NULL-returning libbpf call). */
export function errno(): number {
  const p = unsafeLibc().__errno_location();
  return p ? read.i32(p, 0) : 0;
}

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  8: "ENOEXEC",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  24: "EMFILE",
  25: "ENOTTY",
  27: "EFBIG",
  28: "ENOSPC",
  34: "ERANGE",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  39: "ENOTEMPTY",
  40: "ELOOP",
  61: "ENODATA",
  62: "ETIME",
  67: "ENOLINK",
  71: "EPROTO",
  75: "EOVERFLOW",
  77: "EBADFD",
  95: "EOPNOTSUPP",
  97: "EAFNOSUPPORT",
  100: "ENETDOWN",
  105: "ENOBUFS",
  110: "ETIMEDOUT",
  125: "ECANCELED",
  524: "ENOTSUPP",
  4000: "LIBBPF_ERRNO__LIBELF",
  4001: "LIBBPF_ERRNO__FORMAT",
  4002: "LIBBPF_ERRNO__KVERSION",
  4003: "LIBBPF_ERRNO__ENDIAN",
  4004: "LIBBPF_ERRNO__INTERNAL",
  4005: "LIBBPF_ERRNO__RELOC",
  4006: "LIBBPF_ERRNO__LOAD",
  4007: "LIBBPF_ERRNO__VERIFY",
  4008: "LIBBPF_ERRNO__PROG2BIG",
  4009: "LIBBPF_ERRNO__KVER",
  4010: "LIBBPF_ERRNO__PROGTYPE",
  4011: "LIBBPF_ERRNO__WRNGPID",
  4012: "LIBBPF_ERRNO__INVSEQ",
  4013: "LIBBPF_ERRNO__NLPARSE",
};

/** Errno constants used by callers. */
export const E = {
  EPERM: 1,
  ENOENT: 2,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  ENOLINK: 67,
  EOPNOTSUPP: 95,
  ENOTSUPP: 524,
} as const;

/** "EINVAL" for 22 (positive or negative), "E123" for unknown codes. */
export function errnoName(code: number): string {
  const c = Math.abs(code);
  return ERRNO_NAMES[c] ?? `E${c}`;
}

/** libbpf's text for an error code (covers libc errnos and libbpf's 4000+ codes). */
export function errnoText(code: number): string {
  const c = Math.abs(code);
  if (c === 524) return "Operation not supported by the kernel";
  try {
    const buf = new Uint8Array(128);
    unsafeLibbpf().libbpf_strerror(c, buf, buf.length);
    return cstrRead(buf);
  } catch {
    return "";
  }
}

/**
 * A failed kernel or libbpf operation. Message: `op: ENAME (text; hint)`, then `detail` (e.g.
 * the verifier's last lines) on following lines.
 */
export class BpfError extends KprError {
  readonly errno: number;
  constructor(
    readonly op: string,
    errnoValue: number,
    readonly hint?: string,
    readonly detail?: string,
  ) {
    const code = Math.abs(errnoValue);
    const text = errnoText(code);
    const paren = [text, hint].filter((s) => s).join("; ");
    super(`${op}: ${errnoName(code)}${paren ? ` (${paren})` : ""}${detail ? `\n${detail}` : ""}`);
    this.name = "BpfError";
    this.errno = code;
  }
}

/** Returns `ret` when >= 0; otherwise throws BpfError(op, -ret). For libbpf int calls (-errno). */
export function check(op: string, ret: number, hint?: string): number {
  if (ret < 0) throw new BpfError(op, -ret, hint);
  return ret;
}

/** For libc calls returning -1 and setting errno. */
export function checkErrno(op: string, ret: number, hint?: string): number {
  if (ret < 0) throw new BpfError(op, errno() || E.EINVAL, hint);
  return ret;
}

/** For pointer-returning libbpf calls: NULL means failure with errno set. */
export function checkPtr(op: string, p: Pointer | null, hint?: string): Pointer {
  if (!p) throw new BpfError(op, errno() || E.EINVAL, hint);
  return p;
}

const encoder = new TextEncoder();

/** A NUL-terminated copy of `s` (keep the returned array alive while C uses it). */
export function cstr(s: string): Uint8Array {
  const b = encoder.encode(s);
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

/** Reads a NUL-terminated string from a byte array. */
export function cstrRead(buf: Uint8Array, offset = 0, max = buf.length - offset): string {
  let end = offset;
  const lim = offset + max;
  while (end < lim && buf[end] !== 0) end++;
  return new TextDecoder().decode(buf.subarray(offset, end));
}

/** Reads a C string at a raw pointer ("" for NULL). */
export function unsafeCString(p: Pointer | null): string {
  return p ? new CString(p as FfiPointer).toString() : "";
}

/** Copies `len` bytes at a raw pointer. */
export function unsafeCopy(p: Pointer, offset: number, len: number): Uint8Array {
  return new Uint8Array(toArrayBuffer(p, offset, len).slice(0));
}

/** Reads a u32 at a raw pointer. */
export function unsafeReadU32(p: Pointer, offset: number): number {
  return read.u32(p, offset);
}

/** Reads a pointer-sized value at a raw pointer (for pointer arrays such as if_nameindex). */
export function unsafeReadPtr(p: Pointer, offset: number): Pointer | null {
  const v = read.ptr(p, offset);
  return v ? (v as FfiPointer) : null;
}

/** Little-endian struct builder over a zeroed buffer (for libbpf opts structs). */
export class Struct {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
  }
  /** Sets `sz` (offset 0, size_t) to the struct size: libbpf's forward-compatibility field. */
  withSz(): this {
    this.view.setBigUint64(0, BigInt(this.bytes.length), true);
    return this;
  }
  u8(off: number, v: number): this {
    this.view.setUint8(off, v);
    return this;
  }
  u16(off: number, v: number): this {
    this.view.setUint16(off, v, true);
    return this;
  }
  u32(off: number, v: number): this {
    this.view.setUint32(off, v >>> 0, true);
    return this;
  }
  i32(off: number, v: number): this {
    this.view.setInt32(off, v, true);
    return this;
  }
  u64(off: number, v: number | bigint): this {
    this.view.setBigUint64(off, BigInt(v), true);
    return this;
  }
  /** Stores the address of `buf` (which the caller keeps alive) as a pointer field. */
  unsafePtr(off: number, buf: Uint8Array | null): this {
    this.view.setBigUint64(off, buf ? BigInt(unsafeAddressOf(buf)) : 0n, true);
    return this;
  }
  getU32(off: number): number {
    return this.view.getUint32(off, true);
  }
  getI32(off: number): number {
    return this.view.getInt32(off, true);
  }
  getU64(off: number): bigint {
    return this.view.getBigUint64(off, true);
  }
}

/** The address of a typed array's bytes (the array must outlive every C use of it). */
export function unsafeAddressOf(buf: Uint8Array): number {
  return ptr(buf) as number;
}

/** Closes a file descriptor (errors ignored: used on teardown paths). */
export function closeFd(fd: number): void {
  if (fd >= 0) unsafeLibc().close(fd);
}

/** Number of possible CPUs (per-CPU map values hold one slot per possible CPU). */
export function possibleCpus(): number {
  return check("count possible CPUs", unsafeLibbpf().libbpf_num_possible_cpus());
}

/** libbpf's version, e.g. "1.1". */
export function libbpfVersion(): string {
  const l = unsafeLibbpf();
  return `${l.libbpf_major_version()}.${l.libbpf_minor_version()}`;
}

/** Interface index in the current network namespace (if_nametoindex); throws ENODEV when absent. */
export function ifNameToIndex(name: string): number {
  const idx = unsafeLibc().if_nametoindex(cstr(name));
  if (idx === 0) throw new BpfError(`find interface ${name}`, errno() || E.ENODEV);
  return idx;
}

/** All interfaces of the current network namespace: [{ index, name }]. */
export function listInterfaces(): { index: number; name: string }[] {
  const libc = unsafeLibc();
  const arr = checkPtr("list interfaces", libc.if_nameindex());
  const out: { index: number; name: string }[] = [];
  try {
    // struct if_nameindex { unsigned int if_index; char *if_name; } (16 bytes on 64-bit)
    for (let off = 0; ; off += 16) {
      const index = read.u32(arr, off);
      if (index === 0) break;
      out.push({ index, name: unsafeCString(unsafeReadPtr(arr, off + 8)) });
    }
  } finally {
    libc.if_freenameindex(arr);
  }
  return out;
}

/**
 * Runs `fn` with every signal blocked in the calling thread (restored after, also on a throw):
 * a signal arriving while the kernel verifies a program makes it give up with EAGAIN, and under
 * frequent signals (a CPU profiler's) libbpf's few retries run out. Signals that arrive meanwhile
 * are delivered when the mask is restored.
 */
export function withSignalsBlocked<T>(fn: () => T): T {
  const libc = unsafeLibc();
  const all = new Uint8Array(128).fill(0xff); // sigset_t (glibc: 1024 bits)
  const old = new Uint8Array(128);
  const r = libc.pthread_sigmask(0 /* SIG_BLOCK */, ptr(all), ptr(old));
  if (r !== 0) return fn(); // cannot block: run as before
  try {
    return fn();
  } finally {
    libc.pthread_sigmask(2 /* SIG_SETMASK */, ptr(old), null);
  }
}

/**
 * Runs a program load (`fn`) shielded from signals: with every signal blocked and libbpf's
 * messages off, as no JavaScript may run while signals are blocked (a CPU profiler's sampler
 * thread waits for this thread to take its signal, holding locks that a JS callback could need).
 * libbpf's messages only reach the debug log: with KPR_LOG_LEVEL=debug the load runs unshielded.
 */
export function shieldedLoad<T>(fn: () => T): T {
  const lib = unsafeLibbpf();
  if (libbpfLog.level >= 4 /* debug */ || !printCallback) return fn();
  lib.libbpf_set_print(null);
  try {
    return withSignalsBlocked(fn);
  } finally {
    lib.libbpf_set_print(printCallback.ptr);
  }
}

/**
 * The source address this network namespace's routes pick for IPv4 `dst` (a UDP socket connected
 * to dst:port, then getsockname: no packet is sent), or undefined when there is no route. `port`
 * must not be a socket-LB frontend's of dst (kpr's own connect hook would translate it).
 */
export function routeSource(dst: string, port: number): string | undefined {
  const libc = unsafeLibc();
  const fd = libc.socket(2 /* AF_INET */, 2 /* SOCK_DGRAM */ | 0x80000 /* SOCK_CLOEXEC */, 0);
  if (fd < 0) return undefined;
  try {
    if (dst.split(".").length !== 4) return undefined;
    if (libc.connect(fd, ptr(sockaddrIn(dst, port)), 16) !== 0) return undefined;
    const out = new Uint8Array(16);
    const len = new Uint32Array([16]);
    if (libc.getsockname(fd, ptr(out), ptr(len)) !== 0) return undefined;
    return `${out[4]}.${out[5]}.${out[6]}.${out[7]}`;
  } finally {
    libc.close(fd);
  }
}

/** struct sockaddr_in for an IPv4 address and port. */
function sockaddrIn(address: string, port: number): Uint8Array {
  const sa = new Uint8Array(16);
  sa[0] = 2; // sin_family (AF_INET), host order
  sa[2] = port >> 8;
  sa[3] = port & 0xff;
  address.split(".").forEach((b, i) => {
    sa[4 + i] = Number(b);
  });
  return sa;
}

/**
 * connect() of a new TCP or UDP socket to `dst` from a fresh, empty network namespace that only
 * the calling thread enters (unshare(CLONE_NEWNET)) and leaves again before returning (setns back
 * to its namespace): with no route there, a connect the socket hooks let through ends in
 * ENETUNREACH before any packet exists. `ready(cookie)` runs in the new namespace (its
 * SO_NETNS_COOKIE), before the socket is made. `src`: bound first, with IP_FREEBIND (the address
 * need not exist). Returns connect's errno (0: connected) and the namespace's cookie.
 */
export function localConnect(
  proto: "tcp" | "udp",
  dst: { address: string; port: number },
  src: { address: string; port: number } | undefined,
  ready: (netnsCookie: bigint) => void,
): { errno: number; netnsCookie: bigint } {
  const libc = unsafeLibc();
  const CLONE_NEWNET = 0x40000000;
  const CLOEXEC = 0x80000;
  const home = libc.open(cstr("/proc/thread-self/ns/net"), CLOEXEC, 0);
  if (home < 0) throw new BpfError("open /proc/thread-self/ns/net", errno());
  if (libc.unshare(CLONE_NEWNET) !== 0) {
    const e = errno();
    libc.close(home);
    throw new BpfError("unshare a network namespace", e);
  }
  let fd = -1;
  let probe = -1;
  let out: { errno: number; netnsCookie: bigint } | undefined;
  let failure: unknown;
  try {
    probe = libc.socket(2, 2 | CLOEXEC, 0);
    if (probe < 0) throw new BpfError("socket", errno());
    const cookie = new BigUint64Array(1);
    const len = new Uint32Array([8]);
    if (libc.getsockopt(probe, 1 /* SOL_SOCKET */, 71 /* SO_NETNS_COOKIE */, ptr(cookie), ptr(len)) !== 0)
      throw new KprError(
        `a network namespace's cookie (SO_NETNS_COOKIE) needs kernel 5.14 or later (${errnoName(errno())})`,
      );
    const netnsCookie = cookie[0] as bigint;
    ready(netnsCookie);
    fd = libc.socket(2, (proto === "tcp" ? 1 : 2) | CLOEXEC, 0);
    if (fd < 0) throw new BpfError("socket", errno());
    if (src) {
      const one = new Int32Array([1]);
      if (libc.setsockopt(fd, 0 /* IPPROTO_IP */, 15 /* IP_FREEBIND */, ptr(one), 4) !== 0)
        throw new BpfError("setsockopt IP_FREEBIND", errno());
      if (libc.bind(fd, ptr(sockaddrIn(src.address, src.port)), 16) !== 0)
        throw new BpfError(`bind ${src.address}:${src.port}`, errno());
    }
    const rc = libc.connect(fd, ptr(sockaddrIn(dst.address, dst.port)), 16);
    out = { errno: rc === 0 ? 0 : errno(), netnsCookie };
  } catch (e) {
    failure = e;
  }
  if (fd >= 0) libc.close(fd);
  if (probe >= 0) libc.close(probe);
  const back = libc.setns(home, CLONE_NEWNET);
  const backErr = errno();
  libc.close(home);
  // else this thread stays in the empty namespace: nothing after this may use the network
  if (back !== 0)
    throw new KprError(`setns back to this process's network namespace failed (${errnoName(backErr)})`);
  if (failure !== undefined || !out) throw failure;
  return out;
}

/** One address of an interface (getifaddrs): IPv4 or IPv6 with its scope, or the link's MAC. */
export interface IfAddr {
  /** the device (an IPv4 label such as "eth0:1" is reported under its device, "eth0") */
  name: string;
  family: "inet" | "inet6" | "link";
  /** the address in canonical text; "" for a link entry */
  address: string;
  /**
   * host (127.0.0.0/8, ::1), link (169.254.0.0/16, fe80::/10) or global: the scopes the kernel
   * gives such addresses by default (getifaddrs does not report an address's scope)
   */
  scope: "global" | "link" | "host";
  /** ifindex (link entries) */
  index?: number;
  /** hardware address (link entries) */
  mac?: Uint8Array;
}

function ip6Text(b: number[]): string {
  const g = Array.from({ length: 8 }, (_, i) => (b[2 * i]! << 8) | b[2 * i + 1]!);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/**
 * Every address of every interface of the current network namespace, through getifaddrs(3)
 * (netlink inside libc): what `ip -j addr show` printed, without starting a process.
 */
export function interfaceAddresses(): IfAddr[] {
  const libc = unsafeLibc();
  const head = new BigUint64Array(1);
  checkErrno("list interface addresses", libc.getifaddrs(ptr(head)));
  const first = Number(head[0]);
  const out: IfAddr[] = [];
  try {
    // struct ifaddrs { ifa_next; ifa_name; ifa_flags (u32, padded); ifa_addr; ifa_netmask; ... }
    for (let p = first; p !== 0; p = read.ptr(p as FfiPointer, 0) as number) {
      const at = p as FfiPointer;
      const name = new CString(read.ptr(at, 8) as FfiPointer).toString().split(":")[0]!;
      const sa = read.ptr(at, 24) as number;
      if (!sa) continue;
      const a = sa as FfiPointer;
      const family = read.u16(a, 0);
      if (family === 2 /* AF_INET */) {
        const b = [4, 5, 6, 7].map((o) => read.u8(a, o));
        const scope = b[0] === 127 ? "host" : b[0] === 169 && b[1] === 254 ? "link" : "global";
        out.push({ name, family: "inet", address: b.join("."), scope });
      } else if (family === 10 /* AF_INET6 */) {
        const b = Array.from({ length: 16 }, (_, i) => read.u8(a, 8 + i));
        const loop = b.slice(0, 15).every((x) => x === 0) && b[15] === 1;
        const scope = loop ? "host" : b[0] === 0xfe && (b[1]! & 0xc0) === 0x80 ? "link" : "global";
        out.push({ name, family: "inet6", address: ip6Text(b), scope });
      } else if (family === 17 /* AF_PACKET: struct sockaddr_ll */) {
        const halen = Math.min(read.u8(a, 11), 8);
        const mac = new Uint8Array(halen);
        for (let i = 0; i < halen; i++) mac[i] = read.u8(a, 12 + i);
        out.push({ name, family: "link", address: "", scope: "global", index: read.i32(a, 4), mac });
      }
    }
  } finally {
    if (first !== 0) libc.freeifaddrs(first as FfiPointer);
  }
  return out;
}

/** mount(2). */
export function mountFs(source: string, target: string, fstype: string, flags = 0, data?: string): void {
  checkErrno(
    `mount ${fstype} at ${target}`,
    unsafeLibc().mount(
      cstr(source),
      cstr(target),
      cstr(fstype),
      flags,
      data === undefined ? null : cstr(data),
    ),
  );
}

/** umount2(2) with MNT_DETACH: detaches the mount at `target` now, frees it when unused. */
export function unmountLazy(target: string): void {
  checkErrno(`unmount ${target}`, unsafeLibc().umount2(cstr(target), 2 /* MNT_DETACH */));
}

/**
 * The driver of a network device, through the SIOCETHTOOL ioctl (ETHTOOL_GDRVINFO), which
 * answers for the current network namespace (unlike /sys, which follows the mount namespace).
 * Returns "" when the device has no driver info.
 */
export function ethtoolDriver(ifname: string): string {
  const libc = unsafeLibc();
  const fd = checkErrno("open socket for ethtool", libc.socket(2 /* AF_INET */, 2 /* SOCK_DGRAM */, 0));
  try {
    // struct ethtool_drvinfo: cmd u32, driver[32], version[32], fw_version[32], bus_info[32], ...
    const drv = new Uint8Array(196);
    new DataView(drv.buffer).setUint32(0, 3 /* ETHTOOL_GDRVINFO */, true);
    // struct ifreq: ifr_name[16], then the union (ifr_data pointer at 16); 40 bytes
    const ifr = new Struct(40);
    ifr.bytes.set(encoder.encode(ifname).subarray(0, 15));
    ifr.unsafePtr(16, drv);
    const r = libc.ioctl(fd, 0x8946 /* SIOCETHTOOL */, ifr.bytes);
    if (r < 0) return "";
    return cstrRead(drv, 4, 32);
  } finally {
    libc.close(fd);
  }
}

/**
 * The cookie of the current network namespace (SO_NETNS_COOKIE, Linux 5.14+): the value
 * bpf_get_netns_cookie() returns in socket hooks for sockets of this namespace.
 */
export function netnsCookie(): bigint {
  const libc = unsafeLibc();
  const fd = checkErrno(
    "open socket for SO_NETNS_COOKIE",
    libc.socket(2 /* AF_INET */, 2 /* SOCK_DGRAM */, 0),
  );
  try {
    const val = new BigUint64Array(1);
    const len = new Uint32Array([8]);
    checkErrno(
      "getsockopt SO_NETNS_COOKIE",
      libc.getsockopt(fd, 1 /* SOL_SOCKET */, 71 /* SO_NETNS_COOKIE */, val, len),
      "kernel older than 5.14: socketLB.hostNamespaceOnly needs SO_NETNS_COOKIE",
    );
    return val[0]!;
  } finally {
    libc.close(fd);
  }
}

const O_RDONLY = 0;
// arch-specific: arm64 (asm-generic/fcntl.h of arm) has O_DIRECTORY 0o40000; 0o200000 is its O_DIRECT,
// which a directory open refuses with EINVAL
const O_DIRECTORY = process.arch === "arm64" ? 0o40000 : 0o200000;
const O_CLOEXEC = 0o2000000;
const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

/**
 * Takes an exclusive flock on a directory (kpr's bpf root), so two kpr processes never program
 * the same state at once. Calls onWait once before blocking when another process holds it.
 * `kpr cleanup` removes the directory while holding the lock, so a lock taken on it may belong
 * to a removed inode: after locking, the path must still name the locked directory, else the
 * lock is dropped and taken again (`prepare` runs before each attempt, e.g. to create the
 * directory). Throws a BpfError with ENOENT when the path is gone (and there is no `prepare`).
 * The lock is released by dispose (or when the process exits).
 */
export function lockDirectory(path: string, onWait?: () => void, prepare?: () => void): Disposable {
  const libc = unsafeLibc();
  let waited = false;
  for (let attempt = 0; attempt < 100; attempt++) {
    prepare?.();
    const fd = checkErrno(
      `open ${path} for locking`,
      libc.open(cstr(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0),
    );
    let same = false;
    try {
      if (libc.flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno() !== EWOULDBLOCK) checkErrno(`lock ${path}`, -1);
        if (!waited) onWait?.();
        waited = true;
        checkErrno(`lock ${path}`, libc.flock(fd, LOCK_EX));
      }
      same = namesLockedInode(path, fd);
    } catch (e) {
      libc.close(fd);
      throw e;
    }
    if (same) return { [Symbol.dispose]: () => void libc.close(fd) };
    libc.close(fd);
  }
  throw new BpfError(
    `lock ${path}`,
    E.EAGAIN,
    "the directory was removed and recreated 100 times while waiting",
  );
}

function namesLockedInode(path: string, fd: number): boolean {
  try {
    const held = fstatSync(fd);
    const now = statSync(path);
    return held.ino === now.ino && held.dev === now.dev && held.nlink > 0;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
/** sizeof(struct sockaddr_un): sa_family_t, then sun_path[108]. */
const SOCKADDR_UN_SIZE = 110;

/**
 * Sends one datagram to a unix datagram socket (what sd_notify does; neither Bun nor node:dgram
 * opens AF_UNIX datagram sockets). `path` is a filesystem path, or an abstract socket name
 * written with a leading "@" as systemd sets NOTIFY_SOCKET. Throws BpfError on failure.
 */
export function sendUnixDatagram(path: string, data: Uint8Array): void {
  const abstract = path.startsWith("@");
  const name = encoder.encode(abstract ? path.slice(1) : path);
  // Abstract names are counted by length (no NUL); paths need room for their NUL.
  if (name.length + 1 > SOCKADDR_UN_SIZE - 2) throw new BpfError(`send to unix socket ${path}`, 36);
  const addr = new Struct(SOCKADDR_UN_SIZE).u16(0, AF_UNIX);
  addr.bytes.set(name, abstract ? 3 : 2);
  const addrLen = 2 + (abstract ? 1 + name.length : name.length + 1);
  const libc = unsafeLibc();
  const fd = checkErrno(
    `open unix datagram socket for ${path}`,
    libc.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0),
  );
  try {
    const sent = Number(libc.sendto(fd, data, data.length, MSG_NOSIGNAL, addr.bytes, addrLen));
    checkErrno(`send to unix socket ${path}`, sent);
  } finally {
    libc.close(fd);
  }
}

/**
 * Whether the running kernel's BTF (/sys/kernel/btf/vmlinux) has a function (kfunc) named
 * `name`. False when the kernel has no BTF.
 */
export function kernelHasBtfFunc(name: string): boolean {
  const lib = unsafeLibbpf();
  const btf = lib.btf__load_vmlinux_btf();
  if (!btf) return false;
  try {
    return lib.btf__find_by_name_kind(btf, cstr(name), 12 /* BTF_KIND_FUNC */) > 0;
  } finally {
    lib.btf__free(btf);
  }
}

/**
 * Runs a BPF iterator once: creates an iterator fd from the iterator link `linkFd` (in the calling
 * thread's network namespace, for socket iterators) and reads it to the end. Returns what the
 * program wrote (bpf_seq_write).
 */
export function runIterator(linkFd: number, what: string): Uint8Array {
  const lib = unsafeLibbpf();
  const libc = unsafeLibc();
  const fd = check(`create iterator ${what}`, lib.bpf_iter_create(linkFd));
  try {
    const parts: Uint8Array[] = [];
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = Number(libc.read(fd, buf, buf.length));
      if (n < 0) {
        const e = errno();
        if (e === E.EAGAIN || e === 4 /* EINTR */) continue;
        throw new BpfError(`read iterator ${what}`, e || E.EINVAL);
      }
      if (n === 0) break;
      parts.push(buf.slice(0, n));
    }
    const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  } finally {
    libc.close(fd);
  }
}

const CLONE_NEWNET = 0x40000000;

/**
 * Runs `fn` with the calling thread in the network namespace at `nsPath` (a /proc/PID/ns/net or
 * /run/netns/NAME file), then moves the thread back to the namespace it was in. Only the calling
 * thread moves (setns), and `fn` must be synchronous, so nothing else of the process runs in the
 * other namespace. Throws BpfError when the namespace cannot be entered or left.
 */
export function inNetns<T>(nsPath: string, fn: () => T): T {
  const libc = unsafeLibc();
  const home = checkErrno(
    "open this thread's network namespace",
    libc.open(cstr("/proc/thread-self/ns/net"), O_RDONLY | O_CLOEXEC, 0),
  );
  try {
    const target = checkErrno(
      `open network namespace ${nsPath}`,
      libc.open(cstr(nsPath), O_RDONLY | O_CLOEXEC, 0),
    );
    try {
      checkErrno(`enter network namespace ${nsPath}`, libc.setns(target, CLONE_NEWNET));
    } finally {
      libc.close(target);
    }
    try {
      return fn();
    } finally {
      // a thread left in another namespace would open every later socket there: fatal if it fails
      checkErrno("return to kpr's network namespace", libc.setns(home, CLONE_NEWNET));
    }
  } finally {
    libc.close(home);
  }
}
