"""``expwatch [watch] DIR``: the babysitter itself, left running in tmux.

On a terminal it shows a live table of the runs with a feed of incidents
and actions; piped or under nohup it prints one greppable line per audit
record instead. Either way the audit log has the whole story.
"""

from __future__ import annotations

import argparse
import signal
import sys
from datetime import datetime
from pathlib import Path

from expwatch.actions.notifier import notifier_for
from expwatch.display.live import LiveView, terminal_wanted
from expwatch.display.plain import PlainLines
from expwatch.rules.loader import RulesError
from expwatch.settings import SettingsError
from expwatch.engine.lock import AlreadyWatched
from expwatch.engine.loop import EngineLoop
from expwatch.watcher.events import Shutdown
from expwatch.terminal import terminal_text

EXAMPLE = """examples:
  expwatch experiments/            # same as: expwatch watch experiments/
  expwatch watch experiments/ --dry-run
  nohup expwatch experiments/ > watch.log 2>&1 &    # one line per event, grep-able

exit codes: 0 stopped by Ctrl-C/SIGTERM, 2 bad directory, settings or rules, 3 DIR already watched
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "watch",
        help="watch DIR's runs, decide by the rules, act (default command)",
        description="Watch every run recorded under DIR/.expwatch/runs until Ctrl-C or SIGTERM. On a terminal, "
        "show a live table; otherwise print one line per event.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", nargs="?", default=".", help="experiments directory (default: .)")
    p.add_argument("--dry-run", action="store_true", help="record what every action would do, do nothing")
    p.add_argument("--plain", action="store_true", help="one line per event even on a terminal (no live table)")
    p.set_defaults(func=run)


def console_line(text: str) -> None:
    print(terminal_text(f"{datetime.now():%H:%M:%S} {text}", keep_newlines=True), flush=True)


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        print(f"expwatch: {root} is not a directory", file=sys.stderr)
        return 2
    live = terminal_wanted(sys.stdout, args.plain)
    display: LiveView | PlainLines
    loop: EngineLoop
    if live:
        display = LiveView(str(root), lambda: loop.views())
    else:
        display = PlainLines(sys.stdout)
    try:
        loop = EngineLoop(root, dry_run=args.dry_run, console=display.console)
        notifier = notifier_for(loop.settings, str(loop.layout.root), lambda *a, **k: loop.audit.record(*a, **k))
    except SettingsError as exc:
        print(f"expwatch: {exc}", file=sys.stderr)
        return 2
    loop.audit_listeners.append(display.on_record)
    if notifier is not None:
        loop.audit_listeners.append(notifier.on_record)

    def stop(signum: int, _frame: object) -> None:
        loop.events.put(Shutdown(signal.Signals(signum).name))

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    console_line(f"watching {loop.layout.root} (audit log: {loop.layout.audit_path}); Ctrl-C to stop")
    display.start()
    try:
        loop.run()
    except AlreadyWatched as exc:
        error, code = str(exc), 3
    except RulesError as exc:
        error, code = str(exc), 2
    else:
        error, code = "", 0
    finally:
        display.stop()
        if notifier is not None:
            notifier.close()
    if error:
        print(f"expwatch: {error}", file=sys.stderr)
        return code
    console_line(f"stopped; audit log: {loop.layout.audit_path}")
    return 0
