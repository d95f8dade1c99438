/**
 * The checks an apply makes before writing, run for a dry run too, so both agree: frontends the
 * datapath cannot program (address family) and map capacity (the same check, against the sizes the
 * config gives the maps: apply resizes pinned maps to them). Writes nothing.
 */
import type { Config } from "../config/config.ts";
import type { LbModel } from "../lb/model.ts";
import type { Skipped } from "../lb/plancheck.ts";
import { lbMapMaxEntries } from "./loader.ts";
import { diffMapState, emptyMapState, encodedState, encodeModel, type MapState } from "./mapstate.ts";
import { checkCapacity } from "./reconcile.ts";

/**
 * Runs apply's pre-write checks on `model` against `programmed` (the node's state, when readable):
 * returns the frontends apply would skip and throws apply's own capacity error when the maps
 * would overflow.
 */
export function checkPlan(model: LbModel, cfg: Config, programmed: MapState | undefined): Skipped[] {
  const enc = encodeModel(model);
  const desired = encodedState(enc, enc.frontends, enc.backendIds());
  const ops = diffMapState(programmed ?? emptyMapState(), desired);
  // the sizes apply gives the maps: it resizes pinned maps to the config's
  checkCapacity(programmed ?? emptyMapState(), ops, lbMapMaxEntries(cfg));
  return enc.skipped.map((s) => ({ what: s.frontend, reason: s.reason }));
}
