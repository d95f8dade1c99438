import { describe, expect, it } from "bun:test";
import { defaultConfig } from "../../src/config/config.ts";
import { snatPortRange } from "../../src/datapath/loader.ts";

describe("snatPortRange", () => {
  it.each([
    ["Linux defaults: above the ephemeral range", "32768\t60999\n", [30000, 32767], [61000, 65535]],
    [
      "a NodePort range reaching past it (the seed's 30000-60000)",
      "32768 50000",
      [30000, 60000],
      [60001, 65535],
    ],
    ["a narrow ephemeral range", "1024 4999", [30000, 32767], [32768, 65535]],
    ["fewer than 1024 ports left: the datapath's default", "32768 65000", [30000, 32767], [0, 0]],
    ["an unreadable sysctl", "", [30000, 32767], [61000, 65535]],
  ] as const)("%s", (_name, sysctl, nodePorts, want) => {
    const cfg = defaultConfig();
    cfg.nodePort.range = [...nodePorts];
    expect(snatPortRange(cfg, sysctl)).toEqual([...want]);
  });
});
