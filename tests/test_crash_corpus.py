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


def test_a_logged_exception_the_run_outlives_ends_undecided_and_a_hung_one_is_still_a_crash():
    """``logger.exception`` prints a whole traceback; what follows says whether it was caught (Decider.carried_on)."""
    case = read_case(next(p for p in CASES if p.stem == "healthy_logged_rate_limit_retried"))
    traceback, after = case.lines[:10], case.lines[10:]
    later = [f"2026-11-26 12:00:{s:02d},000 INFO eval: [{s}/500] item-{s:04d} correct=True" for s in range(1, 12)]
    lived_on = replay(RULES, [*traceback, *later], POLICY, limits=LIMITS)  # still writing 11 s on, past crash.exit_wait_s
    assert not lived_on.incidents and len(lived_on.survived) == 1
    assert lived_on.survived[0].cause.startswith("openai.RateLimitError 429 rpm_rate_limit_exceeded")
    assert lived_on.survived[0].candidates == ("TRACEBACK", "RATE_LIMIT")
    hung = replay(RULES, traceback, POLICY, limits=LIMITS)  # nothing after it, the process alive: a crash that hangs
    assert [i.decision.rule.name for i in hung.incidents] == ["RATE_LIMIT"] and not hung.survived
    failed = replay(RULES, [*traceback, *after[:1]], POLICY, exit_code=1, limits=LIMITS)  # wrote on, then exit 1
    assert [i.decision.rule.name for i in failed.incidents] == ["RATE_LIMIT"] and not failed.survived
    finished = replay(RULES, case.lines, POLICY, exit_code=0, limits=LIMITS)
    assert [i.decision.rule.name for i in finished.incidents] == ["COMPLETE"]  # the run is then over: nothing is left to settle
