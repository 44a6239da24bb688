"""The runner interface: the one seam between expwatch and whatever runs jobs.

Rules and the watcher never start or signal processes themselves; actions
ask a runner. Local processes are one implementation; a cluster scheduler
is another that fits the same three verbs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from expwatch.manifest import RunManifest


@dataclass(frozen=True)
class LaunchSpec:
    name: str
    argv: tuple[str, ...]
    cwd: str
    log: str
    env: dict[str, str]
    exit_record: str  # where the run's exit status is written when it ends
    sbatch_args: tuple[str, ...] = ()  # extra sbatch options (SLURM runner only), e.g. ("--time=60",)
    # Marks the launched process or job so a watcher that died between
    # launching and recording it can find it again instead of launching twice.
    launch_token: str = ""


@dataclass(frozen=True)
class Launched:
    # The local process; None for a scheduler job, whose processes live on another machine.
    pid: int | None
    create_time: float | None
    pgid: int | None
    sid: int | None
    job_id: str | None = None  # the scheduler's id for the run (SLURM), else None
    # The command's own process under the launch shim (``pid`` is the shim):
    # the pid users see, ``kill`` and ``ps``. None when it never started or is not local.
    command_pid: int | None = None


@dataclass(frozen=True)
class KillReport:
    signalled: tuple[int, ...] = ()
    killed: tuple[int, ...] = ()  # needed SIGKILL after the grace period
    skipped: str = ""  # why nothing was signalled (gone, PID reused)
    details: dict[str, str] = field(default_factory=dict)


class Runner(Protocol):
    name: str

    def launch(self, spec: LaunchSpec) -> Launched: ...

    def kill(self, manifest: RunManifest, grace_s: float) -> KillReport: ...

    def alive(self, manifest: RunManifest) -> bool: ...

    def find_launched(self, spec: LaunchSpec) -> Launched | None:
        """The process or job launched from ``spec`` (by its ``launch_token``), if it was."""
        ...
