/**
 * Two writers never program one node's state at once: `kpr apply` takes an exclusive lock on
 * bpf.root before it reads the state it plans from, and waits (saying so) while another process
 * holds it.
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { lockDirectory } from "../../src/datapath/ffi.ts";
import { needs } from "../harness/env.ts";
import { REPO_ROOT, useTopology } from "../harness/netns.ts";

const skip = needs({ root: true, built: true, tools: ["ip", "nsenter"] }, "apply state lock");

describe.skipIf(!!skip)("kpr apply holds the state lock", () => {
  const topo = useTopology({
    setup: async (t) => {
      await t.addNs("node");
      t.writeConfig({ socketLB: { enabled: false }, nodeName: "node-1" });
    },
  });

  test("waits while another process holds bpf.root, then applies", async () => {
    const t = topo();
    mkdirSync(t.bpfRoot, { recursive: true });
    const held = lockDirectory(t.bpfRoot);
    let released = false;
    try {
      const apply = t.kprSpawn("node", ["apply", "-f", join(REPO_ROOT, "examples/demo")], {
        env: { KPR_LOG_FORMAT: "text" },
      });
      await apply.waitForOutput(/waiting for another kpr process that holds/, 20_000);
      const early = await Promise.race([apply.exited, Bun.sleep(300).then(() => "still waiting")]);
      expect(early, "apply must not finish while the lock is held").toBe("still waiting");
      held[Symbol.dispose]();
      released = true;
      expect(await apply.exited, `apply after release:\n${apply.output()}`).toBe(0);
      expect(apply.output(), "apply summary").toMatch(/\d+ frontends, \d+ backends programmed/);
    } finally {
      if (!released) held[Symbol.dispose]();
    }
  });
});
