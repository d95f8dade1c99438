/**
 * Duplicate mapping keys in YAML or JSON text, found without building a document tree: Bun's
 * parser (the fast path of manifest reading) keeps the last of two equal keys silently, while
 * the Kubernetes API rejects them. One pass over the text: block mappings by indentation,
 * flow mappings (and JSON) by brackets; block scalars and quoted scalars are skipped.
 */

/** A key seen twice in one mapping: its name and the 1-based lines of both. */
export interface DuplicateKey {
  key: string;
  line: number;
  firstLine: number;
}

interface Frame {
  indent: number;
  keys: Map<string, number>;
}

const BLOCK_SCALAR = /^[|>][-+0-9]*[ \t]*(?:#.*)?$/;
const PROPS = /^(?:[&!][^\s]*[ \t]+)+/;

/** Finds every duplicate key (at most `max`) in `text`, one or more YAML documents or JSON. */
export function findDuplicateKeys(text: string, max = 100): DuplicateKey[] {
  const out: DuplicateKey[] = [];
  let stack: Frame[] = [];
  let lineNo = 0;
  let pos = 0;
  /** while > -1: inside a block scalar whose key sits at this indent */
  let scalarIndent = -1;
  /** inside a quoted scalar spanning lines: its quote character */
  let openQuote = "";
  const n = text.length;
  const note = (keys: Map<string, number>, key: string, line: number) => {
    const first = keys.get(key);
    if (first !== undefined && key !== "<<") out.push({ key, line, firstLine: first });
    else keys.set(key, line);
  };
  while (pos <= n && out.length < max) {
    let eol = text.indexOf("\n", pos);
    if (eol < 0) eol = n;
    lineNo++;
    const lineStart = pos;
    pos = eol + 1;
    let i = lineStart;
    while (text.charCodeAt(i) === 32) i++;
    const indent = i - lineStart;
    const first = i < eol ? text.charCodeAt(i) : -1;
    const blank = first === -1 || first === 13;
    if (openQuote !== "") {
      if (closesQuote(text.slice(lineStart, eol), 0, openQuote) >= 0) openQuote = "";
      continue;
    }
    if (scalarIndent >= 0) {
      if (blank || indent > scalarIndent) continue;
      scalarIndent = -1;
    }
    if (blank || first === 35 /* # */) continue;
    if (
      indent === 0 &&
      ((first === 45 && text.startsWith("---", i)) || (first === 46 && text.startsWith("...", i))) &&
      (i + 3 >= eol || text.charCodeAt(i + 3) <= 32)
    ) {
      stack = [];
      continue;
    }
    // sequence entries: "- - key: v" opens a fresh mapping at the column of its first key
    let item = false;
    while (
      text.charCodeAt(i) === 45 &&
      (i + 1 >= eol || text.charCodeAt(i + 1) === 32 || text.charCodeAt(i + 1) === 9)
    ) {
      item = true;
      i++;
      while (text.charCodeAt(i) === 32 || text.charCodeAt(i) === 9) i++;
    }
    const col = i - lineStart;
    if (item) while (stack.length > 0 && stack[stack.length - 1]!.indent >= col) stack.pop();
    const c = text.charCodeAt(i);
    if (i >= eol) continue;
    if (c === 123 || c === 91) {
      const end = scanFlow(text, i, lineNo, out, max);
      lineNo = end.line;
      pos = text.indexOf("\n", end.pos);
      pos = pos < 0 ? n + 1 : pos + 1;
      continue;
    }
    const m = blockKey(text, i, eol);
    if (!m) {
      const body = text.slice(i, eol).replace(PROPS, "");
      if (BLOCK_SCALAR.test(body)) scalarIndent = indent;
      else if ((c === 34 || c === 39) && closesQuote(body, 1, body[0]!) < 0) openQuote = body[0]!;
      continue;
    }
    const key = m.key;
    while (stack.length > 0 && stack[stack.length - 1]!.indent > col) stack.pop();
    let top = stack[stack.length - 1];
    if (!top || top.indent < col) {
      top = { indent: col, keys: new Map() };
      stack.push(top);
    }
    note(top.keys, key, lineNo);
    const vstart = m.end;
    if (vstart >= eol) continue;
    let v = text.charCodeAt(vstart);
    if (v !== 38 && v !== 33 && v !== 124 && v !== 62 && v !== 123 && v !== 91 && v !== 34 && v !== 39)
      continue;
    const value = text.slice(vstart, eol).replace(PROPS, "");
    v = value.charCodeAt(0);
    if (BLOCK_SCALAR.test(value)) scalarIndent = col;
    else if (v === 123 || v === 91) {
      const end = scanFlow(text, eol - value.length, lineNo, out, max);
      lineNo = end.line;
      pos = text.indexOf("\n", end.pos);
      pos = pos < 0 ? n + 1 : pos + 1;
    } else if ((v === 34 || v === 39) && closesQuote(value, 1, value[0]!) < 0) {
      openQuote = value[0]!;
    }
  }
  return out;
}

const isSpace = (c: number) => c === 32 || c === 9 || c === 13 || Number.isNaN(c);

/**
 * The mapping key at text[i..eol) ("key: ...", "'k': ...", "\"k\":"), and where its value
 * starts (spaces skipped); undefined when the line holds no key.
 */
function blockKey(text: string, i: number, eol: number): { key: string; end: number } | undefined {
  const c = text.charCodeAt(i);
  let key: string;
  let j: number;
  if (c === 34 || c === 39) {
    const close = closesQuote(text.slice(i, eol), 1, text[i]!);
    if (close < 0) return undefined;
    const raw = text.slice(i + 1, i + close - 1);
    key = raw.includes(c === 34 ? "\\" : "'") ? unquote(raw, c) : raw;
    j = i + close;
    while (text.charCodeAt(j) === 32 || text.charCodeAt(j) === 9) j++;
    if (text.charCodeAt(j) !== 58 || !(j + 1 >= eol || isSpace(text.charCodeAt(j + 1)))) return undefined;
  } else {
    // not a plain scalar's first character (indicators), except "-x" / "?x" / ":x"
    if ("#{[]},&*!|>%@`".includes(text[i]!)) return undefined;
    if ((c === 45 || c === 63) && isSpace(text.charCodeAt(i + 1))) return undefined;
    j = i;
    for (;;) {
      j = text.indexOf(":", j);
      if (j < 0 || j >= eol) return undefined;
      if (j + 1 >= eol || isSpace(text.charCodeAt(j + 1))) break;
      j++;
    }
    for (let h = i + 1; h < j; h++)
      if (text.charCodeAt(h) === 35 && isSpace(text.charCodeAt(h - 1))) return undefined;
    key = text.slice(i, j).trimEnd();
  }
  let end = j + 1;
  while (end < eol && (text.charCodeAt(end) === 32 || text.charCodeAt(end) === 9)) end++;
  return { key, end };
}

/** Index just past the closing quote in s (from `from`), or -1 when the line does not close it. */
function closesQuote(s: string, from: number, q: string): number {
  for (let i = from; i < s.length; i++) {
    const c = s[i];
    if (q === '"' && c === "\\") {
      i++;
      continue;
    }
    if (c === q) {
      if (q === "'" && s[i + 1] === "'") {
        i++;
        continue;
      }
      return i + 1;
    }
  }
  return -1;
}

interface FlowFrame {
  map: boolean;
  keys: Map<string, number>;
  expectKey: boolean;
}

/**
 * Scans one flow collection (JSON, or YAML `{...}` / `[...]`) starting at `start`, recording
 * duplicate keys. Returns where it ended (just past the closing bracket) and the line there.
 */
function scanFlow(
  text: string,
  start: number,
  line: number,
  out: DuplicateKey[],
  max: number,
): { pos: number; line: number } {
  const stack: FlowFrame[] = [];
  let pending: { key: string; line: number } | undefined;
  let i = start;
  const n = text.length;
  while (i < n && out.length < max) {
    const c = text.charCodeAt(i);
    if (c === 10) {
      line++;
      i++;
      continue;
    }
    if (c === 32 || c === 9 || c === 13) {
      i++;
      continue;
    }
    const top = stack[stack.length - 1];
    if (c === 123 /* { */ || c === 91 /* [ */) {
      stack.push({ map: c === 123, keys: new Map(), expectKey: c === 123 });
      pending = undefined;
      i++;
      continue;
    }
    if (c === 125 /* } */ || c === 93 /* ] */) {
      stack.pop();
      pending = undefined;
      i++;
      if (stack.length === 0) return { pos: i, line };
      continue;
    }
    if (c === 44 /* , */) {
      if (top?.map) top.expectKey = true;
      pending = undefined;
      i++;
      continue;
    }
    if (c === 58 /* : */) {
      if (top?.map && pending) {
        const first = top.keys.get(pending.key);
        if (first !== undefined) out.push({ key: pending.key, line: pending.line, firstLine: first });
        else top.keys.set(pending.key, pending.line);
      }
      if (top?.map) top.expectKey = false;
      pending = undefined;
      i++;
      continue;
    }
    if (c === 35 /* # */) {
      const e = text.indexOf("\n", i);
      i = e < 0 ? n : e;
      continue;
    }
    if (c === 34 /* " */ || c === 39 /* ' */) {
      let j = i + 1;
      let escaped = false;
      for (; j < n; j++) {
        const d = text.charCodeAt(j);
        if (d === 10) line++;
        else if (c === 34 && d === 92 /* \\ */) {
          escaped = true;
          j++;
        } else if (d === c) {
          if (c === 39 && text.charCodeAt(j + 1) === 39) {
            escaped = true;
            j++;
          } else break;
        }
      }
      if (top?.map && top.expectKey) {
        const raw = text.slice(i + 1, j);
        pending = { key: escaped ? unquote(raw, c) : raw, line };
      }
      i = j + 1;
      continue;
    }
    // a plain scalar: up to a flow indicator, or ": " (a key's end)
    let j = i;
    while (j < n) {
      const d = text.charCodeAt(j);
      if (d === 44 || d === 91 || d === 93 || d === 123 || d === 125 || d === 10) break;
      if (d === 58) {
        const e = text.charCodeAt(j + 1);
        if (Number.isNaN(e) || e === 32 || e === 9 || e === 10 || e === 44 || e === 125 || e === 93) break;
      }
      j++;
    }
    if (top?.map && top.expectKey) pending = { key: text.slice(i, j).trim(), line };
    i = Math.max(j, i + 1);
  }
  return { pos: i, line };
}

function unquote(raw: string, quote: number): string {
  if (quote === 39) return raw.replaceAll("''", "'");
  try {
    return JSON.parse(`"${raw}"`) as string;
  } catch {
    return raw.replace(/\\(.)/g, "$1");
  }
}
