/**
 * Helper programs (ip, tc) by absolute path. kpr runs as root: a program found through `$PATH`
 * could be anything the caller's environment points at, so only the system directories are
 * searched, and only root-owned files that others cannot write are used.
 */
import { statSync } from "node:fs";
import { KprError } from "../errors.ts";

/** Where system tools live on Debian, Ubuntu and most other distributions, in search order. */
export const TOOL_DIRS = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] as const;

const found = new Map<string, string>();

/** The absolute path of system tool `name` (e.g. "ip"); throws when none is installed. */
export function toolPath(name: string): string {
  const hit = found.get(name);
  if (hit) return hit;
  for (const dir of TOOL_DIRS) {
    const p = `${dir}/${name}`;
    try {
      const st = statSync(p);
      if (!st.isFile() || st.uid !== 0 || (st.mode & 0o022) !== 0 || (st.mode & 0o111) === 0) continue;
    } catch {
      continue;
    }
    found.set(name, p);
    return p;
  }
  throw new KprError(
    `run ${name}: not found in ${TOOL_DIRS.join(", ")} as a root-owned executable (install iproute2; $PATH is not searched)`,
  );
}
