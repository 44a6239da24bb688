"""``expwatch [watch] DIR``: the babysitter itself, left running in tmux.

On a terminal it shows a live table of the runs with a feed of incidents
and actions; piped or under nohup it prints one greppable line per audit
record instead. Either way the audit log has the whole story.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Callable

from expwatch.audit.log import AuditLog
from expwatch.layout import ExperimentsLayout
from expwatch.respawn import RespawnPolicy, Respawner
from expwatch.rules.loader import RulesError
from expwatch.settings import SettingsError, load_settings

EXAMPLE = """examples:
  expwatch experiments/            # same as: expwatch watch experiments/
  expwatch watch experiments/ --dry-run
  nohup expwatch experiments/ > watch.log 2>&1 &    # one line per event, grep-able

exit codes: 0 stopped by Ctrl-C/SIGTERM, 2 bad directory, settings or rules, 3 DIR already watched
A watcher that dies abnormally (a signal, an uncaught error) is restarted, at most once per
watch.restart_backoff_s, and the restart is audited; --no-restart watches in this one process.
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
    p.add_argument("--no-restart", action="store_true",
                   help="watch in this process; do not restart the watcher if it dies abnormally (default: restart, "
                   "at most once per watch.restart_backoff_s)")
    p.set_defaults(func=run)


def console_line(text: str) -> None:
    print(f"{datetime.now():%H:%M:%S} {text}", flush=True)


def refuse(root: Path, error: str) -> int:
    """A watcher that cannot start says why on stderr and in the audit log (whose limits are then the shipped ones)."""
    shipped = load_settings(None)
    audit = AuditLog(ExperimentsLayout.at(root).audit_path, int(shipped.audit.max_bytes), int(shipped.audit.backups))
    try:
        audit.record("watcher refused to start", dir=str(ExperimentsLayout.at(root).root), error=error)
    finally:
        audit.close()
    print(f"expwatch: {error}", file=sys.stderr)
    return 2


def supervised(args: argparse.Namespace, root: Path) -> int:
    """This process only restarts the real watcher, a child running ``watch --no-restart``."""
    layout = ExperimentsLayout.at(root)
    try:
        settings = load_settings(layout)
        policy = RespawnPolicy(settings.watch.restart_backoff_s)
    except SettingsError as exc:
        return refuse(root, str(exc))

    def record(event: str, **fields: object) -> None:
        audit = AuditLog(layout.audit_path, int(settings.audit.max_bytes), int(settings.audit.backups))
        try:
            audit.record(event, dir=str(layout.root), **fields)
        finally:
            audit.close()
        console_line(f"{event}: " + " ".join(f"{k}={v}" for k, v in fields.items()))

    argv = [sys.executable, "-m", "expwatch", "watch", "--no-restart", str(root)]
    argv += ["--dry-run"] * args.dry_run + ["--plain"] * args.plain
    return Respawner(argv, policy, record).run()


def relay_signals(stop: Callable[[int], None]) -> None:
    """SIGINT/SIGTERM call ``stop(signum)`` on a thread of their own, never inside the signal handler.

    A handler runs in the main thread between two bytecodes, possibly while
    that thread holds the event queue's lock: putting the Shutdown event from
    there deadlocked a watcher now and then (a CI run's SIGTERM waited 20 s
    for nothing). The interpreter writes the signal's number to a wakeup pipe
    (async-signal-safe), and a small thread blocked on the pipe does the put.
    """
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(write_fd, False)  # set_wakeup_fd requires it; the reader blocks
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def relay() -> None:
        while True:
            for signum in os.read(read_fd, 64):
                if signum in (signal.SIGINT, signal.SIGTERM):
                    stop(signum)
                    return

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)  # a Python handler, so the wakeup fd is written and nothing else happens
    threading.Thread(target=relay, name="signals", daemon=True).start()


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        print(f"expwatch: {root} is not a directory", file=sys.stderr)
        return 2
    if not args.no_restart:
        return supervised(args, root)
    # Imported here, not at the top: every command's parser is built from this module, and
    # `expwatch status` on a lab's folder spent a tenth of its time importing the engine.
    from expwatch.actions.notifier import notifier_for
    from expwatch.display.live import LiveView, terminal_wanted
    from expwatch.display.plain import PlainLines
    from expwatch.engine.lock import AlreadyWatched
    from expwatch.engine.loop import EngineLoop
    from expwatch.watcher.events import Shutdown

    live = terminal_wanted(sys.stdout, args.plain)
    display: LiveView | PlainLines
    loop: EngineLoop
    if live:
        display = LiveView(str(root), lambda: loop.views())
    else:
        display = PlainLines(sys.stdout)
    try:
        loop = EngineLoop(root, dry_run=args.dry_run, console=display.console)
        loop.published.wanted = live
        if isinstance(display, PlainLines):
            display.gather_s = loop.settings.audit.console_gather_s
        notifier = notifier_for(loop.settings, str(loop.layout.root), lambda *a, **k: loop.audit.record(*a, **k))
    except SettingsError as exc:
        return refuse(root, str(exc))
    loop.audit_listeners.append(display.on_record)
    if notifier is not None:
        loop.audit_listeners.append(notifier.on_record)

    relay_signals(lambda signum: loop.events.put(Shutdown(signal.Signals(signum).name)))
    try:
        loop.claim()
    except AlreadyWatched as exc:
        if notifier is not None:
            notifier.close()
        print(f"expwatch: {exc}", file=sys.stderr)
        return 3
    console_line(f"watching {loop.layout.root} (audit log: {loop.layout.audit_path}); Ctrl-C to stop")
    display.start()
    try:
        loop.run()
    except RulesError as exc:
        error = str(exc)
    else:
        error = ""
    finally:
        display.stop()
        if notifier is not None:
            notifier.close()
    if error:
        return refuse(root, error)
    console_line(f"stopped; audit log: {loop.layout.audit_path}")
    return 0
