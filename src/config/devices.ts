import { toolPath } from "../datapath/tools.ts";
import { InputError, type InputProblem, KprError } from "../errors.ts";

interface IpAddrJson {
  ifname?: string;
  addr_info?: { family?: string; local?: string; scope?: string }[];
}

/**
 * Parses `ip -j addr show` output into the node addresses NodePorts are exposed on: global-scope
 * IPv4 and IPv6 addresses in the order given (link-local and host-scope addresses are not reachable
 * from other nodes, so they are left out).
 */
export function addressesFromIpJson(json: string): string[] {
  const links = JSON.parse(json) as IpAddrJson[];
  const out: string[] = [];
  for (const l of links) {
    for (const a of l.addr_info ?? []) {
      if (
        (a.family === "inet" || a.family === "inet6") &&
        a.scope === "global" &&
        a.local &&
        !out.includes(a.local)
      ) {
        out.push(a.local);
      }
    }
  }
  return out;
}

/**
 * Reads the addresses of the configured devices (`ip -j addr show dev X`) in the current network
 * namespace. A device that does not exist is bad config (InputError naming `configFile`).
 */
export function readDeviceAddresses(devices: string[], configFile: string): string[] {
  const out: string[] = [];
  const problems: InputProblem[] = [];
  for (const dev of devices) {
    let r: ReturnType<typeof Bun.spawnSync>;
    try {
      r = Bun.spawnSync([toolPath("ip"), "-j", "addr", "show", "dev", dev], {
        stdout: "pipe",
        stderr: "pipe",
      });
    } catch (e) {
      throw new KprError(`read addresses of ${dev}: ${(e as Error).message} (is iproute2 installed?)`);
    }
    if (r.exitCode !== 0) {
      const err = r.stderr?.toString().trim() ?? "";
      problems.push({ file: configFile, field: "devices", message: `device "${dev}" not found: ${err}` });
      continue;
    }
    for (const a of addressesFromIpJson(r.stdout?.toString() ?? "[]")) if (!out.includes(a)) out.push(a);
  }
  if (problems.length > 0) throw new InputError(problems);
  return out;
}
