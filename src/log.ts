import { type ConsolaInstance, createConsola, LogLevels } from "consola";

/** Log level names accepted in KPR_LOG_LEVEL / config. */
export type LogLevelName = "silent" | "error" | "warn" | "info" | "debug" | "trace";

function levelFromEnv(): number {
  const name = (process.env.KPR_LOG_LEVEL ?? "info").toLowerCase();
  const lv = (LogLevels as Record<string, number>)[name];
  return lv ?? LogLevels.info;
}

const jsonLines =
  process.env.KPR_LOG_FORMAT === "json" || (!process.stderr.isTTY && process.env.KPR_LOG_FORMAT !== "text");

/** Whether ANSI colour may be written to `stream`: only to a terminal, never with NO_COLOR set. */
export function colorEnabled(stream: { isTTY?: boolean } = process.stderr): boolean {
  const nc = process.env.NO_COLOR;
  return !!stream.isTTY && (nc === undefined || nc === "") && process.env.TERM !== "dumb";
}

/**
 * The one logger. Writes to stderr (stdout is for command output); JSON lines when stderr is not
 * a TTY (or KPR_LOG_FORMAT=json), unless KPR_LOG_FORMAT=text; colour only on a terminal without NO_COLOR. Use `log.withTag("subsystem")`.
 */
export const log: ConsolaInstance = createConsola({
  level: levelFromEnv(),
  stdout: process.stderr,
  stderr: process.stderr,
  formatOptions: { colors: colorEnabled(process.stderr) },
  ...(jsonLines
    ? {
        reporters: [
          {
            log(obj) {
              const msg = obj.args
                .map((a) => (a instanceof Error ? a.message : typeof a === "string" ? a : JSON.stringify(a)))
                .join(" ");
              process.stderr.write(
                `${JSON.stringify({ time: obj.date.toISOString(), level: obj.type, tag: obj.tag || undefined, msg })}\n`,
              );
            },
          },
        ],
      }
    : {}),
});

/** Sets the level by name (from config or a flag). */
export function setLogLevel(name: LogLevelName): void {
  log.level = (LogLevels as Record<string, number>)[name] ?? LogLevels.info;
}
