"""A run's watcher state in the state store: read position, guard, latches.

Saved so a watcher killed at any moment resumes at the same log bytes with
the same guard streak; an incident still collecting evidence is never
saved, so its lines are read (and decided) again by the next watcher.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

from expwatch.engine.runs import RunTable, WatchedRun
from expwatch.manifest import RunManifest
from expwatch.rules.decide import RunDecisions
from expwatch.rules.guard import GuardState
from expwatch.state import StateStore
from expwatch.watcher.tail import TailPosition

SAVE_BATCH = 100  # runs a transaction: about 1 ms of building and writing here, so a step overruns its time by that at most


class RunStatePersistence:
    def __init__(self, store: StateStore):
        self.store = store
        self._due: set[str] = set()  # runs whose lines since their last save counted for nothing

    def save_later(self, run: WatchedRun) -> bool:
        """Save ``run`` with the next ``save_due``; True when it is the first run waiting (arm the timer).

        Lines no rule counts can be read again after a crash at no cost, so
        their read position is saved in batches: one transaction a second for
        every run read, where a save per run cost 100 transactions a second
        at 100 chatty runs, each also an inotify event on the WAL file.
        """
        first = not self._due
        self._due.add(run.name)
        return first

    def save_due(self, runs: RunTable, until: float = math.inf) -> bool:
        """Save the waiting runs as the table holds them now; True once none is left waiting.

        By name, not by the object that asked: a run released and watched
        again meanwhile is another object, and the one that asked would write
        an older read position over the newer one's.

        In transactions of ``SAVE_BATCH`` runs until ``until`` (``time.monotonic()``),
        at least one: a lab's 1,000 chatty runs were one 25-55 ms save every
        second, the engine thread's longest hold and most of bench/lab.py's
        p99. The caller saves the rest after reading what arrived meanwhile.
        """
        while self._due:
            names = [self._due.pop() for _ in range(min(SAVE_BATCH, len(self._due)))]
            current = [run for run in map(runs.get, names) if run is not None and not run.decisions.collecting]
            if current:
                self.store.save_runs({run.name: self.state_of(run) for run in current})
            if time.monotonic() >= until:
                break
        return not self._due

    def saved_position(self, name: str) -> TailPosition | None:
        saved = self.store.run_data(name)
        return TailPosition(**saved["position"]) if saved.get("position") else None

    def restore(self, manifest: RunManifest) -> tuple[RunDecisions, tuple[int | None, float | None] | None]:
        """The run's guard and latches as the last watcher left them.

        Latches hold for the process they were judged against: a run restarted
        while no watcher saw its new process must not have that one's death hidden.
        """
        saved = self.store.run_data(manifest.name)
        decisions = RunDecisions()
        if saved.get("guard"):
            g = saved["guard"]
            decisions.guard = GuardState(g["last_rule"], g["streak"], g["done_at_last"], tuple(g["restarts"]))
        this_process = [manifest.pid, manifest.create_time]
        if saved.get("latches_for", this_process) == this_process:
            decisions.latches = set(saved.get("latches", []))
            return decisions, (manifest.pid, manifest.create_time)
        return decisions, None

    def save(self, run: WatchedRun) -> None:
        if run.decisions.collecting:
            return
        self.store.save_run(run.name, self.state_of(run))

    @staticmethod
    def state_of(run: WatchedRun) -> dict:
        """What ``save`` writes.

        Matches held back by an incident in progress, and the lines of a crash
        still being read, are read again by the next watcher: a watcher that
        resumed inside a traceback would never see its start, and lose its cause.
        """
        position = run.tailer.position
        back_to = min((at for at in (run.decisions.held_from, run.crashes.opened_at) if at is not None), default=None)
        if back_to is not None and back_to < position.offset:
            position = replace(position, offset=back_to, skipping=False)
        # vars(), not asdict(): the same JSON without asdict's deep copy, on every throttled save of every run.
        return {
            "position": vars(position), "guard": vars(run.decisions.guard),
            "latches": sorted(run.decisions.latches),
            "latches_for": list(run.latched_for) if run.latched_for else None,
        }

    @staticmethod
    def first_state(manifest: RunManifest, position: TailPosition) -> dict:
        """What ``state_of`` gives a run first seen finished and released at once, read up to ``position``.

        Its guard is new and nothing is latched, judged against its own process, as ``restore`` leaves a run with no saved state.
        """
        return {"position": vars(position), "guard": vars(GuardState()), "latches": [],
                "latches_for": [manifest.pid, manifest.create_time]}
