"""Immutable views of the runs, published by the engine loop for displays.

A display thread never reads the loop's live objects: the loop builds a
tuple of frozen ``RunView`` rows after it handled events and swaps it in
with one assignment, which a reader sees whole or not at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

from expwatch.engine.runs import RunTable, WatchedRun
from expwatch.manifest import RunManifest
from expwatch.problems import RunProblems
from expwatch.results.figures import ProgressFigures
from expwatch.runstate import RunObservation, RunState, classify, log_age
from expwatch.slurm_states import PENDING


@dataclass(frozen=True)
class RunView:
    """What a display needs of one run."""

    name: str
    state: str
    done: int
    expected: int | None
    correct: int
    null_count: int
    log_age_s: float | None
    restarts: int
    pid: int | None
    alive: bool
    last_incident: str | None
    job: str | None = None  # SLURM runs: "job 12 RUNNING on node1"
    last_cause: str | None = None  # the last incident's crash, in one line


def view_of(run: WatchedRun, now: float, stale_after_s: float) -> RunView:
    f, m = run.facts, run.manifest
    age = now - f.last_log_at if f.last_log_at is not None else log_age(m.log, now)
    return _row(m, bool(f.alive), f.done, f.correct, sum(f.null_reasons.values()), age, f.exit_code, f.job_state,
                run.last_incident, run.last_cause, stale_after_s)


def asleep_view(m: RunManifest, figures: ProgressFigures | None, now: float, stale_after_s: float,
                last_incident: str | None = None, last_cause: str | None = None) -> RunView:
    """The row of a finished run registered asleep without being watched (``engine/asleep.py``)."""
    done, correct, nulls = (figures.done, figures.correct, figures.null_count) if figures else (0, 0, 0)
    return _row(m, False, done, correct, nulls, log_age(m.log, now), None, None, last_incident, last_cause, stale_after_s)


def _row(m: RunManifest, alive: bool, done: int, correct: int, nulls: int, age: float | None, exit_code: int | None,
         job_state: str | None, last_incident: str | None, last_cause: str | None, stale_after_s: float) -> RunView:
    obs = RunObservation(alive=alive, done=done, expected=m.expected, log_age_s=age,
                         halted=m.halted is not None, stopped=m.stopped_at is not None,
                         exit_code=exit_code, pending=job_state == PENDING)
    job = f"job {m.job_id} {job_state or ''}".rstrip() if m.job_id else None
    return RunView(m.name, classify(obs, stale_after_s).value, done, m.expected, correct, nulls, age, m.restarts,
                   m.shown_pid, alive, last_incident, job, last_cause)


def views_of(runs: Iterable[WatchedRun], now: float, stale_after_s: float) -> tuple[RunView, ...]:
    return tuple(view_of(run, now, stale_after_s) for run in runs)


def unreadable_views(problems: RunProblems, runs: RunTable) -> tuple[RunView, ...]:
    """Manifests that are not runs (unreadable or refused), shown with their reason where the last incident goes."""
    return tuple(RunView(name, RunState.UNREADABLE.value, 0, None, 0, 0, None, 0, None, False, reason)
                 for name, reason in problems.of("manifest unreadable", "manifest refused") if name not in runs)


class PublishedViews:
    """The views displays read, rebuilt at most every ``every_s`` (``watch.views_every_s``).

    Building one row per run after every event cost most of the engine's
    CPU at 100 chatty runs; a display redraws twice a second at most. A
    rebuild held back is armed as a timer (``arm``), so the last change shows.
    ``wanted`` is False when nothing reads them (plain output): none is built.
    """

    def __init__(self, every_s: float, build: Callable[[float], tuple[RunView, ...]], arm: Callable[[float], None]):
        self.current: tuple[RunView, ...] = ()
        self.wanted = True
        self._every, self._build, self._arm = every_s, build, arm
        self._at, self._pending = 0.0, False

    def publish(self) -> None:
        if not self.wanted:
            return
        now = time.time()
        wait = self._at + self._every - now
        if wait > 0:
            if not self._pending:
                self._pending = True
                self._arm(wait)
            return
        self._at, self._pending = now, False
        self.current = self._build(now)
