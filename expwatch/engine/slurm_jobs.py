"""SLURM jobs of watched runs: their completion file, and squeue asked off the engine thread.

squeue can take up to ``slurm.command_timeout_s`` to answer, so it never
runs on the engine thread: ``JobPoller`` asks on a thread of its own and
posts the answer as a ``JobStates`` event. Job ends also come from the
cluster's jobcomp/filetxt file, read (a quick file read) on the engine
thread when watchdog says it changed.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

from expwatch.runners.slurm import JobState, SlurmError, SlurmRunner


@dataclass(frozen=True)
class JobStates:
    """One squeue answer for the asked jobs; ``error`` when SLURM could not be asked."""

    states: dict[str, JobState] = field(default_factory=dict)
    error: str = ""
    jobcomp: Path | None = None  # the cluster's completion file, on the first answer only
    jobcomp_asked: bool = False  # this answer says where the completion file is (None: there is none)


class JobPoller:
    """One squeue call at a time on its own thread; requests made while one runs are merged into the next."""

    def __init__(self, events: queue.Queue, slurm: SlurmRunner):
        self._events, self._slurm = events, slurm
        self._wanted: set[str] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="squeue", daemon=True)
        self._started = False
        self._located = False

    def request(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        with self._cond:
            self._wanted.update(job_ids)
            if not self._started:
                self._thread.start()
                self._started = True
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._started:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._wanted and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                jobs, self._wanted = sorted(self._wanted), set()
            located: dict = {}
            if not self._located:
                # `scontrol show config` blocks like squeue does: asked here, once.
                try:
                    located = {"jobcomp": self._slurm.jobcomp_path, "jobcomp_asked": True}
                    self._located = True
                except SlurmError as exc:
                    self._events.put(JobStates(error=str(exc)))
            try:
                self._events.put(JobStates(self._slurm.job_states(jobs), **located))
            except SlurmError as exc:
                self._events.put(JobStates(error=str(exc), **located))
