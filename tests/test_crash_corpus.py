"""The recorded-failure corpus: every text classified and decided as its header says.

Like fail2ban's ``# failJSON:`` sample logs, each file in tests/data/crashes/
says where its text comes from (``# source:``) and what it must give
(``# expect: {json}``): the incident's winning rule (null: nothing may fire),
the plan after the crash adjusted it, and optionally the retry wait, the
halt reason's start and the one-line cause. They all go through the code the
watcher uses: the crash assembler, the line classifier and crash matcher,
durable-rules, the incident's priority choice and the retry-hint adjustment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expwatch.rules.decide import Decision, DecisionPolicy
from expwatch.rules.loader import load_rules
from expwatch.rules.replay import Replay, replay
from expwatch.settings import load_settings
from expwatch.watcher.crash import CrashLimits

CORPUS = Path(__file__).parent / "data" / "crashes"
SETTINGS = load_settings()
RULES = load_rules(None, set(SETTINGS.profiles))
POLICY = DecisionPolicy.from_settings(SETTINGS)
LIMITS = CrashLimits.from_settings(SETTINGS.crash)


def read_case(path: Path) -> tuple[dict, list[str]]:
    header, lines = {}, []
    for raw in path.read_text().splitlines():
        if not lines and raw.startswith("# "):
            key, _, value = raw[2:].partition(": ")
            header[key] = value
        else:
            lines.append(raw)
    assert header.get("source"), f"{path.name}: no '# source:' line"
    return json.loads(header["expect"]), lines


def decide(lines: list[str]) -> tuple[Decision | None, Replay]:
    """The log's first incident, decided by the watcher's own Decider (rules test's replay)."""
    result = replay(RULES, lines, POLICY, limits=LIMITS)
    return (result.incidents[0].decision if result.incidents else None), result


CASES = sorted(CORPUS.glob("*.log"))


def test_the_corpus_is_large_and_wide_enough():
    sources = [read_case(p)[0] for p in CASES]
    assert len(CASES) >= 40
    libraries = {p.name.split("_")[0] for p in CASES}
    assert len(libraries) >= 10, libraries
    assert sum(1 for e in sources if e["rule"] is None) >= 5


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_recorded_failure_is_classified_and_decided_as_its_header_says(path: Path):
    expect, lines = read_case(path)
    decision, result = decide(lines)
    if expect["rule"] is None:
        assert decision is None, f"decided {decision.rule.name} from {list(decision.candidates)}"
        return
    assert decision is not None, f"nothing fired; crashes: {[c.crash.cause() for c in result.crashes]}"
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
