/**
 * The wipe guard: an apply that would remove every programmed service, or more than
 * --max-delete of them, is refused with exit 2 and nothing changes; --prune-all allows it.
 * `kubeProxyReplacement: false` programs nothing and says so.
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { checkRemovals, deleteLimit, parseMaxDelete, WipeRefused } from "../../src/agent/guard.ts";
import { InputError } from "../../src/errors.ts";
import { needs } from "../harness/env.ts";
import { REPO_ROOT, useTopology } from "../harness/netns.ts";

const set = (...s: string[]) => new Set(s);

describe("checkRemovals", () => {
  test.each<[string, string[], string[], Parameters<typeof checkRemovals>[2], number | undefined]>([
    ["nothing programmed, nothing wanted", [], [], { pruneAll: false }, undefined],
    ["every service goes", ["a/x", "a/y"], [], { pruneAll: false }, 2],
    ["every service goes, renamed input", ["a/x"], ["a/z"], { pruneAll: false }, 1],
    ["every service goes with --prune-all", ["a/x", "a/y"], [], { pruneAll: true }, undefined],
    ["one of two goes, no limit", ["a/x", "a/y"], ["a/x"], { pruneAll: false }, undefined],
    [
      "2 of 4 go, --max-delete 1",
      ["a", "b", "c", "d"],
      ["a", "b"],
      { pruneAll: false, maxDelete: { count: 1 } },
      2,
    ],
    [
      "2 of 4 go, --max-delete 2",
      ["a", "b", "c", "d"],
      ["a", "b"],
      { pruneAll: false, maxDelete: { count: 2 } },
      undefined,
    ],
    [
      "2 of 4 go, --max-delete 25%",
      ["a", "b", "c", "d"],
      ["a", "b"],
      { pruneAll: false, maxDelete: { percent: 25 } },
      2,
    ],
    [
      "2 of 4 go, --max-delete 50%",
      ["a", "b", "c", "d"],
      ["a", "b"],
      { pruneAll: false, maxDelete: { percent: 50 } },
      undefined,
    ],
    ["additions only", ["a"], ["a", "b"], { pruneAll: false, maxDelete: { count: 0 } }, undefined],
  ])("%s", (_name, programmed, desired, opts, refusedRemoving) => {
    let err: unknown;
    try {
      checkRemovals(set(...programmed), set(...desired), opts);
    } catch (e) {
      err = e;
    }
    if (refusedRemoving === undefined) expect(err, "allowed").toBeUndefined();
    else {
      expect(err, "refused").toBeInstanceOf(WipeRefused);
      expect((err as WipeRefused).exitCode, "exit code").toBe(2);
      expect((err as WipeRefused).removed, "removed count").toBe(refusedRemoving);
    }
  });

  test("the message names how many would go and the flag that allows it", () => {
    expect(() => checkRemovals(set("a/x", "a/y"), set(), { pruneAll: false })).toThrow(
      /apply: refused: it would remove all 2 programmed services \(a\/x, a\/y\).*--prune-all/,
    );
    expect(() =>
      checkRemovals(set("a", "b", "c"), set("a"), { pruneAll: false, maxDelete: { count: 1 } }, "sync"),
    ).toThrow(/sync: refused: it would remove 2 of 3 programmed services .*--max-delete 1 allows \(1\)/);
  });
});

describe("parseMaxDelete", () => {
  test.each<[string, ReturnType<typeof parseMaxDelete>]>([
    ["10", { count: 10 }],
    ["0", { count: 0 }],
    ["25%", { percent: 25 }],
    [" 100% ", { percent: 100 }],
  ])("%p", (text, want) => expect(parseMaxDelete(text)).toEqual(want));
  test.each(["", "-1", "1.5", "101%", "ten", "5%%"])("rejects %p (exit 2)", (text) => {
    expect(() => parseMaxDelete(text)).toThrow(InputError);
  });
  test("deleteLimit rounds a share down", () => {
    expect(deleteLimit({ percent: 10 }, 25)).toBe(2);
    expect(deleteLimit({ count: 3 }, 25)).toBe(3);
  });
});

const TWO_SERVICES = `
apiVersion: v1
kind: Service
metadata: { name: a, namespace: g }
spec: { clusterIP: 10.96.7.1, ports: [{ port: 80, targetPort: 8080 }] }
---
apiVersion: v1
kind: Service
metadata: { name: b, namespace: g }
spec: { clusterIP: 10.96.7.2, ports: [{ port: 80, targetPort: 8080 }] }
`;
const ONE_SERVICE = TWO_SERVICES.split("---")[0]!;

const skip = needs({ root: true, built: true, tools: ["ip", "nsenter"] }, "wipe guard");

describe.skipIf(!!skip)("kpr apply refuses to wipe the node", () => {
  const topo = useTopology({
    setup: async (t) => {
      await t.addNs("node");
      t.writeConfig({ socketLB: { enabled: false }, nodeName: "node-1" });
    },
  });
  const listed = async () => {
    const r = await topo().kpr("node", ["service", "list", "-o", "json"]);
    expect(r.code, `service list: ${r.stderr}`).toBe(0);
    return (JSON.parse(r.stdout) as { service: string }[]).map((e) => e.service).sort();
  };

  test("empty stdin, an empty directory and --max-delete are refused (exit 2, nothing changed); --prune-all wipes", async () => {
    const t = topo();
    const two = join(t.tmpDir, "two.yaml");
    writeFileSync(two, TWO_SERVICES);
    const first = await t.kpr("node", ["apply", "-f", two]);
    expect(first.code, `first apply: ${first.stderr}`).toBe(0);
    expect(await listed(), "programmed at first").toEqual(["g/a", "g/b"]);

    const stdin = await t.kpr("node", ["apply", "-f", "-"], { input: "" });
    expect(stdin.code, "empty stdin exit code").toBe(2);
    expect(stdin.stderr, "empty stdin message").toContain("would remove all 2 programmed services");
    expect(stdin.stderr, "names the flag").toContain("--prune-all");

    const kprBin = join(REPO_ROOT, "dist", "kpr");
    const piped = await t.exec(
      "node",
      ["sh", "-c", `false | ${kprBin} apply -f - --config ${t.configPath}`],
      { nsenter: true },
    );
    expect(piped.code, "false | kpr apply -f - exit code").toBe(2);
    expect(piped.stderr, "false | kpr apply -f - message").toContain("refused");

    const empty = join(t.tmpDir, "empty");
    mkdirSync(empty);
    const dir = await t.kpr("node", ["apply", "-f", empty]);
    expect(dir.code, "empty directory exit code").toBe(2);
    expect(await listed(), "still programmed after the refusals").toEqual(["g/a", "g/b"]);

    const one = join(t.tmpDir, "one.yaml");
    writeFileSync(one, ONE_SERVICE);
    const limited = await t.kpr("node", ["apply", "--max-delete", "0", "-f", one]);
    expect(limited.code, "--max-delete 0 exit code").toBe(2);
    expect(limited.stderr, "--max-delete message").toContain("would remove 1 of 2 programmed services");
    const allowed = await t.kpr("node", ["apply", "--max-delete", "50%", "-f", one]);
    expect(allowed.code, `--max-delete 50%: ${allowed.stderr}`).toBe(0);
    expect(await listed(), "after removing one").toEqual(["g/a"]);

    const wipe = await t.kpr("node", ["apply", "--prune-all", "-f", "-"], { input: "" });
    expect(wipe.code, `--prune-all: ${wipe.stderr}`).toBe(0);
    expect(await listed(), "after --prune-all").toEqual([]);
  });

  test("kubeProxyReplacement: false programs nothing and says so (exit 0)", async () => {
    const t = topo();
    const cfg = t.writeConfig({
      socketLB: { enabled: false },
      nodeName: "node-1",
      kubeProxyReplacement: false,
    });
    expect(await listed(), "nothing programmed before (the previous test ends wiped)").toEqual([]);
    const two = join(t.tmpDir, "two-off.yaml");
    writeFileSync(two, TWO_SERVICES);
    const r = await t.kpr("node", ["apply", "-f", two], { config: cfg });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr, "warning").toContain("kubeProxyReplacement is false");
    expect(await listed(), "nothing programmed").toEqual([]);
  });
});
