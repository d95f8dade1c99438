/** Progress lines: none on a fast run, then at most one a second once a run passes ~2 s. */
import { describe, expect, test } from "bun:test";
import type { ConsolaInstance } from "consola";
import { Progress } from "../../src/progress.ts";

describe("Progress", () => {
  test("silent for 2 s, then one line per second with the elapsed time", () => {
    const lines: string[] = [];
    const log = { info: (m: string) => lines.push(m) } as unknown as ConsolaInstance;
    let t = 1000;
    const p = new Progress(log, 1000, 2000, 1000, () => t);
    let n = 0;
    const what = () => `translating: ${++n}/10 services`;
    for (; t < 2999; t += 100) p.tick(what);
    expect(lines, "a run under 2 s prints nothing").toEqual([]);
    for (; t <= 5000; t += 100) p.tick(what);
    expect(lines).toEqual([
      "translating: 1/10 services (2.0 s)",
      "translating: 2/10 services (3.0 s)",
      "translating: 3/10 services (4.0 s)",
    ]);
  });
});
