import { defineCommand } from "citty";
import { EXIT_RUNTIME, KprError } from "../../errors.ts";
import { commonArgs, configFromArgs, outputArg, printOutput } from "../_common.ts";

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
    printOutput(args.output, report, () => {
      const out: string[] = [];
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
      out.push(`kernel ${report.kernel}, libbpf ${report.libbpf}`, fmt(head), ...rows.map(fmt));
      if (!report.missing.length) out.push("", "all features the current config needs are present");
      return `${out.join("\n")}\n`;
    });
    // citty drops a subcommand's return value: a KprError carries exit code 1 to main
    if (report.missing.length)
      throw new KprError(
        `probe: ${report.missing.length} feature(s) the current config needs are missing: ${report.missing.join(", ")}`,
        EXIT_RUNTIME,
      );
  },
});
