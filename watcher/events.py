"""Typed events: the only thing the watcher hands to the rules stage.

Every source (the file observer, process-exit waiter, timers, health
probes) puts one of these on the single queue that the engine thread
drains; the log and progress readers, which the engine loop calls on a file
event, hand it ``LogLine`` and ``Progress``. They are frozen so nothing downstream can edit
evidence after the fact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FileChanged:
    """watchdog saw a create/modify/move/delete under a watched directory."""

    path: Path


@dataclass(frozen=True)
class LogLine:
    """One complete line of a run's log (tail semantics)."""

    run: str
    path: str
    offset: int
    text: str
    replay: bool = False  # history read on first sight: rebuilds counters, triggers nothing


@dataclass(frozen=True)
class Progress:
    """What the run's result/checkpoint files say now."""

    run: str
    done: int
    expected: int | None
    correct: int
    null_count: int
    null_reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessExit:
    """The run's process (or SLURM job) is gone; returncode/signal when they can be known."""

    run: str
    pid: int | None
    returncode: int | None = None
    signal: int | None = None
    job_id: str | None = None  # SLURM runs: which job ended, how, and where
    job_state: str | None = None
    node: str | None = None
    oom_killed: bool | None = None  # the kernel log names the pid as OOM-killed; None: not asked or unreadable


@dataclass(frozen=True)
class Deadline:
    """A timer set by the engine thread came due (silence, settle, wait)."""

    run: str
    purpose: str
    token: int


@dataclass(frozen=True)
class ProbeResult:
    """One health-probe attempt for a backend profile."""

    profile: str
    url: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Shutdown:
    """Ask the engine thread to stop (SIGINT/SIGTERM)."""

    reason: str = "signal"
