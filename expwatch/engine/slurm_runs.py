"""The engine loop's SLURM part: job states from squeue (off-thread) and ends from the jobcomp file.

A job's end reaches the loop as the same ``ProcessExit`` a pidfd gives a
local run, from whichever of the two sources sees it first; the other is
then recognised as the same end and ignored. The completion file is read
through the SLURM runner, its one follower; a watcher started after a job
ended finds the job's record there, as the file never forgets.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expwatch.engine.runs import WatchedRun
from expwatch.engine.slurm_jobs import JobPoller, JobStates
from expwatch.watcher.events import ProcessExit
from expwatch.slurm_states import PENDING, UNKNOWN

if TYPE_CHECKING:
    from expwatch.engine.loop import EngineLoop

class SlurmRuns:
    def __init__(self, loop: "EngineLoop"):
        self._loop = loop
        self._poller = JobPoller(loop.events, loop.runners.slurm)
        self._following = False
        self._path: Path | None = None
        self._located = False
        self._want_completions = False

    def handles(self, event: Any) -> bool:
        return isinstance(event, JobStates)

    def stop(self) -> None:
        self._poller.stop()

    def poll(self, runs: list[WatchedRun] | None = None) -> None:
        """Ask squeue (on the poller's thread) about these runs' jobs, or every live SLURM run's."""
        chosen = runs if runs is not None else [r for r in self._loop.runs if r.manifest.job_id and r.facts.alive and not r.finished]
        self._poller.request([r.manifest.job_id for r in chosen if r.manifest.job_id])

    def follow_completions(self) -> None:
        """A SLURM run is watched: follow the cluster's completion file once its place is known."""
        self._want_completions = True
        if self._located:
            self._start_following()

    def is_completion_file(self, path: str) -> bool:
        return self._following and path == str(self._path)

    def read_completions(self) -> None:
        if not self._following:
            return
        records = self._loop.runners.slurm.completion_records()
        for run in self._loop.runs:
            record = records.get(run.manifest.job_id or "")
            if record is not None and record.final and run.facts.alive is not False:
                self._loop.on_exit(ProcessExit(run.name, None, record.returncode, record.signal, record.job_id, record.state, record.node))

    def on_event(self, event: JobStates) -> None:
        loop = self._loop
        if event.error:
            loop.audit.record("slurm unavailable", error=event.error)
        if event.jobcomp_asked and not self._located:
            self._located, self._path = True, event.jobcomp
            if self._want_completions:
                self._start_following()
        now = time.time()
        for run in loop.runs:
            state = event.states.get(run.manifest.job_id or "")
            if state is None or state.state == UNKNOWN or run.finished:
                continue
            if run.facts.job_state == PENDING and state.state != PENDING:
                run.facts.last_log_at = now  # silence counts from the job's start, not its submission
                loop.arm_silence(run)
            if state.alive:
                run.facts.job_state = state.state
                loop.evaluate(run)
            elif state.settled and run.facts.alive is not False:
                loop.on_exit(ProcessExit(run.name, None, state.exit_code if not state.signal else None, state.signal,
                                         run.manifest.job_id, state.state, state.node))

    def _start_following(self) -> None:
        if self._following:
            return
        if self._path is None:
            self._loop.audit.record("slurm completion file unknown", note="JobCompType is not jobcomp/filetxt; job ends are polled")
            self._want_completions = False
            return
        self._following = True
        self._loop.files.watch(self._path.parent, recursive=False)
        self.read_completions()
