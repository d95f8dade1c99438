/**
 * systemd's notify protocol (sd_notify(3)): datagrams of newline-separated KEY=VALUE lines sent to
 * the unix datagram socket named by NOTIFY_SOCKET (a path, or an abstract name written "@name").
 * With `Type=notify` the unit is started once READY=1 arrives; with `WatchdogSec=` systemd
 * restarts kpr when WATCHDOG=1 stops coming. Without NOTIFY_SOCKET every call is a no-op.
 */
import { sendUnixDatagram } from "../datapath/ffi.ts";
import { log as rootLog } from "../log.ts";

const log = rootLog.withTag("notify");
const encoder = new TextEncoder();
let warned = false;

/**
 * Sends one notification (e.g. "READY=1\nSTATUS=…"). Returns false when NOTIFY_SOCKET is unset
 * or the send failed (logged once: a missing notify socket must not stop the agent).
 */
export function sdNotify(msg: string): boolean {
  const socket = process.env.NOTIFY_SOCKET;
  if (!socket) return false;
  try {
    sendUnixDatagram(socket, encoder.encode(msg));
    return true;
  } catch (e) {
    if (!warned) log.warn(`sd_notify: ${(e as Error).message} (NOTIFY_SOCKET=${socket})`);
    warned = true;
    return false;
  }
}

/** A STATUS= value on one line (systemctl status shows one line). */
function statusLine(s: string): string {
  return s.replace(/[\r\n]+/g, " ").trim();
}

/** READY=1 (after the first complete sync), with an optional STATUS= line. */
export function notifyReady(status?: string): boolean {
  return sdNotify(status === undefined ? "READY=1" : `READY=1\nSTATUS=${statusLine(status)}`);
}

/** STATUS=… (shown by `systemctl status kpr`). */
export function notifyStatus(s: string): boolean {
  return sdNotify(`STATUS=${statusLine(s)}`);
}

/** STOPPING=1 (on SIGTERM, before the agent exits; the datapath stays programmed). */
export function notifyStopping(): boolean {
  return sdNotify("STOPPING=1");
}

/**
 * The watchdog interval systemd asked for (WATCHDOG_USEC), in ms; undefined when there is none
 * or it is meant for another process (WATCHDOG_PID, as sd_watchdog_enabled(3) checks).
 */
export function watchdogIntervalMs(): number | undefined {
  const usec = Number(process.env.WATCHDOG_USEC ?? "");
  if (!Number.isFinite(usec) || usec <= 0) return undefined;
  const pid = process.env.WATCHDOG_PID;
  if (pid !== undefined && pid !== "" && Number(pid) !== process.pid) return undefined;
  return usec / 1000;
}

/**
 * Sends WATCHDOG=1 now and then every half of WATCHDOG_USEC (sd_watchdog_enabled(3)'s advice);
 * a no-op without WATCHDOG_USEC. The timer does not keep the process alive. Dispose to stop.
 */
export function startWatchdog(): Disposable {
  const interval = watchdogIntervalMs();
  if (interval === undefined || !process.env.NOTIFY_SOCKET) return { [Symbol.dispose]: () => {} };
  sdNotify("WATCHDOG=1");
  const timer = setInterval(() => sdNotify("WATCHDOG=1"), Math.max(1, Math.floor(interval / 2)));
  timer.unref();
  return { [Symbol.dispose]: () => clearInterval(timer) };
}
