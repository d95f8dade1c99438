/**
 * The wipe guard: a sync that would remove every programmed service, or more of them than the
 * operator allows, is refused before anything is written. Both `kpr apply` and `kpr run` go
 * through it (pipeline.ts), so an empty stdin, an empty or vanished manifest directory or a
 * source that lists nothing can never silently take a node's services away.
 */
import { EXIT_INPUT, InputError, KprError } from "../errors.ts";

/** Limit on removals per sync: an absolute count or a share of the programmed services. */
export type MaxDelete = { count: number } | { percent: number };

/** What the operator allowed. */
export interface GuardOptions {
  /** allow removing every programmed service (the explicit "yes, wipe it") */
  pruneAll: boolean;
  /** refuse a sync that removes more than this; undefined: only a full wipe is refused */
  maxDelete?: MaxDelete;
}

/** Parses `--max-delete N|P%` (flag name for messages). Throws InputError (exit 2) on a bad value. */
export function parseMaxDelete(text: string, flag = "--max-delete"): MaxDelete {
  const m = /^(\d+)(%?)$/.exec(text.trim());
  const n = m ? Number(m[1]) : Number.NaN;
  if (!m || !Number.isSafeInteger(n) || (m[2] === "%" && n > 100))
    throw new InputError([
      {
        file: "<flags>",
        field: flag,
        message: `got "${text}", expected a number of services (e.g. 10) or a percentage (e.g. 25%)`,
      },
    ]);
  return m[2] === "%" ? { percent: n } : { count: n };
}

/** The largest number of removals `max` allows out of `programmed` services. */
export function deleteLimit(max: MaxDelete, programmed: number): number {
  return "count" in max ? max.count : Math.floor((programmed * max.percent) / 100);
}

/** A refused sync: exit 2 (bad input, nothing was changed). */
export class WipeRefused extends KprError {
  constructor(
    message: string,
    readonly removed: number,
    readonly programmed: number,
  ) {
    super(message, EXIT_INPUT);
    this.name = "WipeRefused";
  }
}

/**
 * Throws WipeRefused when going from `programmed` to `desired` (service names, "ns/name") would
 * remove every programmed service (at least one being programmed) without `pruneAll`, or more
 * than `maxDelete` allows. `op` starts the message ("apply", "sync").
 */
export function checkRemovals(
  programmed: ReadonlySet<string>,
  desired: ReadonlySet<string>,
  opts: GuardOptions,
  op = "apply",
): void {
  if (opts.pruneAll || programmed.size === 0) return;
  const removed: string[] = [];
  for (const s of programmed) if (!desired.has(s)) removed.push(s);
  checkRemovalCount(removed, programmed.size, opts, op);
}

/**
 * Throws WipeRefused when removing the services `removed` out of `total` programmed ones is a
 * wipe (all of them) without `pruneAll`, or more than `maxDelete` allows.
 */
export function checkRemovalCount(
  removed: readonly string[],
  total: number,
  opts: GuardOptions,
  op = "apply",
): void {
  if (opts.pruneAll || total === 0 || removed.length === 0) return;
  const n = removed.length;
  const names = `${removed.slice(0, 3).join(", ")}${n > 3 ? ", …" : ""}`;
  if (n >= total)
    throw new WipeRefused(
      `${op}: refused: it would remove all ${total} programmed service${total === 1 ? "" : "s"} (${names}) and the input names none of them (empty or unreadable input? nothing was changed; pass --prune-all to remove them all)`,
      n,
      total,
    );
  if (opts.maxDelete === undefined) return;
  const limit = deleteLimit(opts.maxDelete, total);
  if (n > limit) {
    const allowed = "count" in opts.maxDelete ? `${opts.maxDelete.count}` : `${opts.maxDelete.percent}%`;
    throw new WipeRefused(
      `${op}: refused: it would remove ${n} of ${total} programmed services (${names}), more than --max-delete ${allowed} allows (${limit}) (nothing was changed; raise --max-delete or pass --prune-all)`,
      n,
      total,
    );
  }
}
