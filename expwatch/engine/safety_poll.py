"""The safety poll, in short steps between the engine loop's events.

Every ``watch.safety_poll_s`` the watcher looks at every manifest and every
watched run's files without waiting for inotify (missed events, NFS), and
lets go of runs finished long enough ago. Done in one go, a round over a
lab's 1,000 live runs held the engine thread about 200 ms every 5 s: a
failure written then waited that long to be seen (bench/lab.py's p99 was
221 ms). A round is now a list of runs worked through in steps of at most
``watch.poll_step_s``, the manifests first (a lab's 11,000 took ~70 ms
to stat), then the runs; after each step the loop reads what arrived
meanwhile, so no event waits longer than a step for the poll.

The next round starts ``safety_poll_s`` after the last one began, or as
soon as it ends if it took longer than that.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

from expwatch.manifest import SurveyRound

if TYPE_CHECKING:
    from expwatch.engine.loop import EngineLoop

ROUND, STEP = "poll", "poll step"  # the two timers' purposes


class SafetyPoll:
    def __init__(self, loop: "EngineLoop", every_s: float, step_s: float):
        self.loop = loop
        self.every_s, self.step_s = every_s, step_s
        self._survey: SurveyRound | None = None  # the round's pass over the manifests, while it lasts
        self._pending: deque[str] = deque()  # then the runs it has yet to look at
        self._on_disk: set[str] = set()  # run names whose manifest the round's survey found
        self._began = 0.0

    def arm(self) -> None:
        self.loop.timers.arm("*", ROUND, self.every_s)

    def begin(self) -> None:
        """A round: first the manifests (new runs added, released runs whose manifest changed revived), then the runs."""
        self._began = time.monotonic()
        self._survey = self.loop.members.survey_round()
        self.step()

    def step(self) -> None:
        """Work of the round until ``step_s`` has gone (at least one manifest or run), then back to the loop's events."""
        loop, until = self.loop, time.monotonic() + self.step_s
        if self._survey is not None:
            if not self._survey.take(until):
                loop.timers.arm("*", STEP, 0.0)
                return
            self._after_survey(self._survey)
            self._survey = None
        while self._pending:
            self._look_at(self._pending.popleft())
            if time.monotonic() >= until:
                break
        if self._pending:
            loop.timers.arm("*", STEP, 0.0)
            return
        loop.slurm.poll()
        loop.timers.arm("*", ROUND, max(0.0, self.every_s - (time.monotonic() - self._began)))

    def _look_at(self, name: str) -> None:
        loop = self.loop
        run = loop.runs.get(name)
        if run is None:  # lost or released since the round began
            return
        if name not in self._on_disk and not loop.layout.manifest_path(name).exists():
            loop.members.lose(name)
            return
        loop.read_log(run)
        loop.read_progress(run)
        loop.evaluate(run, if_changed=True)  # the clock's thresholds are timers of their own
        loop.members.release_if_due(name)

    def _after_survey(self, done: SurveyRound) -> None:
        members, dormancy = self.loop.members, self.loop.dormancy
        for manifest in members.surveyed(done):
            if manifest.name in dormancy:
                members.on_manifest(self.loop.layout.manifest_path(manifest.name))
            elif manifest.name not in self.loop.runs:
                members.add(manifest)
        self._on_disk = done.seen
        self._pending = deque(self.loop.runs.names())
