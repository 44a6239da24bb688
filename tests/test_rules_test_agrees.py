"""`expwatch rules test` and a live watcher decide the recorded logs alike: one Decider, two clocks.

Each recorded log in tests/data/logs is written into a launched run's log by
a real process paced by the lines' own timestamps; the watcher's audit trail
(incidents classified, actions planned) must equal what `rules test --json`
prints for the same log, rules and settings.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import fast_rules, wait_for
from expwatch.cli import main as cli
from stories import rules_test_story, watcher_story

HERE = Path(__file__).resolve().parent
LOGS = HERE / "data" / "logs"


@pytest.mark.parametrize("log", sorted(LOGS.glob("*.log")), ids=lambda p: p.stem)
def test_the_watcher_and_rules_test_give_the_same_incidents_guard_decisions_and_plans(experiments, log):
    rules = experiments.root / "expwatch.rules.yaml"
    rules.write_text(fast_rules(silent_s=600))
    expected = rules_test_story(rules, log)
    name = log.stem.replace("_", "-")
    out_log, state = experiments.root / f"{name}.log", experiments.root / f"{name}.state"
    watcher = experiments.start_watcher()
    assert cli(["launch", "--name", name, "--log", str(out_log), "--dir", str(experiments.root), "--",
                sys.executable, str(HERE / "log_replayer.py"), str(log), str(out_log), str(state)]) == 0
    total = sum(1 for line in log.open() if not line.startswith("#"))
    ended = expected and any(i["decision"] == "halt" for i in expected)
    wait_for(lambda: state.exists() and int(state.read_text() or 0) == total or (ended and experiments.manifest(name).halted),
             timeout=40, what="the whole log written (or the run halted)")
    # The last lines' incident settles, and its actions finish, before the stories are compared.
    wait_for(lambda: len(watcher_story(experiments, name)) >= len(expected) and
             len(experiments.audit(run=name, event="incident closed")) >= len(expected), timeout=30, what="every incident decided")
    experiments.stop_watcher(watcher)
    assert watcher_story(experiments, name) == expected
