"""The recorded-failure corpus: every text classified and decided as its header says.

Each file in tests/data/crashes/ (see tests/crash_cases.py for its header)
goes through the code the watcher uses: the crash assembler, the line
classifier and crash matcher, durable-rules, the incident's priority choice
and the retry-hint adjustment, then the process's exit as the header gives
it. tests/test_crash_corpus_live.py decides the same files on a live watcher.
"""

from __future__ import annotations

import pytest

from crash_cases import CASES, CrashCase, read_case
from expwatch.rules.decide import DecisionPolicy
from expwatch.rules.loader import load_rules
from expwatch.rules.replay import Replay, replay
from expwatch.settings import load_settings
from expwatch.watcher.crash import CrashLimits

SETTINGS = load_settings()
RULES = load_rules(None, set(SETTINGS.profiles))
POLICY = DecisionPolicy.from_settings(SETTINGS)
LIMITS = CrashLimits.from_settings(SETTINGS.crash)


def decide(case: CrashCase) -> Replay:
    """The log and its exit, decided by the watcher's own Decider (rules test's replay)."""
    return replay(RULES, case.lines, POLICY, case.exit_code, case.exit_signal, limits=LIMITS)


def test_the_corpus_is_large_and_wide_enough():
    cases = [read_case(p) for p in CASES]
    assert len(cases) >= 40
    libraries = {c.path.name.split("_")[0] for c in cases}
    assert len(libraries) >= 10, libraries
    assert sum(1 for c in cases if c.expect["rule"] == "COMPLETE") >= 5


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_recorded_failure_is_classified_and_decided_as_its_header_says(path):
    case = read_case(path)
    expect, result = case.expect, decide(case)
    assert result.incidents, f"nothing fired; crashes: {[c.crash.cause() for c in result.crashes]}"
    assert len(result.incidents) == 1, [i.decision.rule.name for i in result.incidents]
    decision = result.incidents[0].decision
    assert decision.rule.name == expect["rule"], list(decision.candidates)
    plan, evidence = [s.to_json() for s in decision.plan], decision.evidence
    assert [s["name"] for s in plan] == expect["plan"]
    if "wait_at_least_s" in expect:
        assert evidence["wait_at_least_s"] == pytest.approx(expect["wait_at_least_s"])
    if "halt_starts" in expect:
        assert plan[0]["arg"].startswith(expect["halt_starts"]), plan[0]["arg"]
        assert evidence["fix"] == plan[0]["arg"]
    if "cause" in expect:
        assert evidence["cause"].startswith(expect["cause"]), evidence["cause"]
