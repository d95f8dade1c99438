import { type ArgsDef, type CommandDef, defineCommand } from "citty";
import { UsageError } from "./_common.ts";

/** One command of the tree as completion scripts need it. */
export interface CompletionNode {
  path: string[];
  subcommands: string[];
  flags: { long: string; short?: string; values?: string[]; takesValue: boolean; description: string }[];
}

async function resolve<T>(v: unknown): Promise<T> {
  return (typeof v === "function" ? await (v as () => unknown)() : await v) as T;
}

/** Every command under `root` with its subcommands and flags, depth first. */
export async function commandTree(root: CommandDef, path: string[] = []): Promise<CompletionNode[]> {
  const subs = (await resolve<Record<string, unknown> | undefined>(root.subCommands)) ?? {};
  const args = (await resolve<ArgsDef | undefined>(root.args)) ?? {};
  const flags: CompletionNode["flags"] = Object.entries(args)
    .filter(([, d]) => d.type !== "positional")
    .map(([k, d]) => {
      const alias = (d as { alias?: string | string[] }).alias;
      const short = (Array.isArray(alias) ? alias : alias ? [alias] : []).find((a) => a.length === 1);
      const values = (d as { options?: string[] }).options;
      return {
        long: k,
        ...(short ? { short } : {}),
        ...(values ? { values } : {}),
        takesValue: d.type === "string" || d.type === "enum",
        description: d.description ?? "",
      };
    });
  flags.push({ long: "help", short: "h", takesValue: false, description: "Show help" });
  const out: CompletionNode[] = [{ path, subcommands: Object.keys(subs), flags }];
  for (const [name, sub] of Object.entries(subs))
    out.push(...(await commandTree(await resolve<CommandDef>(sub), [...path, name])));
  return out;
}

const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;

/** A bash completion script for the tree (complete -F). */
export function bashScript(nodes: CompletionNode[]): string {
  const cases = nodes.map((n) => {
    const words = [
      ...n.subcommands,
      ...n.flags.flatMap((f) => [`--${f.long}`, ...(f.short ? [`-${f.short}`] : [])]),
    ];
    const valueCases = n.flags
      .filter((f) => f.takesValue)
      .map((f) => {
        const pat = [`--${f.long}`, ...(f.short ? [`-${f.short}`] : [])].join("|");
        const action = f.values
          ? `COMPREPLY=($(compgen -W ${q(f.values.join(" "))} -- "$cur"))`
          : `COMPREPLY=($(compgen -f -- "$cur"))`;
        return `        ${pat}) ${action}; return;;`;
      });
    return `    ${q(n.path.join(" "))})\n      case "$prev" in\n${valueCases.join("\n")}\n      esac\n      COMPREPLY=($(compgen -W ${q(words.join(" "))} -- "$cur"));;`;
  });
  return `# bash completion for kpr; source <(kpr completion bash)
_kpr() {
  local cur prev path="" i w
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    case "$w" in -*) break;; esac
    case " $(_kpr_subs "$path") " in *" $w "*) path="\${path:+$path }$w";; *) break;; esac
  done
  case "$path" in
${cases.join("\n")}
  esac
}
_kpr_subs() {
  case "$1" in
${nodes.map((n) => `    ${q(n.path.join(" "))}) echo ${q(n.subcommands.join(" "))};;`).join("\n")}
  esac
}
complete -F _kpr kpr
`;
}

/** A zsh completion script (bash-compatible through bashcompinit, plus a #compdef header). */
export function zshScript(nodes: CompletionNode[]): string {
  return `#compdef kpr
autoload -U +X bashcompinit && bashcompinit
${bashScript(nodes).replace(/^# bash completion.*\n/, "")}`;
}

/** A fish completion script. */
export function fishScript(nodes: CompletionNode[]): string {
  const lines = ["# fish completion for kpr; kpr completion fish | source", "complete -c kpr -f"];
  for (const n of nodes) {
    const cond =
      n.path.length === 0
        ? "__fish_use_subcommand"
        : `__fish_seen_subcommand_from ${n.path.at(-1)}${n.path.length > 1 ? `; and __fish_seen_subcommand_from ${n.path.at(-2)}` : ""}`;
    for (const s of n.subcommands) lines.push(`complete -c kpr -n ${q(cond)} -a ${q(s)}`);
    if (n.subcommands.length > 0) continue;
    for (const f of n.flags) {
      let l = `complete -c kpr -n ${q(cond)} -l ${f.long}`;
      if (f.short) l += ` -s ${f.short}`;
      if (f.takesValue) l += f.values ? ` -x -a ${q(f.values.join(" "))}` : " -r -F";
      if (f.description) l += ` -d ${q(f.description)}`;
      lines.push(l);
    }
  }
  return `${lines.join("\n")}\n`;
}

/** `kpr completion bash|zsh|fish`: a shell completion script, generated from the command tree. */
export default defineCommand({
  meta: { name: "completion", description: "Print a shell completion script (bash, zsh or fish)" },
  args: { shell: { type: "positional", description: "bash, zsh or fish", required: true } },
  async run({ args }) {
    const shell = String(args.shell);
    const gen = { bash: bashScript, zsh: zshScript, fish: fishScript }[shell];
    if (!gen)
      throw new UsageError(`kpr completion: unknown shell "${shell}" (one of: bash, zsh, fish)`, [
        "completion",
      ]);
    const { main } = await import("./_root.ts");
    process.stdout.write(gen(await commandTree(main as CommandDef)));
    return 0;
  },
});
