"""Taking over a live process as a run: ``adopt``, ``monitor`` and discovery share this.

The live process is the only faithful record of how it was started, so
argv, cwd and environment are read from it (``/proc``) rather than asked of
the user; the environment is stored only where it differs from ours, so a
restart by a watcher with another environment reproduces the run's own.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from expwatch.layout import ExperimentsLayout
from expwatch.manifest import ManifestError, RunManifest, discover, save_manifest, validate_name
from expwatch.processes import CREATE_TIME_TOLERANCE_S
from expwatch.run_options import now_iso
from expwatch.settings import Settings
from expwatch.watcher.discover import DiscoveryConfig, FoundRun, scan
from expwatch.watcher.discover_slurm import FoundJob


class ProcessUnreadable(Exception):
    """The pid is gone, not ours to read, or has no command line; the message says which."""


@dataclass(frozen=True)
class ProcessRecord:
    """What a manifest needs of a live process, read in one go."""

    pid: int
    argv: tuple[str, ...]
    cwd: str
    environ: dict[str, str]
    create_time: float
    pgid: int
    sid: int


def read_process(pid: int) -> ProcessRecord:
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            record = ProcessRecord(pid, tuple(proc.cmdline()), proc.cwd(), proc.environ(), proc.create_time(),
                                   os.getpgid(pid), os.getsid(pid))
    except (psutil.NoSuchProcess, ProcessLookupError):
        raise ProcessUnreadable(f"no process with pid {pid}") from None
    except (psutil.AccessDenied, PermissionError):
        raise ProcessUnreadable(f"not allowed to read pid {pid}'s command line and environment") from None
    if not record.argv:
        raise ProcessUnreadable(f"pid {pid} has no command line (a kernel thread or a zombie)")
    return record


def env_difference(theirs: dict[str, str], ours: dict[str, str], ignore: set[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """(overrides, unset): what to apply to *ours* to get *theirs*."""
    overrides = {k: v for k, v in theirs.items() if k not in ignore and ours.get(k) != v}
    unset = tuple(sorted(k for k in ours if k not in theirs and k not in ignore))
    return overrides, unset


def adopted_manifest(record: ProcessRecord, settings: Settings, name: str, log: str, result: str | None,
                     checkpoint: str | None, expected: int | None, profile: str) -> RunManifest:
    overrides, unset = env_difference(record.environ, dict(os.environ), set(settings.adopt.ignore_env))
    return RunManifest(
        name=name, argv=record.argv, cwd=record.cwd, log=log, env_overrides=overrides, env_unset=unset,
        result=result, checkpoint=checkpoint, expected=expected, pid=record.pid, create_time=record.create_time,
        # A process that does not lead its group shares it (several evals `&`-ed from one script):
        # a group kill would take its siblings too, so only its own tree is the run's.
        pgid=record.pgid if record.pgid == record.pid else None, sid=record.sid, launched_at=now_iso(),
        profile=profile, adopted=True,
    )


def adopt_found(layout: ExperimentsLayout, settings: Settings, found: FoundRun, overrides: dict | None = None,
                profile: str | None = None) -> tuple[RunManifest, Path]:
    """Write the manifest of a discovered run; *overrides* (name/log/result/checkpoint/expected) win over inference.

    Raises ProcessUnreadable when the process ended or changed since it was found.
    """
    record = read_process(found.pid)
    if abs(record.create_time - found.create_time) > CREATE_TIME_TOLERANCE_S:
        raise ProcessUnreadable(f"pid {found.pid} is another process than the one found")
    values = {k: v["value"] for k, v in found.fields().items()}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    manifest = adopted_manifest(record, settings, validate_name(values["name"]), values["log"], values["result"],
                                values["checkpoint"], values["expected"], settings.profile(profile).name)
    return manifest, save_manifest(layout, manifest)


def slurm_environment(settings: Settings) -> dict[str, str]:
    """The environment SLURM commands run with: ours, plus ``slurm.conf`` when set."""
    conf = settings.slurm.conf
    return {**os.environ, **({"SLURM_CONF": str(conf)} if conf else {})}


def adopt_job(layout: ExperimentsLayout, settings: Settings, found: FoundJob, overrides: dict | None = None,
              profile: str | None = None) -> tuple[RunManifest, Path]:
    """Write the manifest of a discovered SLURM job: a SLURM run, restarted by a new ``sbatch`` of its command.

    The job's own sbatch options are not readable back faithfully, so a restart
    uses the cluster's defaults (add them with ``sbatch_args`` in the manifest).
    """
    values = {k: v["value"] for k, v in found.fields().items()}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    manifest = RunManifest(
        name=validate_name(values["name"]), argv=found.argv, cwd=found.cwd, log=values["log"], result=values["result"],
        checkpoint=values["checkpoint"], expected=values["expected"], launched_at=now_iso(),
        profile=settings.profile(profile).name, runner="slurm", job_id=found.job_id, adopted=True,
    )
    return manifest, save_manifest(layout, manifest)


def adopt_command_line(layout: ExperimentsLayout, found: FoundRun | FoundJob) -> str:
    """The exact ``expwatch adopt`` line that records *found* as it was inferred."""
    which = ["--job", found.job_id] if isinstance(found, FoundJob) else ["--pid", str(found.pid)]
    argv = ["expwatch", "adopt", *which, "--name", found.name.value, "--log", found.log.value]
    if found.result.value:
        argv += ["--result", found.result.value]
    if found.checkpoint.value:
        argv += ["--checkpoint", found.checkpoint.value]
    if found.expected.value:
        argv += ["--expected", str(found.expected.value)]
    argv += ["--dir", str(layout.root)]
    return shlex.join(argv)


def writers_of(layout: ExperimentsLayout, settings: Settings, log: str | None, result: str | None) -> list[FoundRun]:
    """Unrecorded processes writing *log* or naming *result* (as discovery finds them).

    A command, unlike the watcher, has nothing else to do: it reads every process, unbounded.
    """
    config = replace(DiscoveryConfig.from_settings(settings), budget_s=float("inf"))
    found = scan(layout.root, discover(layout), config).found
    return [f for f in found if (log and f.log.value == log) or (result and f.result.value == result)]


def find_writer(layout: ExperimentsLayout, settings: Settings, log: str | None, result: str | None) -> FoundRun:
    """The one unrecorded process writing *log* or naming *result*; ManifestError when none or several."""
    matches = writers_of(layout, settings, log, result)
    wanted = " or ".join(f"{what} {path}" for what, path in (("writing", log), ("naming", result)) if path)
    if not matches:
        raise ManifestError(f"no process of yours without a manifest is {wanted} under {layout.root}")
    if len(matches) > 1:
        pids = ", ".join(str(f.pid) for f in matches)
        raise ManifestError(f"several processes are {wanted} (pids {pids}); pick one with --pid")
    return matches[0]


def inferred_lines(found: FoundRun, given: dict[str, object]) -> list[str]:
    """One line per manifest field: its value and where it came from (given on the command line wins)."""
    lines = []
    for key, field in found.fields().items():
        if given.get(key) is not None:
            lines.append(f"  {key:<10} {given[key]}  (given)")
        else:
            value = field["value"]
            text = shlex.join(value) if isinstance(value, list) else "-" if value is None else value
            lines.append(f"  {key:<10} {text}  ({field['source']})")
    return lines
