/**
 * Packet capture inside a topology namespace with tcpdump, returning raw frames for
 * parsePacket/verifyChecksums, plus a minimal pcap reader.
 *
 *   const cap = await startCapture(topo, "b", "eth0", { filter: "tcp port 80" });
 *   ... traffic ...
 *   const frames = await cap.stop();   // Uint8Array[] (Ethernet frames)
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pollUntil, type Topology } from "./netns.ts";

/** Frames of a classic pcap file (either byte order, µs or ns timestamps). */
export function readPcap(bytes: Uint8Array): { linkType: number; frames: Uint8Array[] } {
  if (bytes.length < 24) throw new Error(`read pcap: ${bytes.length} bytes, shorter than the file header`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = dv.getUint32(0, true);
  let le: boolean;
  if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) le = true;
  else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) le = false;
  else throw new Error(`read pcap: bad magic 0x${magic.toString(16)} (pcapng is not supported)`);
  const linkType = dv.getUint32(20, le);
  const frames: Uint8Array[] = [];
  for (let o = 24; o + 16 <= bytes.length; ) {
    const incl = dv.getUint32(o + 8, le);
    if (o + 16 + incl > bytes.length) break; // a record cut short by a killed writer
    frames.push(bytes.slice(o + 16, o + 16 + incl));
    o += 16 + incl;
  }
  return { linkType, frames };
}

export interface Capture {
  /** Frames written so far. */
  frames(): Uint8Array[];
  /** Polls until at least n frames (matching `match`, if given) were captured; returns them. */
  waitForFrames(
    n: number,
    opts?: { match?: (f: Uint8Array) => boolean; timeoutMs?: number },
  ): Promise<Uint8Array[]>;
  /** Stops tcpdump (after `count` frames or now) and returns the frames captured. */
  stop(): Promise<Uint8Array[]>;
}

export interface CaptureOptions {
  /** tcpdump filter expression, e.g. "tcp port 80". */
  filter?: string;
  /** Stop by itself after this many frames. */
  count?: number;
  /** Capture direction: "in", "out" or "inout" (default). */
  direction?: "in" | "out" | "inout";
}

/** Starts tcpdump on dev inside ns; resolves once it is listening. */
export async function startCapture(
  topo: Topology,
  ns: string,
  dev: string,
  opts: CaptureOptions = {},
): Promise<Capture> {
  const file = join(
    topo.tmpDir,
    `cap-${topo.ns(ns)}-${dev}-${Date.now()}-${Math.random().toString(36).slice(2, 6)}.pcap`,
  );
  // --immediate-mode: no ring-buffer block timeout (else packets sit unread for up to ~1 s and a
  // stop loses them); -U: write each packet at once, so frames() sees it.
  const argv = ["tcpdump", "-n", "--immediate-mode", "-U", "-s", "0", "-i", dev, "-w", file];
  if (opts.count) argv.push("-c", String(opts.count));
  if (opts.direction && opts.direction !== "inout") argv.push("-Q", opts.direction);
  if (opts.filter) argv.push(...opts.filter.split(/\s+/));
  const h = topo.spawn(ns, argv);
  await h.waitForOutput(/listening on/, 10_000);
  const frames = () => {
    try {
      return readPcap(new Uint8Array(readFileSync(file))).frames;
    } catch {
      return [];
    }
  };
  return {
    frames,
    async waitForFrames(n, o = {}) {
      let got: Uint8Array[] = [];
      await pollUntil(
        `capture on ${topo.ns(ns)}/${dev}: ${n} frame(s)`,
        () => {
          got = frames().filter(o.match ?? (() => true));
          return got.length >= n;
        },
        o.timeoutMs ?? 5000,
      );
      return got;
    },
    async stop() {
      if (opts.count) {
        await Promise.race([h.exited, new Promise((r) => setTimeout(r, 5000))]);
      }
      await h.kill(2000);
      return readPcap(new Uint8Array(readFileSync(file))).frames;
    },
  };
}
