"""``expwatch completion bash|zsh``: a shell completion script generated from the argparse tree.

The script is built from the same parser ``expwatch`` runs with, so a new
command or option completes as soon as it exists; nothing is maintained by
hand. Values complete as directories for DIR-like arguments, as files
otherwise, and from ``choices`` where the parser has them.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

EXAMPLE = """examples:
  source <(expwatch completion bash)                 # now; add the line to ~/.bashrc to keep it
  expwatch completion zsh > "${fpath[1]}/_expwatch"  # zsh, then restart the shell (or: source <(expwatch completion zsh))

exit codes: 0 script printed, 2 unknown shell
"""


# What a value is, guessed from its name: completing file names for --expected would only get in the way.
DIR_WORDS = ("dir",)
FILE_WORDS = ("log", "result", "checkpoint", "output", "out", "settings", "criteria", "layer", "file", "baseline",
              "rerun", "candidate", "current", "json", "yaml")


@dataclass
class OptionSpec:
    flags: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...] = ()
    kind: str = "none"  # dir | file | choice | none


@dataclass
class PositionalSpec:
    name: str
    choices: tuple[str, ...] = ()
    kind: str = "none"
    many: bool = False
    command: bool = False  # everything after it is another command line (launch -- CMD ...)


@dataclass
class CommandSpec:
    path: tuple[str, ...]
    help: str = ""
    options: list[OptionSpec] = field(default_factory=list)
    positionals: list[PositionalSpec] = field(default_factory=list)
    subcommands: list["CommandSpec"] = field(default_factory=list)

    def walk(self):
        yield self
        for sub in self.subcommands:
            yield from sub.walk()


def _help(text: str | None) -> str:
    return " ".join((text or "").replace("%%", "%").split()) if text != argparse.SUPPRESS else ""


def value_kind(action: argparse.Action) -> str:
    if action.choices:
        return "choice"
    words = re.split(r"[^a-z]+", f"{action.dest} {action.metavar or ''}".lower())
    if any(w in DIR_WORDS for w in words):
        return "dir"
    return "file" if any(w in FILE_WORDS for w in words) else "none"


def command_tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = (), help_text: str = "") -> CommandSpec:
    spec = CommandSpec(path, help_text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: _help(a.help) for a in action._choices_actions}
            for name, sub in action.choices.items():
                spec.subcommands.append(command_tree(sub, (*path, name), helps.get(name, "")))
        elif action.option_strings:
            choices = tuple(str(c) for c in action.choices) if action.choices else ()
            spec.options.append(OptionSpec(tuple(action.option_strings), _help(action.help), action.nargs != 0, choices, value_kind(action)))
        else:
            choices = tuple(str(c) for c in action.choices) if action.choices else ()
            spec.positionals.append(PositionalSpec(
                str(action.metavar or action.dest), choices, value_kind(action),
                many=action.nargs in ("*", "+", argparse.REMAINDER), command=action.nargs == argparse.REMAINDER,
            ))
    return spec


# ----- bash ---------------------------------------------------------------------------

def _words(items: list[str]) -> str:
    return " ".join(items)


def bash_script(tree: CommandSpec) -> str:
    walk_cases, value_cases, word_cases = [], [], []
    for cmd in tree.walk():
        key = " ".join(cmd.path)
        for sub in cmd.subcommands:
            walk_cases.append(f'            "{key}|{sub.path[-1]}") path="{" ".join(sub.path)}" ;;')
        valued = [f'"{key}|{flag}"' for opt in cmd.options if opt.takes_value for flag in opt.flags]
        if valued:
            walk_cases.append(f"            {'|'.join(valued)}) skip=1 ;;")
        for opt in cmd.options:
            if not opt.takes_value:
                continue
            pattern = "|".join(f'"{key}|{flag}"' for flag in opt.flags)
            action = {
                "choice": f'COMPREPLY=($(compgen -W "{_words(list(opt.choices))}" -- "$cur"))',
                "dir": 'COMPREPLY=($(compgen -d -- "$cur"))',
                "file": 'COMPREPLY=($(compgen -f -- "$cur"))',
                "none": "compopt +o default +o bashdefault 2>/dev/null; COMPREPLY=()",
            }[opt.kind]
            value_cases.append(f"        {pattern}) {action}; return ;;")
        options = [flag for opt in cmd.options for flag in opt.flags]
        first = cmd.positionals[0].choices if cmd.positionals else ()
        nouns = [s.path[-1] for s in cmd.subcommands] + list(first)
        word_cases.append(f'        "{key}") options="{_words(options)}"; nouns="{_words(nouns)}" ;;')
    return f"""# bash completion for expwatch, generated by `expwatch completion bash`.
