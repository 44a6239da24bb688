"""Deleting or breaking one run's files never takes the watcher (or its other runs) down."""

from __future__ import annotations

import os
import shutil
import signal
import sys

import psutil

from conftest import fast_rules, wait_for
from fleet import ts_seconds
from expwatch.cli import main as cli


def test_deleting_a_watched_runs_manifest_loses_that_run_and_the_watcher_keeps_serving_the_other(experiments):
    experiments.launch("r1", items=400, delay=0.05)
    experiments.launch("r2", items=400, delay=0.05)
    watcher = experiments.start_watcher()
    wait_for(lambda: len(experiments.audit(event="run discovered")) == 2, what="both runs discovered")
    experiments.layout.manifest_path("r1").unlink()
    wait_for(lambda: experiments.audit(run="r1", event="run lost") or watcher.poll() is not None, what="r1 lost")
    assert watcher.poll() is None, experiments.stop_watcher(watcher)
    experiments.layout.manifest_path("r2").unlink()
    wait_for(lambda: experiments.audit(run="r2", event="run lost") or watcher.poll() is not None, what="r2 lost")
    assert watcher.poll() is None, experiments.stop_watcher(watcher)
    out = experiments.stop_watcher(watcher)
    assert watcher.returncode == 0, out
    assert experiments.audit(event="watcher stopped")


def test_removing_the_whole_expwatch_folder_under_a_running_watcher_does_not_kill_it(experiments):
    experiments.launch("r1", items=400, delay=0.05)
    experiments.launch("r2", items=400, delay=0.05)
    watcher = experiments.start_watcher()
    wait_for(lambda: len(experiments.audit(event="run discovered")) == 2, what="both runs discovered")
    # Moved aside first: the watcher recreates its audit log at once, which would race a plain rmtree.
    gone = experiments.root / "gone"
    experiments.layout.home.rename(gone)
    shutil.rmtree(gone)
    wait_for(lambda: watcher.poll() is not None or experiments.layout.audit_path.exists()
             and experiments.audit(event="run lost"), timeout=10, what="runs lost after rm -rf")
    assert watcher.poll() is None, experiments.stop_watcher(watcher)
    experiments.stop_watcher(watcher, signal.SIGTERM)
    assert watcher.returncode == 0


def launch_command(experiments, name: str, *command: str) -> None:
    """A run whose command is anything, launched through the CLI like a user would."""
    log = experiments.root / f"{name}.log"
    assert cli(["launch", "--name", name, "--log", str(log), "--dir", str(experiments.root), "--", *command]) == 0


def test_a_rule_engine_failure_for_one_run_is_audited_and_the_other_run_is_still_served(experiments):
    # One line matching 300 rules at once makes a fact wider than durable-rules accepts, for this run only.
    wide = "".join(f"\n  - name: WIDE{i}\n    when: {{log: {{pattern: 'WIDE'}}}}\n    actions: [{{alert: w}}]" for i in range(300))
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules() + wide + "\n")
    watcher = experiments.start_watcher()
    launch_command(experiments, "wide", sys.executable, "-c", "import time; time.sleep(0.5); print('WIDE', flush=True); time.sleep(30)")
    experiments.launch("healthy", items=6)
    wait_for(lambda: experiments.audit(run="wide", event="rule engine error") or watcher.poll() is not None, what="engine error audited")
    assert watcher.poll() is None, experiments.stop_watcher(watcher)
    error = experiments.audit(run="wide", event="rule engine error")[0]
    assert "255" in error["error"]
    wait_for(lambda: experiments.manifest("healthy").completed_at, what="healthy run completed")
    experiments.stop_watcher(watcher)
    assert len(experiments.audit(run="wide", event="rule engine error")) == 1  # once, not once per evaluation


def watcher_pids(experiments) -> list[int]:
    return [r["pid"] for r in experiments.audit(event="watcher started")]


def test_a_watcher_that_dies_by_a_signal_is_restarted_once_per_backoff_window_and_audited(experiments):
    settings = experiments.root / "expwatch.yaml"
    settings.write_text(settings.read_text().replace("safety_poll_s: 1.0}", "safety_poll_s: 1.0, restart_backoff_s: 3}"))
    assert "restart_backoff_s: 3" in settings.read_text()
    experiments.launch("r1", items=300, delay=0.05)
    watcher = experiments.start_watcher(supervised=True)
    first = watcher_pids(experiments)[0]
    assert first != watcher.pid  # the watcher is the supervising parent's child
    os.kill(first, signal.SIGSEGV)
    wait_for(lambda: len(watcher_pids(experiments)) == 2, what="the watcher restarted")
    died = experiments.audit(event="watcher died")[0]
    assert (died["pid"], died["signal"], died["restart_in_s"]) == (first, "SIGSEGV", 0)
    restarted = experiments.audit(event="watcher restarted")[0]
    assert restarted["previous_pid"] == first
    # A second death inside the window waits for the window's end.
    second = watcher_pids(experiments)[1]
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: experiments.audit(event="watcher died")[1:], what="second death audited")
    assert experiments.audit(event="watcher died")[1]["restart_in_s"] > 1.5
    wait_for(lambda: len(watcher_pids(experiments)) == 3, timeout=10, what="the second restart")
    # Timed by the supervisor's own records: a child's "watcher started" also waits for its start-up,
    # which varies with the machine's load (a slow first restart made the window look 0.2 s short).
    restarts = [ts_seconds(r["ts"]) for r in experiments.audit(event="watcher restarted")]
    assert len(restarts) == 2 and restarts[1] - restarts[0] >= 2.95
    experiments.launch("after", items=6)
    wait_for(lambda: experiments.manifest("after").completed_at, what="a run launched after the restarts to complete")
    experiments.stop_watcher(watcher)
    assert watcher.returncode == 0
    assert not psutil.pid_exists(watcher_pids(experiments)[2])


def test_killing_the_supervising_parent_with_sigkill_kills_its_watcher_too(experiments):
    watcher = experiments.start_watcher(supervised=True)
    child = watcher_pids(experiments)[0]
    experiments.stop_watcher(watcher, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie", what="the watcher gone")
