"""Replay a log through the rules without acting: the engine of ``rules test``.

It uses the same classifier, fact state and durable-rules engine as the
watcher, so what it prints is what the watcher would match. Time comes from
the line's own leading timestamp when it has one, so counting windows
behave as they did when the log was written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from expwatch.rules.classify import LineClassifier
from expwatch.rules.engine import RuleEngine
from expwatch.rules.facts import RunFacts
from expwatch.rules.model import RuleSet

TIMESTAMP = re.compile(r"^\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,6}))?")


@dataclass(frozen=True)
class Firing:
    line_no: int
    rule: str
    priority: int
    text: str
    why: str


def line_time(text: str, fallback: float) -> float:
    m = TIMESTAMP.match(text)
    if not m:
        return fallback
    frac = float(f"0.{m.group(3)}") if m.group(3) else 0.0
    return datetime.fromisoformat(f"{m.group(1)} {m.group(2)}").timestamp() + frac


def replay(ruleset: RuleSet, lines: Iterable[str], run: str = "replay") -> list[Firing]:
    """Every (line, rule) a live watcher would match on these lines."""
    classifier = LineClassifier(ruleset)
    engine = RuleEngine(ruleset)
    facts = RunFacts(ruleset, started_at=0.0, alive=True)
    firings = []
    clock = 0.0
    for number, text in enumerate(lines, start=1):
        clock = line_time(text, clock)
        keys = facts.on_line(classifier.classify(text), clock, replay=False)
        if not keys:
            continue
        for name in engine.evaluate(run, facts.snapshot(clock, keys)):
            rule = ruleset.by_name(name)
            hit = [a for a in rule.log_atoms if a.key in keys]
            if not hit:
                continue
            atom = hit[0]
            why = " | ".join(atom.patterns)
            if atom.window_s is not None:
                why += f" (>= {atom.min_count} within {atom.window_s:g}s)"
            firings.append(Firing(number, name, rule.priority, text, why))
    return firings
