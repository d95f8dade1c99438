/**
 * Progress lines for long runs: nothing while a run is fast, then one line at most every second
 * once it has taken longer than about two seconds (an apply of 10,000 services, a big re-sync).
 */
import type { ConsolaInstance } from "consola";

export class Progress {
  private last = Number.NEGATIVE_INFINITY;

  /** `start`: performance.now() when the run began (default: the process start, for one-shot commands). */
  constructor(
    private readonly log: ConsolaInstance,
    private readonly start = 0,
    private readonly afterMs = 2000,
    private readonly everyMs = 1000,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Logs what() (info) when due; cheap to call often. */
  tick(what: () => string): void {
    const t = this.now();
    if (t - this.start < this.afterMs || t - this.last < this.everyMs) return;
    this.last = t;
    this.log.info(`${what()} (${((t - this.start) / 1000).toFixed(1)} s)`);
  }
}
