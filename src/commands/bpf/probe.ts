import { defineCommand } from "citty";
import { EXIT_RUNTIME, KprError } from "../../errors.ts";
import { commonArgs, configFromArgs, outputArg } from "../_common.ts";

/** `kpr bpf probe`: kernel features kpr uses, present or missing, and who needs them. */
export default defineCommand({
  meta: {
    name: "probe",
    description:
      "Probe the kernel for the eBPF features kpr uses (exit 1 when one the config needs is missing)",
  },
  args: { ...commonArgs, ...outputArg },
  async run({ args }) {
    const cfg = await configFromArgs(args);
    const { probeKernel } = await import("../../datapath/probe.ts");
    const report = await probeKernel(cfg);
    if (args.output === "json") {
      console.log(JSON.stringify(report, null, 2));
    } else {
      const rows = report.features.map((f) => [
        f.present ? "ok" : f.required ? "MISSING" : "absent",
        f.name,
        f.detail,
        `${f.neededBy}${f.required ? "" : " (optional here)"}`,
      ]);
      const head = ["STATUS", "FEATURE", "DETAIL", "NEEDED BY"];
      const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
      const fmt = (r: string[]) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
          .join("  ")
          .trimEnd();
      console.log(`kernel ${report.kernel}, libbpf ${report.libbpf}`);
      console.log(fmt(head));
      for (const r of rows) console.log(fmt(r));
      if (!report.missing.length) console.log("\nall features the current config needs are present");
    }
    // citty drops a subcommand's return value: a KprError carries exit code 1 to main
    if (report.missing.length)
      throw new KprError(
        `probe: ${report.missing.length} feature(s) the current config needs are missing: ${report.missing.join(", ")}`,
        EXIT_RUNTIME,
      );
  },
});
