/**
 * The eBPF objects embedded in the binary (built by `bun build.ts` into .build/bpf). Under
 * `bun build --compile` the imports become /$bunfs paths that only Bun.file can read, which is why
 * objects are opened from bytes (bpf_object__open_mem).
 *
 * To add an object: import it like probeObj below and add it to `embedded`.
 */

import { readFileSync } from "node:fs";
import probeObj from "../../.build/bpf/probe.bpf.o" with { type: "file" };
import sockObj from "../../.build/bpf/sock.bpf.o" with { type: "file" };
import socktermObj from "../../.build/bpf/sockterm.bpf.o" with { type: "file" };
import tcObj from "../../.build/bpf/tc.bpf.o" with { type: "file" };
import xdpObj from "../../.build/bpf/xdp.bpf.o" with { type: "file" };
import { KprError } from "../errors.ts";
import { type BpfObject, openObject } from "./bpf.ts";

const embedded = {
  probe: probeObj,
  sock: sockObj,
  sockterm: socktermObj,
  tc: tcObj,
  xdp: xdpObj,
} as const;

/** Names of the embedded objects. */
export type ObjectName = keyof typeof embedded;

/** The ELF bytes of an embedded object. */
export async function embeddedObject(name: ObjectName): Promise<Uint8Array> {
  const path = embedded[name];
  if (!path)
    throw new KprError(
      `read embedded object ${name}: no such object (have: ${Object.keys(embedded).join(", ")})`,
    );
  return new Uint8Array(await Bun.file(path).arrayBuffer());
}

/**
 * Objects that only load on newer kernels, with the kernel they need: kpr loads them only where
 * the probe (probe.ts) finds their features; on older kernels their verifier rejection is expected.
 */
export const KERNEL_FLOOR: Partial<Record<ObjectName, string>> = { sockterm: "6.5" };

/** Whether kernel release `rel` ("5.10.0-32-amd64") is at least major.minor. */
export function kernelAtLeast(rel: string, major: number, minor: number): boolean {
  const m = rel.match(/^(\d+)\.(\d+)/);
  if (!m) return false;
  const [a, b] = [Number(m[1]), Number(m[2])];
  return a > major || (a === major && b >= minor);
}

/** The ELF bytes of an embedded object, read synchronously (for callers that cannot await). */
export function embeddedObjectSync(name: ObjectName): Uint8Array {
  const path = embedded[name];
  if (!path) throw new KprError(`read embedded object ${name}: no such object`);
  return new Uint8Array(readFileSync(path));
}

/** Opens an embedded object (not loaded yet: set max entries, pins, autoload, then load()). */
export async function openEmbedded(name: ObjectName): Promise<BpfObject> {
  return openObject(await embeddedObject(name), name);
}
