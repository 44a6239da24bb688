"""``expwatch rules init|check|test``: edit, validate and try the rules file."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from expwatch.layout import ExperimentsLayout
from expwatch.rules.loader import RulesError, load_rules, shipped_rules_text
from expwatch.rules.replay import replay
from expwatch.settings import load_settings, shipped_text


SCHEMA_NAME = "expwatch.rules.schema.json"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rules", help="init, check or test a rules file", description="Work with the YAML rules file.",
                       epilog="examples:\n  expwatch rules init experiments/\n  expwatch rules test experiments/expwatch.rules.yaml experiments/gpt4o.log",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    rs = p.add_subparsers(dest="rules_command", metavar="SUBCOMMAND", required=True)
    init = rs.add_parser("init", help="write an editable copy of the default rules next to the experiments",
                         epilog="example:\n  expwatch rules init experiments/", formatter_class=argparse.RawDescriptionHelpFormatter)
    init.add_argument("dir", nargs="?", default=".")
    init.add_argument("--force", action="store_true", help="overwrite an existing rules file")
    init.set_defaults(func=run_init)
    check = rs.add_parser("check", help="validate a rules file (exit 0 valid, 2 invalid)",
                          epilog="example:\n  expwatch rules check experiments/expwatch.rules.yaml", formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("file", nargs="?", default="expwatch.rules.yaml")
    check.set_defaults(func=run_check)
    test = rs.add_parser("test", help="replay a log through the rules and print what would fire (acts on nothing)",
                         epilog="example:\n  expwatch rules test experiments/expwatch.rules.yaml experiments/gpt4o.log", formatter_class=argparse.RawDescriptionHelpFormatter)
    test.add_argument("file", help="rules file ('-' for the shipped defaults)")
    test.add_argument("log")
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
    target.write_text(f"# yaml-language-server: $schema=./{SCHEMA_NAME}\n" + shipped_rules_text(), encoding="utf-8")
    # Only its owner may write it whatever the umask, or the watcher would refuse it (expwatch/trust.py).
    target.chmod(0o644)
    print(f"wrote {target} (and {schema.name} for editors); a running watcher reloads it on save")
    return 0


def run_check(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        print(f"{path}: no such file", file=sys.stderr)
        return 2
    try:
        ruleset = load_rules(path, _profiles(path))
    except RulesError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"{path}: valid ({len(ruleset.enabled)} enabled of {len(ruleset.rules)} rules)")
    return 0


def run_test(args: argparse.Namespace) -> int:
    try:
        ruleset = load_rules(None if args.file == "-" else Path(args.file), None if args.file == "-" else _profiles(Path(args.file)))
    except RulesError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        with open(args.log, "rb") as fh:
            lines = [raw.decode("utf-8", "replace").rstrip("\r\n") for raw in fh]
    except OSError as exc:
        print(f"{args.log}: {exc.strerror}", file=sys.stderr)
        return 2
    firings = replay(ruleset, lines)
    for f in firings:
        print(f"{args.log}:{f.line_no}: {f.rule} (priority {f.priority}) matched {f.why}\n    {f.text[:200]}")
    counts = Counter(f.rule for f in firings)
    summary = ", ".join(f"{rule} x{n}" for rule, n in counts.most_common()) or "no rule would fire"
    print(f"{len(lines)} lines, {len(firings)} matches: {summary}")
    print("(state rules such as DEAD, STALE and HIGH_NULL need a live run and are not replayed)")
    return 0


def run_schema(args: argparse.Namespace) -> int:
    print(shipped_text("rules.schema.json"), end="")
    return 0
