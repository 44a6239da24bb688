"""The Decider: where a match becomes an incident, a winner, a guard verdict and a plan.

It is pure: given one run's facts, its decision state and the time, it says
which rules matched, which incident each joined, and — when an incident's
settle window closes — which rule won, what the guard says and which
action steps to take. It owns the durable-rules engine (one thread calls
it) and touches no file, process or audit log, so the watcher's engine loop
and ``expwatch rules test`` run the very same decisions: the loop records
and acts on them, the tester prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from expwatch.rules.classify import LineClassifier, LineHits
from expwatch.rules.crashmatch import CrashMatcher
from expwatch.rules.engine import RuleEngine
from expwatch.rules.facts import RunFacts
from expwatch.rules.guard import GuardLimits, GuardState, judge, record_restart, reset
from expwatch.rules.incidents import Candidate, Incident, new_incident_id
from expwatch.rules.model import Rule, RuleSet
from expwatch.rules.retry_hint import CrashPolicy, adjust
from expwatch.settings import Settings
from expwatch.watcher.events import Crash

SUPPRESSED_IN_PROGRESS = "incident in progress"
# Matches an incident in progress holds back, at most: the restarted process's crash is among the first.
HELD_MAX = 32


@dataclass(frozen=True)
class DecisionPolicy:
    """The numbers deciding depends on (from settings): settle window and guard limits."""

    settle_s: float
    limits: GuardLimits
    crash: CrashPolicy = field(default_factory=CrashPolicy)
    settle_max_s: float = 10.0  # how long an incident waits for a traceback still being written
    exit_wait_s: float = 0.0  # how long, its crash read, it waits for the process to end

    @classmethod
    def from_settings(cls, settings: Settings) -> "DecisionPolicy":
        return cls(settings.watch.settle_s, GuardLimits(
            int(settings.guard.same_rule_limit), int(settings.guard.restart_budget),
            settings.guard.restart_window_s), CrashPolicy.from_settings(settings.crash),
            settings.crash["settle_max_s"], settings.crash["exit_wait_s"])


@dataclass(frozen=True)
class PlanStep:
    name: str
    arg: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "arg": self.arg}

    def __str__(self) -> str:
        return self.name if self.arg is None else f"{self.name} {self.arg}"


@dataclass
class RunDecisions:
    """One run's decision state: the loop keeps and persists it, only the Decider changes it."""

    guard: GuardState = field(default_factory=GuardState)
    latches: set[str] = field(default_factory=set)  # state rules already decided for this process
    incident: Incident | None = None  # the failure being handled; one at a time
    side_incidents: set[str] = field(default_factory=set)  # informational ones (alerts, completion)
    # Log matches read while ``incident`` acted. Those its restart's new process wrote (found by their
    # offset once the restart is recorded) open the next incident; the rest were the incident's own.
    held: list["Match"] = field(default_factory=list)
    # What the last evaluation left: its steady facts and this state. Equal now, evaluating again changes nothing.
    evaluated: tuple | None = None

    def steady(self, facts: tuple) -> tuple:
        inc = self.incident
        return facts, frozenset(self.latches), inc and (inc.id, inc.acting, frozenset(inc.suppressed_states))

    @property
    def held_from(self) -> int | None:
        """The log offset of the first held match: a watcher killed now must read from there again."""
        return min((m.evidence["offset"] for m in self.held), default=None)

    @property
    def collecting(self) -> bool:
        """An incident is open and still gathering evidence (its lines are read again after a crash)."""
        return self.incident is not None and not self.incident.acting


@dataclass(frozen=True)
class Match:
    """A rule whose condition held, and the incident it joined (or why it joined none)."""

    rule: Rule
    incident: str
    evidence: dict[str, Any]
    opened: bool = False  # the first candidate of a new incident
    suppressed: str | None = None
    requeued: bool = False  # held while an earlier incident acted; the restarted process wrote it


@dataclass(frozen=True)
class Decision:
    """An incident's outcome: the winning rule, the guard's word, and the steps to take."""

    incident: str
    rule: Rule
    candidates: tuple[str, ...]
    act: bool
    reason: str | None
    streak: int | None
    plan: tuple[PlanStep, ...]
    evidence: dict[str, Any]
    informational: bool = False

    @property
    def restarts(self) -> bool:
        return any(step.name == "restart" for step in self.plan)


