"""``expwatch [watch] DIR``: the babysitter itself, left running in tmux."""

from __future__ import annotations

import argparse
import signal
import sys
from datetime import datetime
from pathlib import Path

from expwatch.rules.loader import RulesError
from expwatch.settings import SettingsError
from expwatch.supervisor import AlreadyWatched, Supervisor
from expwatch.watcher.events import Shutdown

EXAMPLE = """examples:
  expwatch experiments/            # same as: expwatch watch experiments/
  expwatch watch experiments/ --dry-run
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "watch",
        help="watch DIR's runs, decide by the rules, act (default command)",
        description="Watch every run recorded under DIR/.expwatch/runs until Ctrl-C or SIGTERM.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", nargs="?", default=".", help="experiments directory (default: .)")
    p.add_argument("--dry-run", action="store_true", help="record what every action would do, do nothing")
    p.set_defaults(func=run)


def console_line(text: str) -> None:
    print(f"{datetime.now():%H:%M:%S} {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        print(f"expwatch: {root} is not a directory", file=sys.stderr)
        return 2
    try:
        supervisor = Supervisor(root, dry_run=args.dry_run, console=console_line)
    except SettingsError as exc:
        print(f"expwatch: {exc}", file=sys.stderr)
        return 2

    def stop(signum: int, _frame: object) -> None:
        supervisor.events.put(Shutdown(signal.Signals(signum).name))

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    console_line(f"watching {supervisor.layout.root} (audit log: {supervisor.layout.audit_path}); Ctrl-C to stop")
    try:
        supervisor.run()
    except AlreadyWatched as exc:
        print(f"expwatch: {exc}", file=sys.stderr)
        return 3
    except RulesError as exc:
        print(f"expwatch: {exc}", file=sys.stderr)
        return 2
    console_line(f"stopped; audit log: {supervisor.layout.audit_path}")
    return 0
