/**
 * XDP acceleration as it is on the node: per configured device, what runs in its XDP hook and
 * in which mode, and whether it is kpr's program (its pinned link). Read by `kpr status`.
 */
import { existsSync } from "node:fs";
import type { Config } from "../config/config.ts";
import { type XdpMode, xdpAttachment } from "./attach.ts";

/** One device's XDP hook. */
export interface XdpDeviceStatus {
  name: string;
  /** mode of the program in the hook ("none": empty, or the device is missing) */
  mode: XdpMode | "none";
  /** kpr's pinned XDP link exists for the device */
  kpr: boolean;
}

/** The XDP hook of every configured device. */
export function xdpDevices(cfg: Config): XdpDeviceStatus[] {
  return cfg.devices.map((name) => {
    let mode: XdpDeviceStatus["mode"] = "none";
    try {
      mode = xdpAttachment(name).mode;
    } catch {
      // a device that is gone has nothing attached
    }
    return { name, mode, kpr: existsSync(`${cfg.bpf.root}/links/xdp-${name}`) };
  });
}

/**
 * The `XDP Acceleration:` line of `kpr status --verbose`: the setting, then per device where
 * its north-south traffic is served, e.g. "Best-Effort [eth0: native XDP, dummy0: tc only]".
 */
export function xdpAccelerationText(
  setting: Config["loadBalancer"]["acceleration"],
  devs: XdpDeviceStatus[],
): string {
  if (setting === "disabled") return "Disabled";
  const title = setting === "native" ? "Native" : "Best-Effort";
  const per = devs.map((d) => {
    if (d.kpr && d.mode !== "none") return `${d.name}: ${d.mode} XDP`;
    if (d.mode !== "none") return `${d.name}: tc only (another ${d.mode} XDP program is attached)`;
    return `${d.name}: tc only`;
  });
  return per.length ? `${title} [${per.join(", ")}]` : title;
}
