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
from expwatch.rules.crashmatch import CrashMatcher, RuleExplanation
from expwatch.rules.engine import RuleEngine
from expwatch.rules.facts import RunFacts
from expwatch.rules.model import CrashAtom, RuleSet
from expwatch.watcher.crash import CrashAssembler
from expwatch.watcher.events import Crash

TIMESTAMP = re.compile(r"^\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,6}))?")


@dataclass(frozen=True)
class Firing:
    line_no: int
    rule: str
    priority: int
    text: str
    why: str


@dataclass(frozen=True)
class CrashReport:
    """One crash of the replayed log: where it ended, what it was, which rules it fired and why (not)."""

    line_no: int
    crash: Crash
    fired: tuple[str, ...]
    explanations: tuple[RuleExplanation, ...]


def explain_crash(source: str, report: CrashReport) -> str:
    """The parsed crash and, per rule with crash conditions, which held and which did not."""
    crash = report.crash
    lines = [f"{source}:{report.line_no}: crash: {crash.cause()}",
             f"    chain (outermost last): {' <- '.join(t for t, _ in reversed(crash.chain))}",
             f"    status {crash.status}, code {crash.error_code}, type {crash.error_type}, retry hint {crash.retry_after_s} s",
             f"    fires: {', '.join(report.fired) or 'no crash rule'}"]
    for rule in report.explanations:
        lines.append(f"    {rule.rule}: {'matched' if rule.rule in report.fired else 'not matched'}")
        lines.extend(f"      {v.line()}" for v in rule.verdicts)
    return "\n".join(lines)


def line_time(text: str, fallback: float) -> float:
    m = TIMESTAMP.match(text)
    if not m:
        return fallback
    frac = float(f"0.{m.group(3)}") if m.group(3) else 0.0
    return datetime.fromisoformat(f"{m.group(1)} {m.group(2)}").timestamp() + frac


def replay(ruleset: RuleSet, lines: Iterable[str], run: str = "replay", crashes: list[CrashReport] | None = None) -> list[Firing]:
    """Every (line, rule) a live watcher would match on these lines; crashes are reported into ``crashes``.

    The log ends as a dead run's does: its last open traceback is flushed
    (the watcher flushes at the process's exit) and judged with the process gone.
    """
    return _Replay(ruleset, run, crashes).run(lines)


class _Replay:
    def __init__(self, ruleset: RuleSet, run: str, crashes: list[CrashReport] | None):
        self.ruleset, self.run_name, self.crashes = ruleset, run, crashes
        self.classifier = LineClassifier(ruleset)
        self.matcher = CrashMatcher(ruleset)
        self.assembler = CrashAssembler()
        self.engine = RuleEngine(ruleset)
        self.facts = RunFacts(ruleset, started_at=0.0, alive=True)
        self.firings: list[Firing] = []
        self.clock = 0.0

    def run(self, lines: Iterable[str]) -> list[Firing]:
        for number, text in enumerate(lines, start=1):
            self.clock = line_time(text, self.clock)
            keys = self.facts.on_line(self.classifier.classify(text), self.clock, replay=False)
            if keys:
                self.fire(keys, number, text)
            for crash in self.assembler.feed(text, number):
                self.on_crash(crash)
        self.facts.alive = False
        for crash in self.assembler.flush():
            self.on_crash(crash)
        return self.firings

    def on_crash(self, crash: Crash) -> None:
        keys = self.matcher.satisfied(crash)
        before = len(self.firings)
        if keys:
            self.fire(keys, crash.end_offset, crash.lines[-1] if crash.lines else "", crash.cause())
        if self.crashes is not None:
            fired = tuple(f.rule for f in self.firings[before:])
            self.crashes.append(CrashReport(crash.end_offset, crash, fired, tuple(self.matcher.explain(crash))))

    def fire(self, keys: tuple[str, ...], number: int, text: str, cause: str = "") -> None:
        for name in self.engine.evaluate(self.run_name, self.facts.snapshot(self.clock, keys)):
            rule = self.ruleset.by_name(name)
            hit = [a for a in rule.trigger_atoms if a.key in keys]
            if not hit:
                continue
            atom = hit[0]
            if isinstance(atom, CrashAtom):
                why = f"crash {atom.field} {list(atom.values)[:4]}: {cause}"
            else:
                why = " | ".join(atom.patterns)
                if atom.window_s is not None:
                    why += f" (>= {atom.min_count} within {atom.window_s:g}s)"
            self.firings.append(Firing(number, name, rule.priority, text, why))
