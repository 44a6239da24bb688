"""Replay a log through the Decider without acting: the engine of ``rules test``.

It drives the very Decider the watcher's engine loop uses (same classifier,
fact state, durable-rules engine, settle window, priority winner, guard and
plan), so what it prints is what the watcher would decide. Time comes from
each line's own leading timestamp when it has one (a line without one
shares the last time seen), so counting and settle windows behave as they
did when the log was written. Effects are simulated the way the watcher
would see them: a plan that restarts gives a new process (its counting
windows start over, the restart counts toward the budget), a halt or a
completion ends the replay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from expwatch.rules.decide import Decider, Decision, DecisionPolicy, Match, Outcome, RunDecisions
from expwatch.rules.facts import RunFacts
from expwatch.rules.model import LogAtom, Rule, RuleSet

TIMESTAMP = re.compile(r"^\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,6}))?")
RUN = "replay"


@dataclass(frozen=True)
class ReplayedMatch:
    line_no: int  # 0: not a line's match (the simulated process exit)
    rule: str
    priority: int
    text: str
    why: str
    incident: str
    suppressed: str | None = None


@dataclass(frozen=True)
class ReplayedIncident:
    decision: Decision
    lines: tuple[int, ...]  # line numbers of its candidates' matches
    decided_at: float


@dataclass(frozen=True)
class Replay:
    lines: int
    matches: tuple[ReplayedMatch, ...]
    incidents: tuple[ReplayedIncident, ...]
    ended: str | None = None  # "halted" / "completed" when a decision ended the run


def line_time(text: str, fallback: float) -> float:
    m = TIMESTAMP.match(text)
    if not m:
        return fallback
    frac = float(f"0.{m.group(3)}") if m.group(3) else 0.0
    try:
        return datetime.fromisoformat(f"{m.group(1)} {m.group(2)}").timestamp() + frac
    except ValueError:
        return fallback


def why(rule: Rule, keys: tuple[str, ...]) -> str:
    hit = [a for a in rule.log_atoms if a.key in keys]
    if not hit:
        return "state: " + rule.description.split(".")[0] if rule.description else "state condition"
    atom: LogAtom = hit[0]
    text = " | ".join(atom.patterns)
    if atom.window_s is not None:
        text += f" (>= {atom.min_count} within {atom.window_s:g}s)"
    return text


class _Replayer:
    def __init__(self, ruleset: RuleSet, policy: DecisionPolicy):
        self.decider = Decider(ruleset, policy)
        self.state = RunDecisions()
        self.facts = RunFacts(ruleset, started_at=0.0, alive=True)
        self.matches: list[ReplayedMatch] = []
        self.incidents: list[ReplayedIncident] = []
        self.lines_of: dict[str, list[int]] = {}
        self.settle_at: float | None = None
        self.ended: str | None = None

    def take(self, outcome: Outcome, line_no: int, text: str, keys: tuple[str, ...], now: float) -> None:
        for m in outcome.matches:
            self._match(m, line_no, text, keys)
        if outcome.settle_at is not None:
            self.settle_at = outcome.settle_at
        for decision in outcome.decisions:
            self._decided(decision, now)

    def _match(self, m: Match, line_no: int, text: str, keys: tuple[str, ...]) -> None:
        self.matches.append(ReplayedMatch(line_no, m.rule.name, m.rule.priority, text, why(m.rule, keys), m.incident, m.suppressed))
        if m.suppressed is None:
            self.lines_of.setdefault(m.incident, []).append(line_no)

    def settle_due(self, now: float) -> None:
        if self.settle_at is not None and now >= self.settle_at:
            self.settle_at = None
            decision = self.decider.settle(self.state, self.facts.done, now)
            if decision is not None:
                self._decided(decision, now)

    def _decided(self, decision: Decision, now: float) -> None:
        self.incidents.append(ReplayedIncident(decision, tuple(self.lines_of.get(decision.incident, ())), now))
        names = {step.name for step in decision.plan}
        if "halt" in names:
            self.ended = "halted"
        elif "complete" in names:
            self.ended = "completed"
        outcome = "restarted" if "restart" in names else "done"
        self.decider.closed(self.state, decision.incident, outcome, now)
        if outcome == "restarted":
            self.facts.new_process(now)


def replay(ruleset: RuleSet, lines: Iterable[str], policy: DecisionPolicy, exit_code: int | None = None,
           exit_signal: int | None = None) -> Replay:
    """Every match and decision a live watcher would make on these lines.

    ``exit_code``/``exit_signal``: the process ends after the last line, as
    the watcher would see it through the exit record.
    """
    r = _Replayer(ruleset, policy)
    clock, count = 0.0, 0
    for number, text in enumerate(lines, start=1):
        count = number
        clock = line_time(text, clock)
        r.settle_due(clock)
        if r.ended:
            break
        outcome = r.decider.on_line(RUN, r.state, r.facts, text, clock, {"line": text, "line_no": number})
        if outcome.matches or outcome.decisions:
            r.take(outcome, number, text, r.decider.classifier.classify(text).log_keys, clock)
    if not r.ended and (exit_code is not None or exit_signal is not None):
        r.facts.alive, r.facts.exit_code, r.facts.exit_signal = False, exit_code, exit_signal
        r.take(r.decider.evaluate(RUN, r.state, r.facts, clock), 0, "(process exited)", (), clock)
    if not r.ended and r.settle_at is not None:
        r.settle_due(r.settle_at)
    r.decider.forget(RUN)
    return Replay(count, tuple(r.matches), tuple(r.incidents), r.ended)
