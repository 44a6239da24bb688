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


def test_a_nul_byte_from_log_text_in_a_halt_reason_still_reaches_the_notify_command(tmp_path):
    from expwatch.actions.notifier import Notifier, NotifyConfig

    records: list[dict] = []
    out = tmp_path / "message"
    script = "import os, sys; open(sys.argv[1], 'w').write(os.environ['EXPWATCH_REASON'] + '|' + sys.argv[2])"
    notifier = Notifier(NotifyConfig((sys.executable, "-c", script, str(out), "{reason}"), True, True, frozenset(), 10),
                        str(tmp_path), lambda event, **fields: records.append({"event": event, **fields}))
    notifier.on_record({"event": "action failed", "run": "r", "rule": "X", "incident": "i-1", "action": "exec", "error": "bad\x00byte"})
    notifier.on_record({"event": "incident closed", "run": "r", "rule": "X", "incident": "i-1", "outcome": "halted"})
    assert notifier.drain(10)
    notifier.close()
    assert records[-1]["event"] == "notify sent", records
    assert out.read_text() == "action exec failed: bad\\0byte|action exec failed: bad\\0byte"
