/**
 * The checks an apply makes before writing, run for a dry run too, so both agree: frontends the
 * datapath cannot program (address family) and map capacity (the same check, against the pinned
 * maps' real sizes or the sizes an apply would create). Reads the pinned maps; writes nothing.
 */
import type { Config } from "../config/config.ts";
import type { LbModel } from "../lb/model.ts";
import type { Skipped } from "../lb/plancheck.ts";
import { LB_STATE_MAPS, type LbStateMap } from "./lbmaps.ts";
import { lbMapMaxEntries } from "./loader.ts";
import { diffMapState, emptyMapState, encodedState, encodeModel, type MapState } from "./mapstate.ts";
import { checkCapacity, openPinnedLbMaps } from "./reconcile.ts";

/**
 * Runs apply's pre-write checks on `model` against `programmed` (the node's state, when readable):
 * returns the frontends apply would skip and throws apply's own capacity error when the maps
 * would overflow.
 */
export function checkPlan(model: LbModel, cfg: Config, programmed: MapState | undefined): Skipped[] {
  const enc = encodeModel(model);
  const desired = encodedState(enc, enc.frontends, enc.backendIds());
  const ops = diffMapState(programmed ?? emptyMapState(), desired);
  checkCapacity(programmed ?? emptyMapState(), ops, pinnedMaxEntries(cfg) ?? lbMapMaxEntries(cfg));
  return enc.skipped.map((s) => ({ what: s.frontend, reason: s.reason }));
}

function pinnedMaxEntries(cfg: Config): Record<LbStateMap, number> | undefined {
  let pinned: ReturnType<typeof openPinnedLbMaps>;
  try {
    pinned = openPinnedLbMaps(cfg);
  } catch {
    return undefined;
  }
  if (!pinned) return undefined;
  try {
    return Object.fromEntries(LB_STATE_MAPS.map((m) => [m, pinned![m].maxEntries])) as Record<
      LbStateMap,
      number
    >;
  } finally {
    for (const m of Object.values(pinned)) m.close();
  }
}
