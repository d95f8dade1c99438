/** Exit codes promised in DESIGN.md. */
export const EXIT_OK = 0;
export const EXIT_RUNTIME = 1;
export const EXIT_INPUT = 2;

/** A failure with an exit code and, optionally, a hint for the operator. */
export class KprError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_RUNTIME,
  ) {
    super(message);
    this.name = "KprError";
  }
}

/** One problem found in user input: where it is and what was expected. */
export interface InputProblem {
  /** file the problem is in (or "<stdin>", "<flags>") */
  file?: string;
  /** 1-based line, when known */
  line?: number;
  /** the object, e.g. "Service default/web" */
  object?: string;
  /** field path, e.g. "spec.ports[0].port" */
  field?: string;
  message: string;
}

/** Formats one input problem as `file:line: Service ns/name: field: message`. */
export function formatProblem(p: InputProblem): string {
  const where = p.file ? (p.line ? `${p.file}:${p.line}` : p.file) : "";
  return [where, p.object, p.field, p.message].filter((s) => s !== undefined && s !== "").join(": ");
}

/** Bad input (config, manifest, flags): exit 2, nothing was changed in the kernel. Carries every problem found. */
export class InputError extends KprError {
  constructor(readonly problems: InputProblem[]) {
    super(
      problems.length === 1
        ? formatProblem(problems[0]!)
        : `${problems.length} problems in the input:\n${problems.map((p) => `  - ${formatProblem(p)}`).join("\n")}`,
      EXIT_INPUT,
    );
    this.name = "InputError";
  }
}
