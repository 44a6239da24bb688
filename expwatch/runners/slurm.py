"""Runs evaluations as SLURM batch jobs, behind the same three verbs as local runs.

Submitting
    ``sbatch --parsable`` of a fixed batch script, ``exec "$@"``, with the
    run's argv as the script's arguments. sbatch stores them as an argv array
    and slurmstepd passes them to the script with execve, so no shell parses
    user text: ``--wrap`` would (it is one shell string), and a JSON argv file
    read by a Python launcher would need a file and a Python that the compute
    node sees. sbatch runs with the run's whole environment and
    ``--export=ALL``, so override values containing ',' or '=' arrive as they
    are (``--export=ALL,K=V`` splits on commas). The run's ``sbatch_args``
    come first; expwatch's own options come after and win, because the
    watcher depends on the job's log, cwd and environment.

Knowing the state
    From SLURM, never psutil: the job's processes live on a node. One
    ``squeue`` call answers for every asked job (live ones, and ended ones
    until the controller forgets them after MinJobAge); how a job ended, with
    its exit code, comes from the jobcomp/filetxt file, which never forgets.
    sacct is not used: it needs accounting storage, which small clusters lack.

Killing
    ``scancel --full --signal=TERM`` (without ``--full`` the batch script and
    so the run never sees the signal), up to the grace period for it to end,
    then ``scancel``, which ends the job for good (SIGKILL after the cluster's
    KillWait) and marks it CANCELLED.

Restarting
    Like local runs: kill if alive, then a new ``sbatch`` of the manifest's
    argv with its current env overrides and sbatch_args, so a new job id. Not
    ``scontrol requeue``: that replays the environment captured at the first
    submission (an override changed by a rule would be lost), works on an
    ended job only until MinJobAge purges it, needs a requeueable job, and
    keeps the id, so the old completion record and the new run would share it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from expwatch.manifest import RunManifest
from expwatch.runners.base import KillReport, LaunchSpec, Launched
from expwatch.runners.jobcomp import JobCompFollower, JobCompRecord
from expwatch.slurm_states import ALIVE_STATES, COMPLETING, PENDING, UNKNOWN

BATCH_SCRIPT = """#!/bin/sh
# Submitted by expwatch: run this script's arguments as the command, unparsed.
exec "$@"
"""

# The job comment that carries a launch token (see LaunchSpec.launch_token).
COMMENT_PREFIX = "expwatch-launch:"



class SlurmError(OSError):
    """A SLURM command failed or did not answer; the message names the command."""


@dataclass(frozen=True)
class JobState:
    state: str  # SLURM's word: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, ...
    exit_code: int | None = None  # known once the job ended and its completion record was read
    signal: int | None = None
    node: str | None = None

    @property
    def alive(self) -> bool:
        return self.state in ALIVE_STATES

    @property
    def settled(self) -> bool:
        """Ended, and nothing of it is left to clean up on the node."""
        return not self.alive and self.state != COMPLETING


class SlurmRunner:
    name = "slurm"

    def __init__(
        self,
        slurm_conf: str | Path | None = None,
        jobcomp: str | Path | None = None,
        poll_s: float = 0.25,
        command_timeout_s: float = 30.0,
    ):
        """``slurm_conf``: the cluster's slurm.conf when not the default (sets SLURM_CONF for every
        SLURM command). ``jobcomp``: the jobcomp/filetxt file; by default asked from ``scontrol show config``."""
        self._extra_env = {"SLURM_CONF": str(slurm_conf)} if slurm_conf else {}
        self._jobcomp_path = Path(jobcomp) if jobcomp else None
        self._poll_s = poll_s
        self._timeout_s = command_timeout_s
        self._config: dict[str, str] | None = None
        # The engine loop asks from its squeue thread and actions from theirs.
        self._lock = threading.Lock()
        self._follower: JobCompFollower | None = None
        self._ended: dict[str, JobCompRecord] = {}

    # ----- the Runner verbs ------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> Launched:
        for arg in spec.sbatch_args:
            if not arg.startswith("-"):
                raise SlurmError(f"sbatch option {arg!r} for run {spec.name!r} does not start with '-'; sbatch would take it for the script")
        output = sbatch_output_path(spec.log)
        log_dir = os.path.dirname(spec.log)
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
        try:
            os.unlink(spec.exit_record)  # a local run's record would tell a stale story
        except FileNotFoundError:
            pass
        # sbatch copies the script into the controller at submission, so it can go at once.
        with tempfile.NamedTemporaryFile("w", prefix=f"expwatch-{spec.name}-", suffix=".sbatch", delete=False) as fh:
            fh.write(BATCH_SCRIPT)
        try:
            argv = [
                "sbatch", "--parsable", *spec.sbatch_args,
                f"--job-name={spec.name}", f"--chdir={spec.cwd}",
                f"--output={output}", f"--error={output}", "--open-mode=append", "--export=ALL",
                *([f"--comment={COMMENT_PREFIX}{spec.launch_token}"] if spec.launch_token else []),
                fh.name, *spec.argv,
            ]
            out = self._run(argv, env={**spec.env, **self._extra_env})
        finally:
            os.unlink(fh.name)
        job_id = out.split(";")[0].strip()  # --parsable prints "ID" or "ID;CLUSTER"
        if not job_id.isdigit():
            raise SlurmError(f"sbatch for run {spec.name!r} printed {out.strip()!r}, not a job id")
        return Launched(pid=None, create_time=None, pgid=None, sid=None, job_id=job_id)

    def alive(self, manifest: RunManifest) -> bool:
        return self.state(manifest).alive

    def find_launched(self, spec: LaunchSpec) -> Launched | None:
        out = self._run(["squeue", "-h", "-t", "all", f"--name={spec.name}", "-o", "%i|%k"])
        for line in out.splitlines():
            job, _, comment = line.strip().partition("|")
            if comment == f"{COMMENT_PREFIX}{spec.launch_token}" and job.isdigit():
                return Launched(pid=None, create_time=None, pgid=None, sid=None, job_id=job)
        return None

    def kill(self, manifest: RunManifest, grace_s: float) -> KillReport:
        job = manifest.job_id
        if not job:
            return KillReport(skipped="no SLURM job id in the manifest")
        before = self.job_states([job])[job]
        if not before.alive:
            return KillReport(skipped=f"job {job} already ended ({before.state})", details={"job_id": job, "state": before.state})
        details = {"job_id": job, "state_before": before.state}
        if before.state == PENDING:
            # Nothing runs yet, so there is nothing to let finish: cancel outright.
            self._scancel(job)
            after = self._wait_settled(job, self._kill_wait_s() + 10)
            return KillReport(signalled=(int(job),), details={**details, "state": after.state})
        self._scancel(job, "--full", "--signal=TERM")
        after = self._wait_settled(job, grace_s)
        killed: tuple[int, ...] = ()
        if after.alive:
            self._scancel(job)
            killed = (int(job),)
            after = self._wait_settled(job, self._kill_wait_s() + 10)
        return KillReport(signalled=(int(job),), killed=killed, details={**details, "state": after.state})

    # ----- state -----------------------------------------------------------------------

    def state(self, manifest: RunManifest) -> JobState:
        if not manifest.job_id:
            return JobState(UNKNOWN)
        return self.job_states([manifest.job_id])[manifest.job_id]

    def job_states(self, job_ids: list[str] | tuple[str, ...]) -> dict[str, JobState]:
        """The state of every job, with one ``squeue`` call whatever their number.

        Raises SlurmError when the controller cannot be asked: "unknown" would
        read as "ended" and get a live run started twice.
        """
        ids = list(dict.fromkeys(str(j) for j in job_ids if j))
        if not ids:
            return {}
        queued = self._squeue(ids)
        ended = self.completion_records()
        states = {}
        for job in ids:
            seen, record = queued.get(job), ended.get(job)
            if seen is not None and not seen.settled:
                if record is not None and seen.state == COMPLETING:
                    seen = JobState(COMPLETING, record.exit_code, record.signal, seen.node or record.node)
                states[job] = seen
            elif record is not None and record.final:
                states[job] = JobState(record.state, record.exit_code, record.signal, record.node)
            else:
                states[job] = seen or JobState(UNKNOWN)
        return states

    @property
    def jobcomp_path(self) -> Path | None:
        """The jobcomp/filetxt file the cluster writes, or None if it writes none (for the file watcher)."""
        if self._jobcomp_path is None:
            config = self._cluster_config()
            if config.get("JobCompType") == "jobcomp/filetxt" and config.get("JobCompLoc"):
                self._jobcomp_path = Path(config["JobCompLoc"])
        return self._jobcomp_path

    # ----- SLURM commands --------------------------------------------------------------

    def _run(self, argv: list[str], env: dict[str, str] | None = None, ok_errors: tuple[str, ...] = ()) -> str:
        try:
            proc = subprocess.run(
                argv, env=env if env is not None else {**os.environ, **self._extra_env},
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=self._timeout_s,
            )
        except FileNotFoundError:
            raise SlurmError(f"{argv[0]}: command not found; is SLURM installed and on PATH?") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{argv[0]}: no answer within {self._timeout_s:g}s; is slurmctld up?") from None
        if proc.returncode != 0 and not any(text in proc.stderr for text in ok_errors):
            detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit status {proc.returncode}"
            raise SlurmError(f"{' '.join(argv[:2])}: {detail}")
        return proc.stdout

    def _squeue(self, ids: list[str]) -> dict[str, JobState]:
        # squeue exits 1 when a single asked id is unknown (already purged); that is an answer.
        out = self._run(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%N"], ok_errors=("Invalid job id",))
        seen = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[0]:
                seen[parts[0]] = JobState(parts[1], node=parts[2] or None)
        return seen

    def _scancel(self, job: str, *options: str) -> None:
        # A job that ends between our look and the signal is what we wanted.
        self._run(["scancel", *options, job], ok_errors=("already completing or completed", "Invalid job id"))

    def _wait_settled(self, job: str, timeout_s: float) -> JobState:
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.job_states([job])[job]
            if state.settled or time.monotonic() >= deadline:
                return state
            time.sleep(self._poll_s)

    def _cluster_config(self) -> dict[str, str]:
        if self._config is None:
            config = {}
            for line in self._run(["scontrol", "show", "config"]).splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    config[key.strip()] = value.strip()
            self._config = config
        return self._config

    def _kill_wait_s(self) -> float:
        words = self._cluster_config().get("KillWait", "30 sec").split()
        return float(words[0]) if words and words[0].isdigit() else 30.0

    def completion_records(self) -> dict[str, JobCompRecord]:
        """Every job's latest completion record, read on from where the last call stopped.

        The one follower of the cluster's file: ``job_states`` and the engine
        loop (on a watchdog event for the file) both read through it.
        """
        path = self.jobcomp_path
        if path is None:
            return {}
        with self._lock:
            if self._follower is None:
                self._follower = JobCompFollower(path)
            for record in self._follower.read_new():
                self._ended[record.job_id] = record  # a requeued job's later record replaces the earlier
            self._follower.drain_notes()
            return dict(self._ended)


def sbatch_output_path(log: str) -> str:
    """``log`` as sbatch's --output must spell it to mean exactly that file.

    sbatch expands '%j', '%x', ... in output paths, unless the path contains a
    backslash, in which case it drops every backslash and expands nothing.
    """
    if "\\" in log:
        raise SlurmError(f"log path {log!r} contains a backslash, which sbatch removes from --output paths; choose another log path")
    return log.replace("%", "\\%", 1)
