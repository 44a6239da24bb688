"""``expwatch rules init|check|test``: edit, validate and try the rules file."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from expwatch.layout import ExperimentsLayout
from expwatch.display import provenance
from expwatch.rules.decide import DecisionPolicy
from expwatch.rules.loader import SHIPPED, RulesError, full_copy, load_rules, shipped_rules_text
from expwatch.rules.replay import Replay, explain_crash, replay
from expwatch.settings import SettingsError, load_settings, shipped_text
from expwatch.terminal import terminal_text
from expwatch.watcher.crash import CrashLimits


SCHEMA_NAME = "expwatch.rules.schema.json"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rules", help="init, check or test a rules file", description="Work with the YAML rules file.",
                       epilog="examples:\n  expwatch rules init experiments/\n  expwatch rules test experiments/expwatch.rules.yaml experiments/gpt4o.log",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    rs = p.add_subparsers(dest="rules_command", metavar="SUBCOMMAND", required=True)
    init = rs.add_parser("init", help="write a short override of the shipped rules next to the experiments",
                         epilog="examples:\n  expwatch rules init experiments/\n  expwatch rules init --full experiments/   # a complete copy that ignores the shipped rules",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    init.add_argument("dir", nargs="?", default=".")
    init.add_argument("--force", action="store_true", help="overwrite an existing rules file")
    init.add_argument("--full", action="store_true", help="write a complete copy with 'replace: true' (shipped fixes no longer reach it)")
    init.set_defaults(func=run_init)
    show = rs.add_parser("show", help="print the rules in force for a directory and where each field came from",
                         epilog="example:\n  expwatch rules show experiments/", formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("dir", nargs="?", default=".")
    show.set_defaults(func=run_show)
    check = rs.add_parser("check", help="validate a rules file (exit 0 valid, 2 invalid)",
                          epilog="example:\n  expwatch rules check experiments/expwatch.rules.yaml", formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("file", nargs="?", default="expwatch.rules.yaml")
    check.set_defaults(func=run_check)
    test = rs.add_parser("test", help="replay a log through the watcher's Decider: matches, incidents, guard, plan (acts on nothing)",
                         epilog="examples:\n  expwatch rules test experiments/expwatch.rules.yaml experiments/gpt4o.log\n"
                         "  expwatch rules test - crash.log --exit 1     # and the process then exited with status 1",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    test.add_argument("file", help="rules file ('-' for the shipped defaults); settings come from expwatch.yaml beside it")
    test.add_argument("log")
    test.add_argument("--exit", type=int, dest="exit_code", metavar="CODE", help="the process exited with CODE after the last line")
    test.add_argument("--signal", type=int, dest="exit_signal", metavar="N", help="the process was killed by signal N after the last line")
    test.add_argument("--json", action="store_true", help="print matches and incidents as JSON")
    test.set_defaults(func=run_test)
    schema = rs.add_parser("schema", help="print the JSON Schema of the rules file (for editors)",
                           epilog="example:\n  expwatch rules schema > experiments/expwatch.rules.schema.json", formatter_class=argparse.RawDescriptionHelpFormatter)
    schema.set_defaults(func=run_schema)


def _profiles(file: Path) -> set[str]:
    return set(load_settings(ExperimentsLayout.at(file.parent)).profiles)


def run_init(args: argparse.Namespace) -> int:
    layout = ExperimentsLayout.at(args.dir)
    target = layout.rules_path
    if target.exists() and not args.force:
        print(f"expwatch rules init: {target} exists (use --force to overwrite)", file=sys.stderr)
        return 2
    layout.root.mkdir(parents=True, exist_ok=True)
    schema = target.with_name(SCHEMA_NAME)
    schema.write_text(shipped_text("rules.schema.json"), encoding="utf-8")
    body = full_copy(shipped_rules_text()) if args.full else shipped_text("rules.local.yaml")
    target.write_text(f"# yaml-language-server: $schema=./{SCHEMA_NAME}\n" + body, encoding="utf-8")
    # Only its owner may write it whatever the umask, or the watcher would refuse it (expwatch/trust.py).
    target.chmod(0o644)
    kind = "a complete copy of the shipped rules (replace: true)" if args.full else "an override of the shipped rules"
    print(f"wrote {target}, {kind} (and {schema.name} for editors); a running watcher reloads it on save")
    return 0


def run_check(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        print(f"{path}: no such file", file=sys.stderr)
        return 2
    try:
        ruleset = load_rules(path, _profiles(path))
    except (RulesError, SettingsError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    counts = f"{len(ruleset.enabled)} enabled of {len(ruleset.rules)} rules"
    if provenance.overrides(ruleset):
        patched, added = provenance.changes(ruleset)
        counts += f"; over {SHIPPED}: patches {', '.join(patched) or 'none'}; adds {', '.join(added) or 'none'}"
    print(f"{path}: valid ({counts})")
    return 0


def run_show(args: argparse.Namespace) -> int:
    layout = ExperimentsLayout.at(args.dir)
    try:
        ruleset = load_rules(layout.rules_path, set(load_settings(layout).profiles))
    except RulesError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(provenance.render(ruleset, str(layout.root)))
    return 0


def run_test(args: argparse.Namespace) -> int:
    shipped = args.file == "-"
    if not shipped and not Path(args.file).exists():
        print(f"{args.file}: no such file ('-' replays the shipped rules)", file=sys.stderr)
        return 2
    settings = load_settings(None if shipped else ExperimentsLayout.at(Path(args.file).parent))
    try:
        ruleset = load_rules(None if shipped else Path(args.file), set(settings.profiles))
    except (RulesError, SettingsError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        with open(args.log, "rb") as fh:
            lines = [raw.decode("utf-8", "replace").rstrip("\r\n") for raw in fh]
    except OSError as exc:
        print(f"{args.log}: {exc.strerror}", file=sys.stderr)
        return 2
    result = replay(ruleset, lines, DecisionPolicy.from_settings(settings), args.exit_code, args.exit_signal,
                    CrashLimits.from_settings(settings.crash))
    text = json.dumps(replay_json(result), indent=2) if args.json else replay_text(result, args.log)
    print("\n".join(terminal_text(line) for line in text.splitlines()))
    return 0


def replay_json(result: Replay) -> dict:
    return {
        "lines": result.lines,
        "matches": [{"line": m.line_no, "rule": m.rule, "incident": m.incident, "suppressed": m.suppressed} for m in result.matches],
        "incidents": [{
            "incident": i.decision.incident, "rule": i.decision.rule.name, "candidates": list(i.decision.candidates),
            "decision": "act" if i.decision.act else "halt", "reason": i.decision.reason, "guard_streak": i.decision.streak,
            "plan": [s.to_json() for s in i.decision.plan], "lines": list(i.lines), "cause": i.decision.evidence.get("cause"),
        } for i in result.incidents],
        "survived": [{"incident": x.incident, "candidates": list(x.candidates), "cause": x.cause, "lines": list(x.lines)}
                     for x in result.survived],
        "ended": result.ended,
    }


def replay_text(result: Replay, log: str) -> str:
    out = []
    for m in result.matches:
        where = f"{log}:{m.line_no}" if m.line_no else f"{log}: at exit"
        note = f" (suppressed: {m.suppressed})" if m.suppressed else ""
        out.append(f"{where}: {m.rule} (priority {m.priority}) matched {m.why} [{m.incident}]{note}\n    {m.text[:200]}")
    for i in result.incidents:
        d = i.decision
        numbered = [n for n in i.lines if n]
        span = f"lines {numbered[0]}-{numbered[-1]}" if len(numbered) > 1 else f"line {numbered[0]}" if numbered else "at exit"
        guard = "informational (not guarded)" if d.informational else (
            f"act (streak {d.streak})" if d.act and d.streak is not None else "act (not counted: guarded: false)" if d.act else f"halt: {d.reason}")
        out.append(f"incident {d.incident} ({span}): candidates {', '.join(d.candidates)} -> winner {d.rule.name} "
                   f"(priority {d.rule.priority}); guard: {guard}; plan: {', '.join(str(s) for s in d.plan)}")
    for x in result.survived:
        out.append(f"incident {x.incident} (lines {', '.join(map(str, x.lines)) or '-'}): candidates {', '.join(x.candidates)} "
                   f"-> none: {x.cause} was caught (the process went on logging, and lived past crash.exit_wait_s or exited 0)")
    out.extend(explain_crash(log, report) for report in result.crashes)
    counts = Counter(m.rule for m in result.matches)
    summary = ", ".join(f"{rule} x{n}" for rule, n in counts.most_common()) or "no rule would fire"
    decided = ", ".join(i.decision.rule.name for i in result.incidents) or "none"
    out.append(f"{result.lines} lines, {len(result.matches)} matches: {summary}")
    out.append(f"{len(result.incidents)} incident(s): {decided}" + (f"; the run is then {result.ended}" if result.ended else ""))
    return "\n".join(out)


def run_schema(args: argparse.Namespace) -> int:
    print(shipped_text("rules.schema.json"), end="")
    return 0
