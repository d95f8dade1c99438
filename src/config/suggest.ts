/** Edit distance (insert, delete, substitute, swap of neighbours) between two strings. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The candidate closest to `input` when it is a plausible typo of it (distance at most a third of
 * its length, at least 1; case and `-`/`_` ignored), else undefined.
 */
export function closest(input: string, candidates: Iterable<string>): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, "");
  const n = norm(input);
  let best: string | undefined;
  let bestD = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const cn = norm(c);
    const dist = cn === n ? 0 : editDistance(n, cn);
    const prefix = n.length >= 3 && (cn.startsWith(n) || n.startsWith(cn)) ? 1 : dist;
    const score = Math.min(dist, prefix);
    if (score < bestD) {
      best = c;
      bestD = score;
    }
  }
  if (best === undefined) return undefined;
  return bestD <= Math.max(1, Math.floor(Math.max(input.length, 3) / 3)) ? best : undefined;
}

/** `' (did you mean "x"?)'` for a near miss, else "". */
export function didYouMean(
  input: string,
  candidates: Iterable<string>,
  render = (s: string) => `"${s}"`,
): string {
  const c = closest(input, candidates);
  return c === undefined ? "" : ` (did you mean ${render(c)}?)`;
}
