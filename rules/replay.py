"""Replay a log through the Decider without acting: the engine of ``rules test``.

It drives the very Decider the watcher's engine loop uses (same classifier,
fact state, durable-rules engine, settle window, priority winner, guard and
plan), so what it prints is what the watcher would decide. Time comes from
each line's own leading timestamp when it has one (a line without one
shares the last time seen), so counting and settle windows behave as they
did when the log was written. Effects are simulated the way the watcher
would see them: a plan that restarts gives a new process (its counting
windows start over, the restart counts toward the budget), a halt or a
completion ends the replay. Crashes are assembled from the lines as the
watcher assembles them (``watcher/crash.py``); the end of the log ends an
open traceback, as the watcher's flush at the process's exit does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from expwatch.rules.crashmatch import RuleExplanation
from expwatch.rules.decide import Decider, Decision, DecisionPolicy, Match, Outcome, RunDecisions
from expwatch.rules.facts import RunFacts
from expwatch.rules.model import CrashAtom, Rule, RuleSet
from expwatch.watcher.crash import CrashAssembler, CrashLimits
from expwatch.watcher.events import Crash

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
class SurvivedException:
    """An incident a logged, caught exception opened: the process went on past the exit wait (``Decider.carried_on``)."""

    incident: str
    candidates: tuple[str, ...]
    cause: str
    lines: tuple[int, ...]


@dataclass(frozen=True)
class CrashReport:
    """One crash of the replayed log: where it ended, what it was, which rules it fired and why (not)."""

    line_no: int
    crash: Crash
    fired: tuple[str, ...]
    explanations: tuple[RuleExplanation, ...]


@dataclass(frozen=True)
class Replay:
    lines: int
    matches: tuple[ReplayedMatch, ...]
    incidents: tuple[ReplayedIncident, ...]
    crashes: tuple[CrashReport, ...] = ()
    ended: str | None = None  # "halted" / "completed" when a decision ended the run
    survived: tuple[SurvivedException, ...] = ()  # incidents of caught exceptions, ended undecided


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
    try:
        return datetime.fromisoformat(f"{m.group(1)} {m.group(2)}").timestamp() + frac
    except ValueError:
        return fallback


def why(rule: Rule, keys: tuple[str, ...], cause: str = "") -> str:
    hit = [a for a in rule.trigger_atoms if a.key in keys]
    if not hit:
        return "state: " + rule.description.split(".")[0] if rule.description else "state condition"
    atom = hit[0]
    if isinstance(atom, CrashAtom):
        return f"crash {atom.field} {list(atom.values)[:4]}: {cause}"
    text = " | ".join(atom.patterns)
    if atom.window_s is not None:
        text += f" (>= {atom.min_count} within {atom.window_s:g}s)"
    return text


class _Replayer:
    def __init__(self, ruleset: RuleSet, policy: DecisionPolicy, limits: CrashLimits | None):
        self.decider = Decider(ruleset, policy)
        self.assembler = CrashAssembler(limits)
        self.crashes: list[CrashReport] = []
        self.state = RunDecisions()
        self.facts = RunFacts(ruleset, started_at=0.0, alive=True)
        self.matches: list[ReplayedMatch] = []
        self.incidents: list[ReplayedIncident] = []
        self.lines_of: dict[str, list[int]] = {}
        self.survived: list[SurvivedException] = []
        self.settle_at: float | None = None
        self.ended: str | None = None

    def take(self, outcome: Outcome, line_no: int, text: str, keys: tuple[str, ...], now: float, cause: str = "") -> None:
        for m in outcome.matches:
            self._match(m, line_no, text, keys, cause)
        if outcome.settle_at is not None:
            self.settle_at = outcome.settle_at
        for decision in outcome.decisions:
            self._decided(decision, now)

    def _match(self, m: Match, line_no: int, text: str, keys: tuple[str, ...], cause: str) -> None:
        self.matches.append(ReplayedMatch(line_no, m.rule.name, m.rule.priority, text, why(m.rule, keys, cause), m.incident, m.suppressed))
        if m.suppressed is None:
            self.lines_of.setdefault(m.incident, []).append(line_no)

    def on_crash(self, crash: Crash, line_no: int, now: float) -> None:
        before = len(self.matches)
        outcome = self.decider.on_crash(RUN, self.state, self.facts, crash, now, {"line_no": line_no}, finished=bool(self.ended))
        self.take(outcome, line_no, crash.lines[-1] if crash.lines else "", self.decider.crash_matcher.satisfied(crash), now, crash.cause())
        fired = tuple(m.rule for m in self.matches[before:])
        self.crashes.append(CrashReport(line_no, crash, fired, tuple(self.decider.crash_matcher.explain(crash))))

    def settle_due(self, now: float, last_line_at: float) -> None:
        """The watcher's settle deadline, on the lines' clock (``now``: the next line's time, or the log's end)."""
        if self.settle_at is not None and now >= self.settle_at:
            if self.state.collecting and self.assembler.reading:
                quiet = self.decider.crash_quiet(self.settle_at - last_line_at, self.assembler.unfinished)
                if not quiet and self.decider.settle_waits(self.state, True, self.settle_at):
                    self.settle_at += self.decider.policy.settle_s
                    return self.settle_due(now, last_line_at)
                for crash in self.assembler.flush():
                    self.on_crash(crash, crash.end_offset, self.settle_at)
            if self.decider.awaits_exit(self.state, bool(self.facts.alive), self.settle_at):
                self.settle_at += self.decider.policy.settle_s
                return self.settle_due(now, last_line_at)
            self.settle_at = None
            if (inc := self.decider.carried_on(self.state, self.facts)) is not None:
                self.survived.append(SurvivedException(inc.id, tuple(c.rule.name for c in inc.candidates), inc.crashes()[0]["cause"],
                                                       tuple(self.lines_of.get(inc.id, ()))))
                return
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
            self.decider.new_process(self.state)


def replay(ruleset: RuleSet, lines: Iterable[str], policy: DecisionPolicy, exit_code: int | None = None,
           exit_signal: int | None = None, limits: CrashLimits | None = None) -> Replay:
    """Every match and decision a live watcher would make on these lines.

    ``exit_code``/``exit_signal``: the process ends after the last line, as
    the watcher would see it through the exit record.
    """
    r = _Replayer(ruleset, policy, limits)
    clock, count = 0.0, 0
    for number, text in enumerate(lines, start=1):
        count = number
        previous, clock = clock, line_time(text, clock)
        r.settle_due(clock, previous)
        if r.ended:
            break
        # "offset" in the crash assembler's units (line numbers here, bytes in the watcher): which lines a crash spans.
        outcome = r.decider.on_line(RUN, r.state, r.facts, text, clock, {"line": text, "line_no": number, "offset": number})
        if outcome.matches or outcome.decisions:
            r.take(outcome, number, text, r.decider.classifier.classify(text).log_keys, clock)
        # The assembler is fed line numbers as offsets, so a crash says on which line it ended.
        for crash in r.assembler.feed(text, number):
            r.on_crash(crash, crash.end_offset, clock)
    if not r.ended:
        for crash in r.assembler.flush():
            r.on_crash(crash, crash.end_offset, clock)
    if not r.ended and (exit_code is not None or exit_signal is not None):
        r.facts.alive, r.facts.exit_code, r.facts.exit_signal = False, exit_code, exit_signal
        r.take(r.decider.evaluate(RUN, r.state, r.facts, clock), 0, "(process exited)", (), clock)
    if not r.ended and r.settle_at is not None:
        r.settle_due(r.settle_at + max(r.decider.policy.settle_max_s, r.decider.policy.exit_wait_s), clock)
    return Replay(count, tuple(r.matches), tuple(r.incidents), tuple(r.crashes), r.ended, tuple(r.survived))
