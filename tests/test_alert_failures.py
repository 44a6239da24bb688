"""Alerts are informational: a failing alert command is audited and the run goes on."""

from __future__ import annotations

import sys

import pytest

from conftest import fast_rules, wait_for
from expwatch.cli import main as cli

ALERT_RULES = """
  - name: ALERT_EXIT
    when: {log: {pattern: 'ALERT-EXIT'}}
    actions: [{alert: {argv: ['false']}}]
  - name: ALERT_MISSING
    when: {log: {pattern: 'ALERT-MISSING'}}
    actions: [{alert: {argv: ['/nonexistent/expwatch-alert']}}]
  - name: ALERT_NUL
    when: {log: {pattern: 'ALERT-NUL'}}
    actions: [{alert: {argv: ['true']}}]
"""


def launch_printing(experiments, name: str, line: str) -> None:
    script = f"import time; time.sleep(0.3); print({line!r}, flush=True); time.sleep(30)"
    assert cli(["launch", "--name", name, "--log", str(experiments.root / f"{name}.log"), "--dir", str(experiments.root),
                "--", sys.executable, "-c", script]) == 0


@pytest.mark.parametrize("name,line,error", [
    ("exits", "ALERT-EXIT", "exited 1"),
    ("missing", "ALERT-MISSING", "not found"),
    ("nul", "ALERT-NUL evidence with a \x00 byte", None),
])
def test_a_failing_alert_command_is_audited_and_never_halts_the_run(experiments, name, line, error):
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules() + ALERT_RULES)
    watcher = experiments.start_watcher()
    launch_printing(experiments, name, line)
    done = wait_for(lambda: [r for r in experiments.audit(run=name, event="incident closed")], what="alert incident closed")
    assert done[0]["outcome"] == "done"
    finished = experiments.audit(run=name, event="action finished")
    assert [r["action"] for r in finished] == ["alert"]
    if error:
        assert finished[0]["outcome"] == "alert command failed" and error in finished[0]["error"]
    else:
        assert finished[0]["outcome"] == "alerted"
    assert not experiments.audit(run=name, event="action failed")
    assert experiments.manifest(name).halted is None
    assert experiments.state(name) == "RUNNING"
    experiments.stop_watcher(watcher)
