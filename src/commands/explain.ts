import { defineCommand } from "citty";
import { InputError } from "../errors.ts";
import { commonArgs, configFromArgs, outputArg, printOutput } from "./_common.ts";

const PROTOS = ["tcp", "udp"];

/** `kpr explain`: what the datapath would do with one packet, without changing any state. */
export default defineCommand({
  meta: {
    name: "explain",
    description:
      "Run a synthesized packet through the loaded tc program against the programmed maps (no state changes) and show the frontend, backend, decisions and verdict",
  },
  args: {
    src: { type: "string", description: "Client address and port", valueHint: "IP:PORT", required: true },
    dst: {
      type: "string",
      description: "Destination address and port",
      valueHint: "IP:PORT",
      required: true,
    },
    proto: {
      type: "enum" as const,
      options: PROTOS,
      description: "Protocol: tcp (a SYN) or udp",
      default: "tcp",
      valueHint: "PROTO",
    },
    device: {
      type: "string",
      description: "Device the packet arrives on (default: the first device kpr programmed)",
      valueHint: "DEV",
    },
    ...commonArgs,
    ...outputArg,
  },
  async run({ args }) {
    const { explainPacket, parseEndpoint } = await import("../datapath/explain.ts");
    const src = parseEndpoint(String(args.src ?? ""), "src");
    const dst = parseEndpoint(String(args.dst ?? ""), "dst");
    const proto = String(args.proto);
    if (!PROTOS.includes(proto))
      throw new InputError([
        { file: "<flags>", field: "--proto", message: `got "${proto}", expected tcp or udp` },
      ]);
    let ifindex: number | undefined;
    if (args.device) {
      const { ifNameToIndex } = await import("../datapath/ffi.ts");
      try {
        ifindex = ifNameToIndex(args.device);
      } catch {
        throw new InputError([
          {
            file: "<flags>",
            field: "--device",
            message: `no interface "${args.device}" in this network namespace`,
          },
        ]);
      }
    }
    const cfg = await configFromArgs(args);
    const r = await explainPacket(cfg, { src, dst, proto: proto as "tcp" | "udp", ifindex });
    const { columns } = await import("../lb/format.ts");
    printOutput(args.output, r, () => {
      const fe = r.frontend;
      const be = r.backend;
      const rows = [
        [
          "Packet",
          `${r.packet.src} -> ${r.packet.dst}/${r.packet.proto.toUpperCase()} on ifindex ${r.packet.ifindex}`,
        ],
        [
          "Frontend",
          fe
            ? `${fe.address}:${fe.port} (ID ${fe.id}${fe.name ? `, ${fe.name}` : ""}; ${fe.types.join(", ")}; policy ${fe.trafficPolicy}; ${fe.backends} backend(s)${fe.affinityTimeout !== undefined ? `; affinity ${fe.affinityTimeout}s` : ""}${fe.sourceRanges ? "; source ranges" : ""})`
            : "none",
        ],
        [
          "Backend",
          be
            ? `${be.address}:${be.port} (ID ${be.id}, ${be.state}, ${be.local ? "local" : "remote"})`
            : "none",
        ],
        ["Output", r.output ? `${r.output.src} -> ${r.output.dst}` : "unchanged"],
        ["Verdict", `${r.verdict} (${r.reason})`],
      ];
      return `${columns(rows)}\nWhy:\n${r.why.map((w) => `  - ${w}`).join("\n")}\n`;
    });
    return 0;
  },
});
