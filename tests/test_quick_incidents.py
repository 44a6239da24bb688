"""An incident that only informs costs what it says, not a thread and a re-read (issue 16).

A plan of alerts without a command runs where it was decided, on the
engine's own thread; one with a command still gets a thread of its own, so
a slow command never holds up the other runs. The terminal bell an alert
rings is the display's, written with the alert's line. The watcher's own
files under .expwatch/ do not wake it, and reading a log does not journal
its access time. Each test drives the real executor, store and audit log,
real inotify, or a real watcher.
"""

from __future__ import annotations

import fcntl
import io
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import fast_rules, wait_for

from expwatch.actions.context import ActionContext
from expwatch.cli import main as cli
from expwatch.actions.executor import IncidentClosed, IncidentExecutor
from expwatch.audit.log import AuditLog
from expwatch.display.plain import PlainLines
from expwatch.layout import ExperimentsLayout
from expwatch.runners.registry import Runners
from expwatch.settings import load_settings
from expwatch.state import IncidentRow, StateStore
from expwatch.watcher.inotify import InotifyWatch
from expwatch.watcher.tail import LogTailer, open_for_reading

ALERT_RULE = """
  - name: PROBE_SEEN
    description: test rule; informational
    severity: info
    priority: 1
    when:
      log: {pattern: 'probe line'}
    actions: [{alert: seen}]
"""


def executor_for(root: Path, plan: list[dict]) -> tuple[IncidentExecutor, StateStore, IncidentRow, "queue.Queue[object]", list[str]]:
    layout = ExperimentsLayout.at(root)
    settings = load_settings(layout)
    store, audit, posted, threads = StateStore(layout.state_db), AuditLog(layout.audit_path), queue.Queue(), []

    def make_context(row: IncidentRow) -> ActionContext:
        threads.append(threading.current_thread().name)
        return ActionContext(layout=layout, settings=settings, runners=Runners(settings), audit=audit, run=row.run,
                             incident=row.id, rule=row.rule, evidence=row.context, stop=threading.Event(), console=lambda text: None)

    row = IncidentRow("i-quick", "r1", "PROBE_SEEN", "acting", plan, 0, False, {}, {})
    store.open_incident(row.id, row.run, row.rule, plan, {})
    return IncidentExecutor(store, audit, make_context, posted.put, dry_run=False), store, row, posted, threads


def test_an_alert_without_a_command_is_done_before_start_returns_on_the_calling_thread(tmp_path):
    executor, store, row, posted, threads = executor_for(tmp_path, [{"name": "alert", "arg": "seen"}])
    executor.start(row)
    assert threads == [threading.current_thread().name]
    assert posted.get_nowait() == IncidentClosed(run="r1", incident="i-quick", outcome="done")
    assert store.unfinished_incidents() == []


def test_an_alert_with_a_command_gets_a_thread_of_its_own_and_never_holds_up_the_caller(tmp_path):
    marker = tmp_path / "ran"
    command = [sys.executable, "-c", f"import time, pathlib; time.sleep(0.5); pathlib.Path({str(marker)!r}).touch()"]
    executor, store, row, posted, threads = executor_for(tmp_path, [{"name": "alert", "arg": {"message": "seen", "argv": command}}])
    started = time.monotonic()
    executor.start(row)
    assert time.monotonic() - started < 0.4 and not marker.exists()
    closed = posted.get(timeout=20)
    assert closed.outcome == "done" and marker.exists()
    assert threads == ["incident-i-quick"]


def test_the_bell_goes_with_an_alerts_line_and_not_with_a_dry_runs():
    out = io.StringIO()
    lines = PlainLines(out)
    lines.start()
    lines.on_record({"ts": "2026-12-02T10:00:00.000Z", "event": "action finished", "run": "r1", "action": "alert", "outcome": "alerted"})
    lines.on_record({"ts": "2026-12-02T10:00:01.000Z", "event": "action finished", "run": "r1", "action": "alert",
                     "outcome": "dry-run (nothing done)", "dry_run": True})
    lines.on_record({"ts": "2026-12-02T10:00:02.000Z", "event": "action finished", "run": "r1", "action": "kill", "outcome": "killed"})
    lines.stop()
    printed = out.getvalue().splitlines()
    assert [line.endswith("\a") for line in printed] == [True, False, False]
    assert all("\a" not in line[:-1] for line in printed)


def test_a_real_watchers_alert_rings_once_on_its_line_and_closes_its_incident(experiments):
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules() + ALERT_RULE)
    log = experiments.root / "hand.log"
    log.write_text("starting\n")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert cli(["adopt", "--pid", str(sleeper.pid), "--log", str(log), "--name", "hand", "--dir", str(experiments.root)]) == 0
        watcher = experiments.start_watcher()
        wait_for(lambda: experiments.audit(event="run discovered"), timeout=20, what="discovery")
        with open(log, "a") as fh:
            fh.write("a probe line\n")
        wait_for(lambda: experiments.audit(event="incident closed"), timeout=20, what="the alert's incident to close")
        out = experiments.stop_watcher(watcher)
    finally:
        sleeper.kill()
    bells = [line for line in out.splitlines() if "\a" in line]
    assert len(bells) == 1 and 'event="action finished"' in bells[0] and "action=alert" in bells[0]
    assert [r["outcome"] for r in experiments.audit(event="incident closed")] == ["done"]


def test_writes_under_the_watchers_own_folder_do_not_wake_it_but_new_manifests_do(tmp_path):
    home = tmp_path / ".expwatch"
    home.mkdir()
    (home / "audit.jsonl").write_text("")
    watch = InotifyWatch(frozenset({str(home)}))
    watch.schedule(tmp_path, recursive=True)
    try:
        with open(home / "audit.jsonl", "a") as fh:
            for _ in range(50):
                fh.write("{}\n")
                fh.flush()
        assert watch.take() == {}
        (home / "runs").mkdir()
        wait_for(lambda: watch.take() or True, timeout=1, what="the folder's event")
        (home / "runs" / "r1.json").write_text("{}")
        assert str(home / "runs" / "r1.json") in watch.take()
        with open(tmp_path / "r1.log", "a") as fh:
            fh.write("x\n")
        assert str(tmp_path / "r1.log") in watch.take()
    finally:
        watch.close()


def test_a_log_is_read_without_access_time_updates_by_its_owner_and_read_all_the_same_by_others(tmp_path):
    log = tmp_path / "own.log"
    log.write_text("one\n")
    fd = open_for_reading(log)
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NOATIME
    finally:
        os.close(fd)
    tailer = LogTailer(log)
    assert [line.text for line in tailer.read_new()] == ["one"]
    tailer.close()
    # Someone else's file: the kernel refuses O_NOATIME (EPERM) and the log is read as usual.
    script = (f"import sys; sys.path[:0] = {sys.path!r}\n"
              "from expwatch.watcher.tail import LogTailer\n"
              "print([line.text for line in LogTailer(sys.argv[1]).read_new()])\n")
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is not installed")
        os.chown(log, 65534, 65534)  # root without CAP_FOWNER is refused like anyone not the owner
        command = ["setpriv", "--bounding-set", "-fowner", sys.executable, "-c", script, str(log)]
    else:
        if os.stat("/etc/passwd").st_uid == os.geteuid():
            pytest.skip("no file here is someone else's")
        command = [sys.executable, "-c", script, "/etc/passwd"]
    child = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert child.returncode == 0, child.stderr
    assert child.stdout.startswith("['") and child.stdout.strip() != "[]"
