/**
 * Checks that the programs kpr's pinned links run use the maps pinned under `${bpf.root}/maps`,
 * the ones an apply writes. Were a pin replaced (another map put under a kpr name), every apply
 * would write into a map no program reads while reporting success.
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { KprError } from "../errors.ts";
import { BpfLink, BpfMap, mapInfo } from "./bpf.ts";
import { closeFd, unsafeAddressOf, unsafeLibbpf } from "./ffi.ts";

/** Ids of the maps program `progFd` uses (struct bpf_prog_info: nr_map_ids @52, map_ids @56). */
export function programMapIds(progFd: number): number[] {
  const info = new Uint8Array(96);
  const view = new DataView(info.buffer);
  const len = new Uint32Array([96]);
  if (unsafeLibbpf().bpf_obj_get_info_by_fd(progFd, info, len) < 0) return [];
  const n = view.getUint32(52, true);
  if (n === 0) return [];
  const ids = new Uint32Array(n);
  info.fill(0);
  view.setUint32(52, n, true);
  view.setBigUint64(56, BigInt(unsafeAddressOf(new Uint8Array(ids.buffer))), true);
  len[0] = 96;
  if (unsafeLibbpf().bpf_obj_get_info_by_fd(progFd, info, len) < 0) return [];
  return [...ids.subarray(0, Math.min(n, view.getUint32(52, true)))];
}

/**
 * The kpr maps (by name) that an attached program uses but that are not the ones pinned under
 * `root/maps`, as "link: map" lines; empty when every program uses the pinned maps.
 */
export function foreignMapsInUse(root: string): string[] {
  const mapsDir = join(root, "maps");
  const linksDir = join(root, "links");
  if (!existsSync(mapsDir) || !existsSync(linksDir)) return [];
  const pinned = new Map<string, number>();
  for (const name of readdirSync(mapsDir)) {
    if (!name.startsWith("kpr_")) continue;
    const m = BpfMap.openPinned(join(mapsDir, name));
    try {
      pinned.set(name.slice(0, 15), mapInfo(m.fd, name).id);
    } finally {
      m.close();
    }
  }
  const out: string[] = [];
  for (const link of readdirSync(linksDir)) {
    let progId = 0;
    try {
      using l = BpfLink.openPinned(join(linksDir, link));
      progId = l.info().progId;
    } catch {
      continue;
    }
    const fd = unsafeLibbpf().bpf_prog_get_fd_by_id(progId);
    if (fd < 0) continue;
    try {
      for (const id of programMapIds(fd)) {
        const mfd = unsafeLibbpf().bpf_map_get_fd_by_id(id);
        if (mfd < 0) continue;
        try {
          const info = mapInfo(mfd);
          const want = pinned.get(info.name);
          if (want !== undefined && want !== id) out.push(`${link}: ${info.name}`);
        } finally {
          closeFd(mfd);
        }
      }
    } finally {
      closeFd(fd);
    }
  }
  return out;
}

/** Throws unless the attached programs use the maps pinned under `root/maps`. */
export function checkAttachedMaps(root: string): void {
  const bad = foreignMapsInUse(root);
  if (bad.length === 0) return;
  throw new KprError(
    `apply: the attached programs do not use the maps pinned under ${root}/maps (${bad.slice(0, 5).join(", ")}${bad.length > 5 ? ", ..." : ""}): a pin was replaced; run kpr cleanup and apply again`,
  );
}
