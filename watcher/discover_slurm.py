"""SLURM jobs started by hand (``sbatch --output DIR/x.log ...``) that no manifest covers.

One ``squeue`` call lists each of the user's live jobs with its StdOut,
WorkDir and Command; a job whose StdOut is under DIR is a run, inferred the
way ``watcher.discover`` infers a local one (result and expected from the
command's flags, else from the files). Only reads: SLURM's answers and the
batch script.
"""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from expwatch.files import Unreadable, open_regular
from expwatch.manifest import RunManifest
from expwatch.watcher.discover import DiscoveryConfig, Inferred, checkpoint_beside, expected_from, flag_value, under, unique_name

# squeue --Format fields, each ended by '|' (the ':|' suffix; checked with SLURM 22.05).
SQUEUE_FORMAT = "JobID:|,State:|,STDOUT:|,WorkDir:|,Command:|"
NULL = "(null)"  # squeue's spelling of an empty field (Command of an `sbatch --wrap` job)


class SlurmUnavailable(Exception):
    """squeue or scontrol could not be asked; the message says why."""


@dataclass(frozen=True)
class FoundJob:
    """A live SLURM job of this user writing under DIR, with each inferred field's source."""

    job_id: str
    state: str
    argv: tuple[str, ...]
    cwd: str
    name: Inferred
    log: Inferred
    result: Inferred
    checkpoint: Inferred
    expected: Inferred
    argv_source: str

    def fields(self) -> dict[str, dict[str, object]]:
        inferred: dict[str, dict[str, object]] = {k: {"value": getattr(self, k).value, "source": getattr(self, k).source}
                                                  for k in ("name", "log", "result", "checkpoint", "expected")}
        inferred["argv"] = {"value": list(self.argv), "source": self.argv_source}
        inferred["cwd"] = {"value": self.cwd, "source": f"WorkDir of job {self.job_id}"}
        return inferred


def _slurm(argv: list[str], env: dict[str, str], timeout_s: float) -> str:
    try:
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise SlurmUnavailable(f"{argv[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"{argv[0]}: no answer within {timeout_s:g}s") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise SlurmUnavailable(f"{' '.join(argv[:2])}: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    return proc.stdout


def _job_argv(job_id: str, command: str, env: dict[str, str], timeout_s: float) -> tuple[str, ...]:
    """The job's command as a restart must run it through expwatch's ``exec "$@"`` batch script.

    squeue joins the script path and its arguments with spaces (arguments with
    spaces cannot be told apart). The script need not be executable for
    sbatch, so it is run by its own ``#!`` interpreter; an ``sbatch --wrap``
    job (no Command) runs its stored script text with ``sh -c``.
    """
    if command == NULL or not command:
        script = _slurm(["scontrol", "write", "batch_script", job_id, "-"], env, timeout_s)
        return ("sh", "-c", script)
    parts = tuple(command.split())
    first = _first_line(parts[0])
    interpreter = tuple(first[2:].split()) if first.startswith("#!") else ("sh",)
    return (*interpreter, *parts)


def _first_line(path: str, most: int = 4096) -> str:
    """A script's first line, read without blocking (a FIFO) and at most ``most`` bytes (a binary's one "line")."""
    try:
        fd = open_regular(path)
    except (OSError, Unreadable):
        return ""
    try:
        head = os.read(fd, most)
    except OSError:
        head = b""
    finally:
        os.close(fd)
    return head.split(b"\n", 1)[0].decode("utf-8", "replace")


def _launched_by_expwatch(command: str) -> bool:
    """SlurmRunner.launch submits a temporary ``expwatch-NAME-*.sbatch``; its manifest may be a moment from written."""
    script = os.path.basename(command.split()[0]) if command.split() else ""
    return script.startswith("expwatch-") and script.endswith(".sbatch")


def _words(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The words flags are looked for in: an ``sh -c SCRIPT`` (a --wrap job) is split like a shell would."""
    if argv[:2] != ("sh", "-c"):
        return argv
    lines = [line for line in argv[2].splitlines() if line.strip() and not line.lstrip().startswith("#")]
    try:
        return ("sh", *shlex.split(" ".join(lines)))
    except ValueError:  # unbalanced quotes: no flags read rather than wrong ones
        return argv


def scan_jobs(root: Path, manifests: list[RunManifest], config: DiscoveryConfig, env: dict[str, str], timeout_s: float,
              user: str | None = None) -> tuple[FoundJob, ...]:
    """This user's live jobs whose StdOut is under *root* and that no manifest covers; raises SlurmUnavailable."""
    root = Path(root).resolve()
    out = _slurm(["squeue", "-h", "-u", user or getpass.getuser(), "-t", "PENDING,RUNNING,CONFIGURING,SUSPENDED",
                  "-O", SQUEUE_FORMAT], env, timeout_s)
    jobs = {m.job_id for m in manifests if m.job_id}
    owned = {p for m in manifests for p in (m.log, m.result, m.checkpoint) if p}
    taken = {m.name for m in manifests}
    found = []
    for line in out.splitlines():
        parts = line.rstrip("|").split("|")
        if len(parts) != 5:
            continue
        job_id, state, stdout, workdir, command = parts
        if job_id in jobs or stdout in owned or stdout == NULL or not under(stdout, root) or _launched_by_expwatch(command):
            continue
        argv = _job_argv(job_id, command, env, timeout_s)
        words = _words(argv)
        named = flag_value(words, config.result_flags)
        result = (Inferred(os.path.normpath(os.path.join(workdir, named[1])), f"job command {named[0]}") if named
                  else Inferred(None, "none found"))
        checkpoint = checkpoint_beside(result.value)
        found.append(FoundJob(
            job_id=job_id, state=state, argv=argv, cwd=workdir,
            name=unique_name(result.value or stdout, "result" if result.value else "log", taken),
            log=Inferred(stdout, f"StdOut of job {job_id}"), result=result, checkpoint=checkpoint,
            expected=expected_from(words, result.value, checkpoint.value, config),
            argv_source=(f"batch script of job {job_id} (sbatch --wrap), run with sh -c" if command in (NULL, "")
                         else f"Command of job {job_id}, run by its script's #! line"),
        ))
    return tuple(found)