@dataclass(frozen=True)
class Outcome:
    """What one evaluation produced: matches to record, decisions to carry out, a settle deadline to arm."""

    matches: tuple[Match, ...] = ()
    decisions: tuple[Decision, ...] = ()
    settle_at: float | None = None
    counted: bool = False  # the line counted toward some rule (its read position must be saved)


NOTHING = Outcome()


class Decider:
    def __init__(self, ruleset: RuleSet, policy: DecisionPolicy):
        self.ruleset = ruleset
        self.policy = policy
        self.engine = RuleEngine(ruleset)
        self.classifier = LineClassifier(ruleset)
        self.crash_matcher = CrashMatcher(ruleset)

    # ----- inputs ------------------------------------------------------------------

    def on_line(self, run: str, state: RunDecisions, facts: RunFacts, text: str, now: float,
                evidence: dict[str, Any], replay: bool = False, finished: bool = False) -> Outcome:
        """One complete log line: capture it for an open incident, count it, evaluate if it satisfied a log atom.

        ``replay`` (history read on first sight) only rebuilds counters: old lines never trigger.
        """
        if state.collecting and not replay:
            state.incident.capture(text)
            if isinstance(evidence.get("offset"), int):
                state.incident.last_line_at = max(state.incident.last_line_at, evidence["offset"])
        hits: LineHits = self.classifier.classify(text)
        keys = facts.on_line(hits, now, replay)
        if not keys or finished:
            return Outcome(counted=bool(hits)) if hits else NOTHING
        outcome = self.evaluate(run, state, facts, now, keys, evidence)
        return Outcome(outcome.matches, outcome.decisions, outcome.settle_at, counted=True)

    def on_crash(self, run: str, state: RunDecisions, facts: RunFacts, crash: Crash, now: float,
                 evidence: dict[str, Any], finished: bool = False) -> Outcome:
        """A whole crash read from the log: evaluated with the crash conditions it satisfies, itself the evidence.

        A crash that satisfies none still becomes the cause of an incident a
        log line opened (a bare traceback), so the operator sees what it was.
        """
        data = crash.to_json()
        if state.collecting and state.incident.crash is None:
            state.incident.crash = data
        keys = self.crash_matcher.satisfied(crash)
        if not keys or finished:
            return NOTHING
        found = {**evidence, "line": crash.lines[-1] if crash.lines else "", "cause": data["cause"], "crash": data}
        outcome = self.evaluate(run, state, facts, now, keys, found)
        return Outcome(outcome.matches, outcome.decisions, outcome.settle_at, counted=True)

    def evaluate(self, run: str, state: RunDecisions, facts: RunFacts, now: float,
                 log_keys: tuple[str, ...] = (), evidence: dict[str, Any] | None = None,
                 if_changed: bool = False) -> Outcome:
        """Match every rule against the run's facts now; open or join incidents.

        Log rules fire on each line that satisfies them; state rules fire on a
        rising edge and stay latched while they hold, so a dead process is one
        incident, not one per safety poll. ``if_changed`` (the safety poll):
        nothing is matched when neither the steady facts nor the decision
        state changed since the last evaluation left them, as then every rule
        that holds is latched or already said suppressed (asking durable-rules
        about each quiet run every poll was most of an idle watcher's work).
        """
        snapshot = facts.snapshot(now, log_keys)
        steady = facts.steady(snapshot) if not log_keys else None
        if if_changed and steady is not None and state.steady(steady) == state.evaluated:
            return NOTHING
        outcome = self._evaluate(run, state, snapshot, now, log_keys, evidence, facts)
        state.evaluated = state.steady(steady) if steady is not None else None
        return outcome

    def _evaluate(self, run: str, state: RunDecisions, snapshot: dict[str, Any], now: float,
                  log_keys: tuple[str, ...], evidence: dict[str, Any] | None, facts: RunFacts) -> Outcome:
        matched = self.engine.evaluate(run, snapshot)
        state.latches = {n for n in matched if n in state.latches}
        matches: list[Match] = []
        decisions: list[Decision] = []
        settle_at = None
        for name in matched:
            rule = self.ruleset.by_name(name)
            via_log = any(a.key in log_keys for a in rule.trigger_atoms)
            if not via_log and name in state.latches:
                continue
            found = evidence if via_log and evidence is not None else {"facts": {k: v for k, v in snapshot.items() if not k.startswith("log_")}}
            if rule.informational:
                state.latches.add(name)
                side = Incident(new_incident_id(), run, now, now)
                side.add(rule, found, now)
                state.side_incidents.add(side.id)
                matches.append(Match(rule, side.id, found, opened=True))
                decisions.append(self._decide(state, side, facts.done, now, guarded=False))
                continue
            inc = state.incident
            if inc is not None and inc.acting:
                if not via_log:
                    if name in inc.suppressed_states:
                        continue  # said once: a dead run's every safety poll while its restart waits is not news
                    inc.suppressed_states.add(name)
                match = Match(rule, inc.id, found, suppressed=SUPPRESSED_IN_PROGRESS)
                if via_log and isinstance(found.get("offset"), int) and found["offset"] >= 0 and len(state.held) < HELD_MAX:
                    state.held.append(match)
                matches.append(match)
                continue
            opened = inc is None
            if opened:
                inc = Incident(new_incident_id(), run, now, now + self.policy.settle_s)
                state.incident = inc
                settle_at = inc.settle_until
            opened = opened or not inc.candidates
            inc.add(rule, found, now)
            state.latches.add(name)
            matches.append(Match(rule, inc.id, found, opened=opened))
        return Outcome(tuple(matches), tuple(decisions), settle_at)

    def crash_quiet(self, silent_for_s: float | None, unfinished: bool) -> bool:
        """Whether a traceback being read is over by silence (``silent_for_s``: since the log's last line, None: no line yet).

        Quiet for a settle window, and not stopped in the middle of a section's
        frames or right after a chain line: a writer descheduled there on a
        loaded machine is still printing, and deciding then names only the
        inner causes (a clean clone's CI decided an openai chain as a bare
        TRACEBACK before its APIConnectionError). The watcher's loop and
        ``rules test`` both ask here, each on its own clock.
        """
        return (silent_for_s is None or silent_for_s >= self.policy.settle_s) and not unfinished

    def settle_waits(self, state: RunDecisions, crash_reading: bool, now: float) -> bool:
        """A traceback still being written is the incident's cause: wait for its end (bounded by ``settle_max_s``)."""
        return state.collecting and crash_reading and now - state.incident.opened_at < self.policy.settle_max_s

    def awaits_exit(self, state: RunDecisions, alive: bool, now: float) -> bool:
        """A crash read while its process still lives: wait for the exit (bounded by ``exit_wait_s``).

        A process takes a moment to exit after printing its traceback (under
        load, most of a second: longer than a settle window). Decided before
        it, the incident lacks what the exit says: exit 0 after a logged
        traceback (COMPLETE), a kill by the OOM killer, the job's state. A
        crash whose server named a wait (a 429's retry hint) is waited that
        long too: a script that caught it and sleeps the hint before writing
        again is a live run, not a hung one (``carried_on``); a hint past
        ``crash.retry_halt_above_s`` is decided at once (the quota halt).
        """
        if not (state.collecting and alive):
            return False
        crashes = state.incident.crashes()
        if not crashes:
            return False
        hint = max((c.get("retry_after_s") or 0.0 for c in crashes), default=0.0)
        wait = self.policy.exit_wait_s
        if 0 < hint <= self.policy.crash.retry_halt_above_s:
            wait = max(wait, min(hint, self.policy.crash.retry_wait_max_s) + self.policy.settle_s)
        return now - state.incident.opened_at < wait

    def carried_on(self, state: RunDecisions, facts: RunFacts) -> Incident | None:
        """The process outlived the exit wait and kept writing after its traceback: the exception was caught.

        ``logger.exception(...)`` of an error the script handles prints a whole
        traceback, then the run goes on; restarting it (or halting it as a code
        bug) would kill a healthy run. The candidates that traceback explains
        (crash matches, and lines inside it such as ``Traceback (most recent
        call last):``) are dropped; the rest (a live 429 storm, a failing probe)
        still decide. Returns the incident when nothing is left of it: it ends
        undecided. None too while the process is gone with a failure: a crash
        that ends its process is a crash, whatever it printed after.
        """
        inc = state.incident
        if not state.collecting or not (facts.alive or facts.exit_code == 0):
            return None
        crashes = [c for c in inc.crashes() if c.get("followed") or inc.last_line_at > c["end_offset"]]
        if not crashes:
            return None
        spans = [(c["offset"], c["end_offset"]) for c in crashes]

        def explained(c: Candidate) -> bool:
            if c.evidence.get("crash") is not None:
                return c.evidence["crash"] in crashes
            # A storm (several matches in a window) is not one exception's: a caught 429 retried again and again is one.
            at, storm = c.evidence.get("offset"), any(a.min_count > 1 for a in c.rule.log_atoms)
            return not storm and isinstance(at, int) and any(lo <= at <= hi for lo, hi in spans)

        kept = [c for c in inc.candidates if not explained(c)]
        if not kept:
            state.incident = None
            return inc
        inc.candidates, inc.crash = kept, None
        return None

    def settle(self, state: RunDecisions, done: int, now: float) -> Decision | None:
        """The settle window closed (or the watcher stops): decide the collecting incident."""
        if not state.collecting:
            return None
        return self._decide(state, state.incident, done, now, guarded=True)

    def closed(self, state: RunDecisions, incident: str, outcome: str, now: float,
               log_from: int | None = None) -> Outcome | None:
        """An incident's actions finished: None for a side one (alerts, completion).

        For the run's failure incident, the outcome holds what its restart's
        new process wrote meanwhile (matches held at log offsets from
        ``log_from`` on): the first candidates of the next incident. A
        process that crashed before the restart was even recorded (a watcher
        killed inside the restart step) is decided like any other, not lost
        as part of the incident that started it.
        """
        if incident in state.side_incidents:
            state.side_incidents.discard(incident)
            return None
        held, run = [], ""
        if state.incident is not None and state.incident.id == incident:
            run, state.incident = state.incident.run, None  # a resumed close of an earlier incident leaves a newer one alone
            held, state.held = state.held, []
        if outcome == "restarted":
            state.guard = record_restart(state.guard, now)
        newer = [m for m in held if outcome == "restarted" and log_from is not None and m.evidence["offset"] >= log_from]
        if not newer:
            return NOTHING
        inc = Incident(new_incident_id(), run, now, now + self.policy.settle_s)
        state.incident = inc
        matches = []
        for m in newer:
            inc.add(m.rule, m.evidence, now)
            state.latches.add(m.rule.name)
            matches.append(Match(m.rule, inc.id, m.evidence, opened=len(matches) == 0, requeued=True))
        return Outcome(tuple(matches), (), inc.settle_until)

    def new_process(self, state: RunDecisions) -> None:
        """The run has a new process: rules judged on the old one's facts (DEAD, STALE) may fire again.

        Latches of rules about the run (a failing probe, the null rate) hold
        on: their condition did not start afresh with the process.
        """
        state.latches = {n for n in state.latches if not self.ruleset.by_name(n).compared_facts & RunFacts.PROCESS_FACTS}

    def claim(self, run: str, state: RunDecisions, incident: str, informational: bool, now: float) -> None:
        """Make a previous watcher's half-done incident the run's own, so new matches join it, not race it."""
        if informational:
            state.side_incidents.add(incident)
        else:
            state.incident = Incident(incident, run, now, now, acting=True)

    def resumed(self, state: RunDecisions) -> None:
        """A human resumed the run: forget the guard's streak and every latch."""
        state.guard = reset(state.guard)
        state.latches.clear()

    def rebind(self, state: RunDecisions) -> None:
        """New rules: latches of rules that no longer exist are dropped, and every rule is asked again."""
        state.latches &= {r.name for r in self.ruleset.rules}
        state.evaluated = None

    # ----- deciding ----------------------------------------------------------------

    def _decide(self, state: RunDecisions, inc: Incident, done: int, now: float, guarded: bool) -> Decision:
        """Winner by priority, then the guard (honouring ``guarded: false`` and per-rule limits), then the plan."""
        rule = inc.winner().rule
        plan = tuple(PlanStep(a.name, a.arg) for a in rule.actions)
        evidence = inc.evidence()
        act, reason, streak = True, None, None
        if guarded:
            verdict = judge(state.guard, rule.name, done, self.policy.limits, now,
                            restarts=any(s.name == "restart" for s in plan), rule_limit=rule.same_rule_limit,
                            counts=rule.guarded)
            state.guard = verdict.state
            streak = verdict.state.streak if rule.guarded else None
            if not verdict.act:
                act, reason = False, verdict.reason
                plan = (PlanStep("halt", verdict.reason),)
                evidence["reason"] = verdict.reason
        # What the crash says can change the plan: wait at least the server's retry hint, or halt naming the fix.
        adjusted, evidence = adjust([step.to_json() for step in plan], evidence, self.policy.crash, now)
        plan = tuple(PlanStep(step["name"], step.get("arg")) for step in adjusted)
        inc.acting = True
        return Decision(inc.id, rule, tuple(evidence["candidates"]), act, reason, streak, plan, evidence,
                        informational=not guarded)
