"""Per-run fact state: exact windows, ratios and null rates, in Python.

durable-rules has no time windows, so "at least N matches within W seconds"
is a deque of timestamps per pattern, counted exactly (no fail2ban-style
rate scaling). ``snapshot`` flattens everything into the fact the engine
sees; log atoms appear in it only on the line that matched them, which
makes log rules fire per line and state rules fire on state.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from expwatch.rules.classify import LineHits
from expwatch.rules.model import LogAtom, NullRateAtom, RatioAtom, RuleSet
from expwatch.slurm_states import CANCELLED, OUT_OF_MEMORY, PENDING
from expwatch.watcher.events import ProcessExit


@dataclass
class RunFacts:
    ruleset: RuleSet
    started_at: float
    alive: bool | None = None
    done: int = 0
    correct: int = 0
    expected: int | None = None
    null_reasons: dict[str, int] = field(default_factory=dict)
    last_log_at: float | None = None
    exit_signal: int | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    oom_unknown: bool = False  # killed by SIGKILL (or exit 137) and the kernel log could not say why
    probe_failing_since: float | None = None
    job_state: str | None = None  # SLURM's word for the run's job, for SLURM runs
    _windows: dict[str, deque] = field(default_factory=dict)
    _ratio: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._atoms = {a.key: a for a in self.ruleset.all_atoms()}

    def rebind(self, ruleset: RuleSet) -> None:
        """New rules after a reload: counters of atoms that no longer exist are dropped."""
        self.ruleset = ruleset
        self._atoms = {a.key: a for a in ruleset.all_atoms()}
        self._windows = {k: v for k, v in self._windows.items() if k in self._atoms}
        self._ratio = {k: v for k, v in self._ratio.items() if k in self._atoms}

    def on_line(self, hits: LineHits, now: float, replay: bool) -> tuple[str, ...]:
        """Count a classified line; return the log atom keys it satisfies now.

        Replayed history feeds the ratio counters but not the windows: its
        timestamps are unknown, and old lines must never trigger actions.
        """
        for key, role in hits.ratio_terms:
            counts = self._ratio.setdefault(key, [0, 0])
            counts[0 if role == "num" else 1] += 1
        if replay:
            return ()
        self.last_log_at = now
        satisfied = []
        for key in hits.log_keys:
            atom = self._atoms[key]
            assert isinstance(atom, LogAtom)
            if atom.window_s is None:
                satisfied.append(key)
                continue
            window = self._windows.setdefault(key, deque())
            window.append(now)
            while window and window[0] < now - atom.window_s:
                window.popleft()
            if len(window) >= atom.min_count:
                satisfied.append(key)
        return tuple(satisfied)

    def new_process(self, now: float) -> None:
        """A restart replaced the process: its exit and its counting windows are history."""
        self.alive = True
        self.exit_signal = None
        self.exit_code = None
        self.oom_killed = False
        self.oom_unknown = False
        self.job_state = None
        self.last_log_at = now
        self._windows.clear()

    def exited(self, end: ProcessExit) -> None:
        """The process (or SLURM job) ended: what its exit says about why."""
        self.alive, self.exit_signal, self.exit_code = False, end.signal, end.returncode
        if end.job_id:
            self.job_state = end.job_state
            self.oom_killed = end.job_state == OUT_OF_MEMORY
        else:
            self.oom_killed = bool(end.oom_killed)
            # SIGKILL or 137 with no kernel log to ask: the OOM killer is the likely cause, not a certainty.
            self.oom_unknown = end.oom_unreadable and (end.signal == 9 or end.returncode == 137)

    def note_activity(self, now: float) -> None:
        self.last_log_at = now

    @property
    def complete(self) -> bool:
        """Done reached expected; without an expected count, a clean exit is completion."""
        if self.expected:
            return self.done >= self.expected
        return self.alive is False and self.exit_code == 0

    def null_rate(self, atom: NullRateAtom) -> float | None:
        if self.done < atom.min_items or not self.done:
            return None
        counted = 0
        for reason, n in self.null_reasons.items():
            if atom.only_reasons and reason not in atom.only_reasons:
                continue
            if reason in atom.exclude_reasons:
                continue
            counted += n
        return counted / self.done

    def ratio(self, atom: RatioAtom, now: float) -> float | None:
        num, den = self._ratio.get(atom.key, (0, 0))
        if now - self.started_at < atom.after_s or den < atom.min_count:
            return None
        return num / den

    # The snapshot's facts about the run's current process (a restart starts them afresh);
    # the others (items, probes, null rates) belong to the run.
    PROCESS_FACTS = frozenset({"alive", "oom_killed", "oom_likely", "job_cancelled", "job_state", "silent_s", "exit_signal"})

    # Facts that change with the clock alone: their thresholds are the loop's timers (silence, probe rechecks).
    CLOCK_FACTS = frozenset({"silent_s", "probe_failing_s"})

    def steady(self, snapshot: dict[str, Any]) -> tuple:
        """``snapshot`` less what only the passing of time changes, with what those facts count from.

        Two evaluations with equal steady facts (and equal decision state) match
        the same rules, unless a clock fact crossed a threshold, which a timer
        of the loop covers.
        """
        kept = tuple(sorted((k, v) for k, v in snapshot.items() if k not in self.CLOCK_FACTS))
        return kept, self.last_log_at, self.probe_failing_since

    def snapshot(self, now: float, log_keys: tuple[str, ...] = ()) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "alive": int(bool(self.alive)),
            "complete": int(self.complete),
            "items": self.done,
            "oom_killed": int(self.oom_killed),
            "oom_likely": int(self.oom_unknown),
            "job_cancelled": int(self.job_state == CANCELLED),
        }
        if self.job_state:
            facts["job_state"] = self.job_state
        # A job waiting for a node has not started logging: it is never silent.
        if self.alive and self.last_log_at is not None and self.job_state != PENDING:
            facts["silent_s"] = round(now - self.last_log_at, 3)
        if self.exit_signal:
            facts["exit_signal"] = self.exit_signal
        if self.probe_failing_since is not None:
            facts["probe_failing_s"] = round(now - self.probe_failing_since, 3)
        for key in log_keys:
            facts[key] = 1
        for atom in self._atoms.values():
            if isinstance(atom, NullRateAtom):
                rate = self.null_rate(atom)
                if rate is not None:
                    facts[atom.key] = round(rate, 6)
            elif isinstance(atom, RatioAtom):
                value = self.ratio(atom, now)
                if value is not None:
                    facts[atom.key] = round(value, 6)
        return facts

    def next_silence_deadline(self) -> float | None:
        thresholds = self.ruleset.silence_thresholds()
        if not thresholds or not self.alive or self.last_log_at is None:
            return None
        return self.last_log_at + thresholds[0]
