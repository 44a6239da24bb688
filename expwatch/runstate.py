"""What state a run is in, as a pure function of what can be observed.

``status``, the live view and the watcher all call ``classify`` so a run is
never RUNNING in one place and STALE in another.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from expwatch.files import NotReadyYet, Unreadable, read_json
from expwatch.manifest import RunManifest
from expwatch.results.figures import ProgressCache, ProgressFigures, read_figures
from expwatch.processes import verified_process
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import discover
from expwatch.runners.registry import Runners
from expwatch.runners.slurm import JobState, SlurmError
from expwatch.settings import Settings, load_settings
from expwatch.slurm_states import PENDING, UNKNOWN as SLURM_UNKNOWN


class RunState(str, Enum):
    PENDING = "PENDING"  # a SLURM job waiting for a node
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    DEAD = "DEAD"
    STALE = "STALE"
    HALTED = "HALTED"
    STOPPED = "STOPPED"
    UNKNOWN = "UNKNOWN"
    UNREADABLE = "UNREADABLE"  # its manifest or one of its files breaks a bound or is not a file; the reason is shown


@dataclass(frozen=True)
class RunObservation:
    """Everything ``classify`` needs, gathered in one place."""

    alive: bool | None  # None: no process information at all
    done: int | None
    expected: int | None
    log_age_s: float | None
    halted: bool = False
    stopped: bool = False
    exit_code: int | None = None  # from the launch shim's exit record, when there is one
    pending: bool = False  # a scheduler job not yet started


def classify(obs: RunObservation, stale_after_s: float) -> RunState:
    if obs.stopped:
        return RunState.STOPPED
    if obs.halted:
        return RunState.HALTED
    if obs.expected and obs.done is not None and obs.done >= obs.expected:
        return RunState.COMPLETE
    if not obs.expected and obs.alive is False and obs.exit_code == 0:
        return RunState.COMPLETE
    if obs.alive is None:
        return RunState.UNKNOWN
    if not obs.alive:
        return RunState.DEAD
    if obs.pending:
        return RunState.PENDING
    if obs.log_age_s is not None and obs.log_age_s > stale_after_s:
        return RunState.STALE
    return RunState.RUNNING


@dataclass(frozen=True)
class RunReport:
    """One row of ``expwatch status``."""

    manifest: RunManifest
    state: RunState
    alive: bool | None
    progress: ProgressFigures | None
    log_age_s: float | None
    progress_note: str = ""
    job: JobState | None = None  # SLURM runs: the job's state and node

    def to_json(self) -> dict:
        p = self.progress
        done = p.done if p else 0
        return {
            "name": self.manifest.name,
            "state": self.state.value,
            "done": done,
            "expected": self.manifest.expected,
            "accuracy": round(p.correct / done, 4) if p and done else None,
            "null_count": p.null_count if p else 0,
            "null_reasons": dict(p.null_reasons) if p else {},
            "pid": self.manifest.shown_pid,
            "alive": self.alive,
            "log_age_s": round(self.log_age_s, 1) if self.log_age_s is not None else None,
            "restarts": self.manifest.restarts,
            "profile": self.manifest.profile,
            "log": self.manifest.log,
            "halted": self.manifest.halted.reason if self.manifest.halted else None,
            "progress_note": self.progress_note or None,
            "runner": self.manifest.runner,
            "job_id": self.manifest.job_id,
            "slurm_state": self.job.state if self.job else None,
            "node": self.job.node if self.job else None,
            "waiting_for_slot": self.manifest.waiting_for_slot,
        }


def log_age(path: str, now: float | None = None) -> float | None:
    """Seconds since the log was written; None when it is absent or cannot be looked at (a symlink loop, no permission)."""
    try:
        return max(0.0, (now or time.time()) - os.stat(path).st_mtime)
    except OSError:
        return None


def exit_code(record_path: Path) -> int | None:
    try:
        record = read_json(record_path)
    except (FileNotFoundError, NotReadyYet):
        return None
    return record.get("returncode") if isinstance(record, dict) else None


def observe(manifest: RunManifest, stale_after_s: float, exit_record: Path | None = None, job: JobState | None = None,
            cache: ProgressCache | None = None) -> RunReport:
    """Everything ``status`` shows of one run.

    ``job``: its SLURM state, asked by the caller for all runs at once;
    ``cache``: figures of unchanged result files, kept across calls.
    """
    note = ""
    try:
        if cache is not None:
            progress = cache.figures(manifest.name, manifest.result, manifest.checkpoint)
        else:
            progress = read_figures(manifest.result, manifest.checkpoint)
    except Unreadable as exc:
        return RunReport(manifest, RunState.UNREADABLE, None, None, log_age(manifest.log), str(exc), job)
    except NotReadyYet as exc:
        progress, note = None, str(exc)
    if manifest.job_id:
        alive = None if job is None or job.state == SLURM_UNKNOWN else job.alive
    else:
        alive = None if manifest.pid is None else verified_process(manifest.pid, manifest.create_time) is not None
    age = log_age(manifest.log)
    obs = RunObservation(
        alive=alive,
        done=progress.done if progress else None,
        expected=manifest.expected,
        log_age_s=age,
        halted=manifest.halted is not None,
        stopped=manifest.stopped_at is not None,
        exit_code=(job.exit_code if job else exit_code(exit_record) if exit_record else None) if alive is False else None,
        pending=job is not None and job.state == PENDING,
    )
    return RunReport(manifest, classify(obs, stale_after_s), alive, progress, age, note, job)


def slurm_states(settings: Settings, manifests: list[RunManifest]) -> tuple[dict[str, JobState], str]:
    """One squeue call for every SLURM run: (states, "") or ({}, why SLURM could not be asked)."""
    jobs = [m.job_id for m in manifests if m.job_id]
    if not jobs:
        return {}, ""
    try:
        return Runners(settings).slurm.job_states(jobs), ""
    except SlurmError as exc:
        return {}, f"SLURM state unknown: {exc}"


def observe_all(layout: ExperimentsLayout, stale_after_s: float, manifests: list[RunManifest] | None = None) -> tuple[list[RunReport], str]:
    """``observe`` for every run of an experiments directory, plus a note when SLURM could not be asked.

    The figures of unchanged result files come from the layout's ``ProgressCache``, saved back after.
    """
    manifests = discover(layout) if manifests is None else manifests
    settings = load_settings(layout)
    jobs, note = slurm_states(settings, manifests)
    cache = ProgressCache(layout, settings.watch.status_cache_after_s)
    reports = [observe(m, stale_after_s, layout.exit_path(m.name), jobs.get(m.job_id or ""), cache) for m in manifests]
    cache.save()
    return reports, note
