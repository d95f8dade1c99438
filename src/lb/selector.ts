/** Kubernetes label selectors in their string form ("a=b,c!=d,e in (x,y),!f"), as kubectl accepts them. */

export type Requirement =
  | { key: string; op: "exists" | "!exists" }
  | { key: string; op: "in" | "notin"; values: string[] };

const KEY = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?\/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$/;
const VALUE = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?)?$/;

/** Splits on commas outside parentheses. */
function splitTop(s: string): string[] | undefined {
  const out: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of s) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (depth < 0 || depth > 1) return undefined;
    if (ch === "," && depth === 0) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  if (depth !== 0) return undefined;
  out.push(cur);
  return out;
}

function parseRequirement(p: string): Requirement | undefined {
  const not = /^!\s*(\S+)$/.exec(p);
  if (not) return { key: not[1]!, op: "!exists" };
  const eq = /^(\S+?)\s*(==|!=|=)\s*(\S*)$/.exec(p);
  if (eq) return { key: eq[1]!, op: eq[2] === "!=" ? "notin" : "in", values: [eq[3]!] };
  const set = /^(\S+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(p);
  if (set)
    return { key: set[1]!, op: set[2] as "in" | "notin", values: set[3]!.split(",").map((v) => v.trim()) };
  const exists = /^(\S+)$/.exec(p);
  if (exists) return { key: exists[1]!, op: "exists" };
  return undefined;
}

/** Parses a selector; a string result is the error message. The empty selector matches everything. */
export function parseSelector(s: string): Requirement[] | string {
  if (s.trim() === "") return [];
  const parts = splitTop(s);
  if (!parts) return "unbalanced parentheses";
  const reqs: Requirement[] = [];
  for (const raw of parts) {
    const p = raw.trim();
    const req = parseRequirement(p);
    if (!req) return `cannot parse requirement "${p}"`;
    if (!KEY.test(req.key)) return `invalid label key "${req.key}"`;
    if (req.op === "in" || req.op === "notin") {
      const badValue = req.values.find((v) => !VALUE.test(v));
      if (badValue !== undefined) return `invalid label value "${badValue}"`;
    }
    reqs.push(req);
  }
  return reqs;
}

/** True when labels satisfy every requirement. */
export function matchesSelector(reqs: Requirement[], labels: Record<string, string>): boolean {
  return reqs.every((r) => {
    const has = Object.hasOwn(labels, r.key);
    if (!("values" in r)) return r.op === "exists" ? has : !has;
    const hit = has && r.values.includes(labels[r.key]!);
    return r.op === "in" ? hit : !hit;
  });
}
