import { afterAll, afterEach, describe, expect, it } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  notifyReady,
  notifyStatus,
  notifyStopping,
  sdNotify,
  startWatchdog,
} from "../../src/agent/notify.ts";
import { needs } from "../harness/env.ts";

const skip = needs({ tools: ["python3"] }, "sd_notify protocol");

/** A unix datagram socket bound by python3 that prints every datagram it receives as a JSON line. */
const RECEIVER = `
import json, socket, sys
name = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + name[1:] if name.startswith("@") else name)
print(json.dumps("bound"), flush=True)
while True:
    data = s.recv(4096)
    print(json.dumps(data.decode()), flush=True)
`;

interface Receiver {
  messages: string[];
  waitFor(pred: (m: string[]) => boolean, what: string): Promise<void>;
  stop(): void;
}

async function startReceiver(name: string): Promise<Receiver> {
  const proc = Bun.spawn(["python3", "-c", RECEIVER, name], { stdout: "pipe", stderr: "inherit" });
  const messages: string[] = [];
  let bound = false;
  (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of proc.stdout) {
      buf += decoder.decode(chunk);
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        const m = JSON.parse(buf.slice(0, nl)) as string;
        if (m === "bound" && !bound) bound = true;
        else messages.push(m);
        buf = buf.slice(nl + 1);
        nl = buf.indexOf("\n");
      }
    }
  })();
  const waitFor = async (pred: (m: string[]) => boolean, what: string) => {
    const deadline = Date.now() + 5000;
    while (!pred(messages)) {
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(messages)}`);
      await Bun.sleep(10);
    }
  };
  const deadline = Date.now() + 5000;
  while (!bound) {
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error("receiver did not bind");
    await Bun.sleep(10);
  }
  return { messages, waitFor, stop: () => proc.kill() };
}

describe.skipIf(!!skip)("sd_notify against a NOTIFY_SOCKET the test binds", () => {
  const dir = mkdtempSync(join(tmpdir(), "kpr-notify-"));
  const saved = { ...process.env };
  let receiver: Receiver | undefined;
  afterEach(() => {
    receiver?.stop();
    receiver = undefined;
    for (const k of ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("is a no-op without NOTIFY_SOCKET", () => {
    delete process.env.NOTIFY_SOCKET;
    expect(sdNotify("READY=1"), "no socket → false").toBe(false);
    using _w = startWatchdog();
  });

  it.each([
    ["a socket path", () => join(dir, "notify.sock")],
    [
      "an abstract socket (@name)",
      () => `@kpr-notify-test-${process.pid}-${Math.random().toString(36).slice(2)}`,
    ],
  ])("delivers READY=1, STATUS= and STOPPING=1 to %s", async (_label, name) => {
    const sock = name();
    receiver = await startReceiver(sock);
    process.env.NOTIFY_SOCKET = sock;
    expect(notifyReady("synced 3 services\nfrom manifest"), "ready sent").toBe(true);
    expect(notifyStatus("api unreachable: ECONNREFUSED"), "status sent").toBe(true);
    expect(notifyStopping(), "stopping sent").toBe(true);
    await receiver.waitFor((m) => m.length >= 3, "three notifications");
    expect(receiver.messages, "datagrams as received").toEqual([
      "READY=1\nSTATUS=synced 3 services from manifest",
      "STATUS=api unreachable: ECONNREFUSED",
      "STOPPING=1",
    ]);
  });

  it("pings WATCHDOG=1 at half of WATCHDOG_USEC until disposed", async () => {
    const sock = join(dir, "watchdog.sock");
    receiver = await startReceiver(sock);
    process.env.NOTIFY_SOCKET = sock;
    process.env.WATCHDOG_USEC = "100000";
    process.env.WATCHDOG_PID = String(process.pid);
    const started = performance.now();
    {
      using _w = startWatchdog();
      await receiver.waitFor((m) => m.filter((x) => x === "WATCHDOG=1").length >= 4, "four watchdog pings");
    }
    const elapsed = performance.now() - started;
    expect(
      elapsed,
      "four pings (one at start, then every 50 ms) need at least 3 intervals",
    ).toBeGreaterThanOrEqual(140);
    const count = receiver.messages.length;
    const later = await startReceiver(join(dir, "after.sock"));
    process.env.NOTIFY_SOCKET = join(dir, "after.sock");
    sdNotify("STATUS=marker");
    await later.waitFor((m) => m.includes("STATUS=marker"), "marker after dispose");
    later.stop();
    expect(later.messages, "no watchdog ping after dispose").toEqual(["STATUS=marker"]);
    expect(receiver.messages.length, "old socket got nothing more").toBe(count);
  });

  it("does not ping for another process's WATCHDOG_PID", async () => {
    const sock = join(dir, "otherpid.sock");
    receiver = await startReceiver(sock);
    process.env.NOTIFY_SOCKET = sock;
    process.env.WATCHDOG_USEC = "20000";
    process.env.WATCHDOG_PID = String(process.pid + 1);
    {
      // An enabled watchdog pings synchronously at start, so the marker would follow a ping.
      using _w = startWatchdog();
    }
    sdNotify("STATUS=marker");
    await receiver.waitFor((m) => m.includes("STATUS=marker"), "marker");
    expect(receiver.messages, "no WATCHDOG=1 for another pid").toEqual(["STATUS=marker"]);
  });

  it("reports a failed send as false", () => {
    process.env.NOTIFY_SOCKET = join(dir, "nobody-bound.sock");
    expect(sdNotify("READY=1"), "nobody bound: ENOENT → false").toBe(false);
  });
});
