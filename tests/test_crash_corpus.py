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
import time
from pathlib import Path

import pytest

from expwatch.rules.incidents import Incident
from expwatch.rules.loader import load_rules
from expwatch.rules.replay import CrashReport, replay
from expwatch.rules.retry_hint import CrashPolicy, adjust
from expwatch.settings import load_settings

CORPUS = Path(__file__).parent / "data" / "crashes"
SETTINGS = load_settings()
RULES = load_rules(None, set(SETTINGS.profiles))
POLICY = CrashPolicy.from_settings(SETTINGS.get("crash"))


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


def decide(lines: list[str]) -> tuple[Incident | None, list[dict], dict, list[CrashReport]]:
    """One incident from everything the log fires, decided as the watcher decides it."""
    crashes: list[CrashReport] = []
    firings = replay(RULES, lines, crashes=crashes)
    by_crash = {(r.line_no, rule): r.crash for r in crashes for rule in r.fired}
    inc = Incident("i-corpus", "corpus", 0.0, 0.0)
    for n, firing in enumerate(firings):
        crash = by_crash.get((firing.line_no, firing.rule))
        evidence = {"line": firing.text, **({"crash": crash.to_json(), "cause": crash.cause()} if crash else {})}
        inc.add(RULES.by_name(firing.rule), evidence, float(n))
    if crashes and inc.crash is None:
        inc.crash = crashes[-1].crash.to_json()
    if not inc.candidates:
        return None, [], {}, crashes
    rule = inc.winner().rule
    plan = [{"name": a.name, "arg": a.arg} for a in rule.actions]
    plan, evidence = adjust(plan, inc.evidence(), POLICY, time.time())
    return inc, plan, evidence, crashes


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
    inc, plan, evidence, crashes = decide(lines)
    if expect["rule"] is None:
        assert inc is None, f"fired {[c.rule.name for c in inc.candidates]}"
        return
    assert inc is not None, f"nothing fired; crashes: {[c.crash.cause() for c in crashes]}"
    assert inc.winner().rule.name == expect["rule"], [c.rule.name for c in inc.candidates]
    assert [s["name"] for s in plan] == expect["plan"]
    if "wait_at_least_s" in expect:
        assert evidence["wait_at_least_s"] == pytest.approx(expect["wait_at_least_s"])
    if "halt_starts" in expect:
        assert plan[0]["arg"].startswith(expect["halt_starts"]), plan[0]["arg"]
        assert evidence["fix"] == plan[0]["arg"]
    if "cause" in expect:
        assert evidence["cause"].startswith(expect["cause"]), evidence["cause"]
