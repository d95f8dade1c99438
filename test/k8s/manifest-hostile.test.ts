/**
 * Manifest reading under hostile or careless input: bounded work and output on any file,
 * special files refused without blocking, symlinks followed, duplicate keys rejected on every
 * path, numbers read as the Kubernetes API reads them, unknown fields warned by name and line.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InputError } from "../../src/errors.ts";
import { MAX_PROBLEMS, manifestsFromText, readManifests } from "../../src/k8s/manifest.ts";
import { needs, ownNetns } from "../harness/env.ts";
import { KPR_BIN } from "../harness/netns.ts";

const dir = mkdtempSync(join(tmpdir(), "kpr-hostile-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SVC = `apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: 80
    targetPort: 8080
`;

async function problemsOf(p: Promise<unknown> | (() => unknown)): Promise<string[]> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    if (e instanceof InputError)
      return e.problems.map((x) => [x.file, x.line, x.field, x.message].join(" | "));
    throw e;
  }
  return [];
}

describe("duplicate keys and numbers", () => {
  test.each([
    [
      "YAML, nested (fast path)",
      SVC.replace("    port: 80\n", "    port: 80\n    port: 81\n"),
      /m\.yaml \| 10 \| port \| duplicate key \(first at line 9/,
    ],
    [
      "YAML, in metadata",
      SVC.replace("  name: web\n", "  name: web\n  name: api\n"),
      /m\.yaml \| 5 \| name \| duplicate key/,
    ],
    [
      "JSON",
      JSON.stringify({
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "web" },
        spec: { clusterIP: "10.96.0.10", ports: [{ port: 80 }] },
      }).replace('"port":80', '"port":80,"port":81'),
      /m\.yaml \| 1 \| port \| duplicate key/,
    ],
  ])("%s: rejected", async (_, text, re) => {
    const ps = await problemsOf(() => manifestsFromText(text, "m.yaml"));
    expect(ps.length, "one problem").toBe(1);
    expect(ps[0], "the duplicate named with its line").toMatch(re);
  });

  test("port: 0120 is octal 80, as kubectl reads it; 0080 and 120 stay decimal", () => {
    const st = manifestsFromText(
      SVC.replace("port: 80", "port: 0120").replace("targetPort: 8080", "targetPort: 120"),
      "m.yaml",
    );
    expect(
      st.services[0]!.spec!.ports!.map((p) => [p.port, p.targetPort]),
      "ports",
    ).toEqual([[80, 120]]);
  });
});

describe("bounded reading", () => {
  test("a FIFO, /dev/zero and a directory's FIFO are refused at once, without reading", async () => {
    const sub = join(dir, "special");
    mkdirSync(sub);
    const fifo = join(sub, "fifo.yaml");
    expect(Bun.spawnSync(["/usr/bin/mkfifo", fifo]).exitCode, "mkfifo").toBe(0);
    const t0 = performance.now();
    const ps = await problemsOf(readManifests([fifo, "/dev/zero", sub]));
    expect(performance.now() - t0, "answered without blocking (ms)").toBeLessThan(5000);
    expect(ps, "each special file named").toEqual([
      `${fifo} |  |  | a FIFO, not a regular file: not read`,
      "/dev/zero |  |  | a character device, not a regular file: not read",
      `${fifo} |  |  | not a regular file (a FIFO, socket or device): not read`,
    ]);
    rmSync(fifo);
  });

  test("a file above the size limit is refused before it is read", async () => {
    const big = join(dir, "big.yaml");
    writeFileSync(big, "");
    truncateSync(big, 100 * 1024 * 1024);
    const ps = await problemsOf(readManifests([big]));
    expect(ps, "size named with the limits").toEqual([
      `${big} |  |  | 100 MiB is more than kpr reads (32 MiB per file, 32 MiB in all): split the input or apply it in parts`,
    ]);
    rmSync(big);
  });

  test("a symlinked manifest in a directory is read (it was skipped without notice)", async () => {
    const d = join(dir, "linked");
    mkdirSync(join(d, "real"), { recursive: true });
    writeFileSync(join(dir, "target.txt"), SVC);
    symlinkSync(join(dir, "target.txt"), join(d, "web.yaml"));
    const st = await readManifests([d]);
    expect(
      st.services.map((s) => s.metadata.name),
      "service read through the symlink",
    ).toEqual(["web"]);
  });

  test("problems are capped: the first ones and a count of the rest", async () => {
    const bad = Array.from(
      { length: 500 },
      (_, i) => `apiVersion: v1\nkind: Service\nmetadata:\n  name: s${i}\nspec:\n  ports: 7\n`,
    ).join("---\n");
    const ps = await problemsOf(() => manifestsFromText(bad, "m.yaml"));
    expect(ps.length, "kept problems + the count line").toBe(MAX_PROBLEMS + 1);
    expect(ps.at(-1), "count of the rest").toContain(`... and ${500 - MAX_PROBLEMS} more problems`);
  });
});

const skip = needs({ built: true }, "hostile manifests against dist/kpr");
describe.skipIf(!!skip)("dist/kpr on hostile manifests", () => {
  const cfg = join(dir, "config.conf");
  writeFileSync(cfg, `bpf:\n  root: /sys/fs/bpf/kpr-hostile-test-absent\nnodeName: node-1\n`);
  const run = (args: string[]) => {
    const p = Bun.spawnSync([...ownNetns(), KPR_BIN, ...args, "--config", cfg], {
      env: { PATH: "/usr/bin:/bin", KPR_LOG_FORMAT: "text" },
    });
    return {
      code: p.exitCode,
      stderr: p.stderr.toString(),
      stdout: p.stdout.toString(),
      maxRssMiB: (p.resourceUsage?.maxRSS ?? 0) / 1024 / 1024,
    };
  };

  test("1 MB of malformed YAML: exit 2, a short report, bounded memory", () => {
    const junk = [
      "a: [",
      "- b: {",
      "  c: d: e",
      "\t- x",
      "key: 'open",
      "]]",
      "? ? ?",
      "&a *b",
      "- - - -",
      "x: |\n  y",
    ];
    let text = "";
    for (let i = 0; text.length < 1_000_000; i++) text += `${junk[(i * 7) % junk.length]}\n`;
    const f = join(dir, "junk.yaml");
    writeFileSync(f, text);
    const r = run(["apply", "--dry-run", "-f", f]);
    expect(r.code, `exit code\n${r.stderr.slice(0, 2000)}`).toBe(2);
    expect(r.stderr.length, "report size (bytes)").toBeLessThan(64 * 1024);
    expect(r.stderr, "no stack trace").not.toMatch(/\n\s+at /);
    expect(r.maxRssMiB, "peak RSS (MiB)").toBeLessThan(500);
  });

  test("5,000 missing -f paths: exit 2, a short report", () => {
    const args = Array.from({ length: 5000 }, (_, i) => ["-f", join(dir, `missing-${i}.yaml`)]).flat();
    const r = run(["apply", "--dry-run", ...args]);
    expect(r.code, "exit code").toBe(2);
    expect(r.stderr.length, "report size (bytes)").toBeLessThan(64 * 1024);
    expect(r.stderr, "count of the rest").toContain("more problems");
  });

  test("an unknown field is warned about by name and line; the apply goes on", () => {
    const f = join(dir, "typo.yaml");
    writeFileSync(
      f,
      SVC.replace(
        "  clusterIP:",
        "  loadBalancerSourceRange: [10.0.0.0/8]\n  externalIps: [1.2.3.4]\n  clusterIP:",
      ),
    );
    const r = run(["apply", "--dry-run", "-f", f]);
    expect(r.code, `exit code\n${r.stderr}`).toBe(0);
    expect(r.stderr, "first typo").toContain(
      `${f}:6: Service default/web: spec.loadBalancerSourceRange: unknown field`,
    );
    expect(r.stderr, "second typo").toContain(`${f}:7: Service default/web: spec.externalIps: unknown field`);
  });

  test("a config with a YAML alias bomb: exit 2, no stack trace", () => {
    const bomb = join(dir, "bomb.yaml");
    const lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 8; i++) {
      const p = String.fromCharCode(96 + i);
      const n = String.fromCharCode(97 + i);
      lines.push(`${n}: &${n} [${Array(9).fill(`*${p}`).join(",")}]`);
    }
    writeFileSync(bomb, `${lines.join("\n")}\n`);
    const p = Bun.spawnSync([KPR_BIN, "status", "--config", bomb], { env: { KPR_LOG_FORMAT: "text" } });
    const err = p.stderr.toString();
    expect(p.exitCode, `exit code\n${err}`).toBe(2);
    expect(err, "names the problem").toContain("invalid YAML");
    expect(err, "no stack trace").not.toMatch(/\n\s+at /);
  });
});
