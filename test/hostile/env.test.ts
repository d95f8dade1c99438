/**
 * The binary runs as root: nothing in the directory it runs in or in `$PATH` may make it run
 * other code. bunfig.toml preloads and .env files are not loaded by the compiled binary, and the
 * helper programs (ip, tc) are taken from the system directories only.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { needs } from "../harness/env.ts";
import { KPR_BIN } from "../harness/netns.ts";

const skip = needs({ built: true, tools: ["ip"] }, "binary environment hardening");

describe.skipIf(!!skip)("dist/kpr ignores its caller's directory and $PATH", () => {
  const dir = mkdtempSync(join(tmpdir(), "kpr-env-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const marker = join(dir, "pwned");
  const manifest = join(dir, "svc.yaml");
  writeFileSync(
    manifest,
    "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  clusterIP: 10.96.0.10\n  ports:\n  - port: 80\n",
  );

  test("bunfig.toml preload and .env in the working directory are not loaded", () => {
    const cwd = join(dir, "cwd");
    mkdirSync(cwd);
    writeFileSync(
      join(cwd, "pre.js"),
      `require("node:fs").writeFileSync(${JSON.stringify(marker)}, "preload");\n`,
    );
    writeFileSync(join(cwd, "bunfig.toml"), `preload = ["./pre.js"]\n`);
    writeFileSync(join(cwd, ".env"), "KPR_LOG_LEVEL=debug\n");
    const r = Bun.spawnSync([KPR_BIN, "version"], { cwd, env: { PATH: "/usr/bin:/bin" } });
    expect(r.exitCode, r.stderr.toString()).toBe(0);
    expect(existsSync(marker), "the preload script did not run").toBe(false);
  });

  test("an `ip` earlier in $PATH is not run", () => {
    const evil = join(dir, "bin");
    mkdirSync(evil);
    writeFileSync(join(evil, "ip"), `#!/bin/sh\necho path > ${marker}\nexit 1\n`);
    chmodSync(join(evil, "ip"), 0o755);
    const cfg = join(dir, "config.conf");
    writeFileSync(cfg, "bpf:\n  root: /sys/fs/bpf/kpr-env-test-absent\ndevices: [lo]\nnodeName: node-1\n");
    const r = Bun.spawnSync([KPR_BIN, "apply", "--dry-run", "-f", manifest, "--config", cfg], {
      env: { PATH: `${evil}:/usr/sbin:/usr/bin:/sbin:/bin`, KPR_LOG_FORMAT: "text" },
    });
    expect(existsSync(marker), "the ip in $PATH did not run").toBe(false);
    expect(r.exitCode, r.stderr.toString()).toBe(0);
  });
});
