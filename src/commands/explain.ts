import { defineCommand } from "citty";
import { InputError } from "../errors.ts";
import { commonArgs, configFromArgs, outputArg, printOutput } from "./_common.ts";

const PROTOS = ["tcp", "udp"];
const FROM = ["node", "pod"];

/** `kpr explain`: what the datapath would do with one packet, without changing any state. */
export default defineCommand({
  meta: {
    name: "explain",
    description:
      "Run a synthesized packet through the loaded tc program (or, with --local, a connect() through the socket-LB hook) against the programmed maps, without changing state, and show the frontend, backend, decisions and verdict",
  },
  args: {
    src: {
      type: "string",
      description: "Client address and port (with --local: the socket's bound source; default unbound)",
      valueHint: "IP:PORT",
    },
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
    local: {
      type: "boolean",
      description:
        "Explain a connect() from a process on this node (the socket-LB hook), made in an empty network namespace so that no packet leaves",
    },
    from: {
      type: "enum" as const,
      options: FROM,
      description: "With --local: the process's network namespace, the node's own or a pod's",
      default: "node",
      valueHint: "NS",
    },
    ...commonArgs,
    ...outputArg,
  },
  async run({ args }) {
    const { explainPacket, parseEndpoint } = await import("../datapath/explain.ts");
    const local = args.local === true;
    const problems = [];
    if (args.src === undefined && !local)
      problems.push({ file: "<flags>", field: "--src", message: "required (optional with --local only)" });
    if (local && args.device)
      problems.push({
        file: "<flags>",
        field: "--device",
        message: "a connect() from a process has no device: drop --device or --local",
      });
    const from = String(args.from);
    if (!FROM.includes(from))
      problems.push({ file: "<flags>", field: "--from", message: `got "${from}", expected node or pod` });
    if (!local && args.from !== "node")
      problems.push({ file: "<flags>", field: "--from", message: "only with --local" });
    const proto = String(args.proto);
    if (!PROTOS.includes(proto))
      problems.push({ file: "<flags>", field: "--proto", message: `got "${proto}", expected tcp or udp` });
    if (problems.length > 0) throw new InputError(problems);
    const src = args.src !== undefined ? parseEndpoint(String(args.src), "src") : undefined;
    const dst = parseEndpoint(String(args.dst ?? ""), "dst");
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
    const r = local
      ? await (await import("../datapath/explain-sock.ts")).explainConnect(cfg, {
          ...(src ? { src } : {}),
          dst,
          proto: proto as "tcp" | "udp",
          from: from as "node" | "pod",
        })
      : await explainPacket(cfg, { src: src!, dst, proto: proto as "tcp" | "udp", ifindex });
    const { columns } = await import("../lb/format.ts");
    printOutput(args.output, r, () => {
      const fe = r.frontend;
      const be = r.backend;
      const rows = [
        r.context
          ? [
              "Connect",
              `${r.packet.src} -> ${r.packet.dst}/${r.packet.proto.toUpperCase()} from a process in ${r.context.from === "node" ? "the node's" : "a pod's"} network namespace`,
            ]
          : [
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
      const side = r.sideEffects?.length
        ? `Side effects:\n${r.sideEffects.map((w) => `  - ${w}`).join("\n")}\n`
        : "";
      return `${columns(rows)}\nWhy:\n${r.why.map((w) => `  - ${w}`).join("\n")}\n${side}`;
    });
    return 0;
  },
});