# Use it with:  source <(expwatch completion bash)   (e.g. in ~/.bashrc)
_expwatch() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local path="" word skip=0 i options="" nouns=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if ((skip)); then skip=0; continue; fi
        if [[ "$word" == "--" ]]; then return 0; fi  # a command line follows: default completion
        case "$path|$word" in
{chr(10).join(walk_cases)}
        esac
    done
    case "$path|$prev" in
{chr(10).join(value_cases)}
    esac
    case "$path" in
{chr(10).join(word_cases)}
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$options" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$nouns" -- "$cur"))
    fi
    return 0
}}
complete -o default -o bashdefault -F _expwatch expwatch
"""


# ----- zsh ----------------------------------------------------------------------------

def _zq(text: str) -> str:
    """A zsh single-quoted word."""
    return "'" + text.replace("'", "'\\''") + "'"


def _zdesc(text: str) -> str:
    return re.sub(r"([\[\]:\\])", r"\\\1", text)


def _zfunc(path: tuple[str, ...]) -> str:
    return "_expwatch" + "".join("_" + re.sub(r"\W", "_", p) for p in path)


def _zvalue(name: str, choices: tuple[str, ...], kind: str) -> str:
    action = {"choice": f"({' '.join(choices)})", "dir": "_files -/", "file": "_files", "none": " "}[kind]
    return f"{_zdesc(name)}:{action}"


def zsh_function(cmd: CommandSpec) -> str:
    specs = []
    for opt in cmd.options:
        for flag in opt.flags:
            spec = f"{flag}{'=' if opt.takes_value and flag.startswith('--') else ''}[{_zdesc(opt.help)}]"
            if opt.takes_value:
                spec += ":" + _zvalue(flag.lstrip("-"), opt.choices, opt.kind)
            specs.append(_zq(spec))
    body = []
    if cmd.subcommands:
        items = " ".join(_zq(f"{_zdesc(s.path[-1])}:{s.help}") for s in cmd.subcommands)
        specs += [_zq("1: :->command"), _zq("*:: :->args")]
        what = f"expwatch {' '.join(cmd.path)} command".replace("  ", " ")
        extra = "\n            _files -/" if not cmd.path else ""  # `expwatch DIR` means `expwatch watch DIR`
        cases = "\n".join(f"                {s.path[-1]}) {_zfunc(s.path)} ;;" for s in cmd.subcommands)
        body = [
            "    local curcontext=\"$curcontext\" state line",
            "    local -a commands",
            f"    commands=({items})",
            f"    _arguments -C {' '.join(specs)} && return",
            "    case $state in",
            f"        command)\n            _describe -t commands {_zq(what)} commands{extra}\n            ;;",
            "        args)\n            case $words[1] in",
            cases,
            "            esac\n            ;;",
            "    esac",
        ]
    else:
        for index, pos in enumerate(cmd.positionals, 1):
            if pos.command:
                specs.append(_zq("*::command:_normal"))
            elif pos.many:
                specs.append(_zq("*:" + _zvalue(pos.name, pos.choices, pos.kind)))
            else:
                specs.append(_zq(f"{index}:" + _zvalue(pos.name, pos.choices, pos.kind)))
        body = [f"    _arguments -s {' '.join(specs)}"]
    return f"{_zfunc(cmd.path)}() {{\n" + "\n".join(body) + "\n}\n"


def zsh_script(tree: CommandSpec) -> str:
    functions = "\n".join(zsh_function(cmd) for cmd in tree.walk())
    return f"""#compdef expwatch
# zsh completion for expwatch, generated by `expwatch completion zsh`.
# Either save it as _expwatch in a directory of $fpath, or (after compinit):  source <(expwatch completion zsh)

{functions}
if [ "$funcstack[1]" = "_expwatch" ]; then
    _expwatch "$@"
else
    compdef _expwatch expwatch
fi
"""


SCRIPTS = {"bash": bash_script, "zsh": zsh_script}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "completion",
        help="print a bash or zsh completion script",
        description="Print a shell completion script for expwatch's commands, subcommands and options.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shell", choices=sorted(SCRIPTS), help="the shell to complete in")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from expwatch.cli import build_parser  # the whole tree, this command included

    print(SCRIPTS[args.shell](command_tree(build_parser())), end="")
    return 0
