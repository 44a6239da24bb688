"""A real single-node SLURM cluster for the tests that need one.

``slurm_cluster`` (session scope) starts munged, slurmctld and slurmd with
``scripts/slurm-up.sh`` in a fresh folder under /tmp (the munge user must be
able to reach it, which pytest's 0700 tmp folders do not allow) and stops
exactly those daemons at the end. Where that is impossible (not root, no
apt-get, daemons that do not start) every test using it is skipped with the
reason. Import the fixtures from a test module; they are not in conftest.py
so that other tests never start a cluster.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from expwatch.runners.slurm import SlurmRunner
from expwatch.runners.jobcomp import JobCompFollower, JobCompRecord

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
UP_TIMEOUT_S = 900  # includes installing slurm-wlm and munge on a fresh machine


@dataclass
class SlurmCluster:
    state_dir: Path

    @property
    def conf(self) -> Path:
        return self.state_dir / "slurm.conf"

    @property
    def node(self) -> str:
        return socket.gethostname().split(".")[0]

    @property
    def jobcomp(self) -> Path:
        return self.state_dir / "jobcomp.txt"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str) -> str:
        """A SLURM command against this cluster (scancel, scontrol, ...); its stdout."""
        proc = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"{' '.join(argv)} failed: {proc.stderr.strip()}"
        return proc.stdout

    def runner(self) -> SlurmRunner:
        return SlurmRunner(slurm_conf=self.conf, poll_s=0.1)

    def completion(self, job_id: str, timeout: float = 30.0) -> JobCompRecord:
        """The job's final completion record, waiting for it to be written."""
        follower = JobCompFollower(self.jobcomp)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for record in follower.read_new():
                    if record.job_id == job_id and record.final:
                        return record
                time.sleep(0.1)
        finally:
            follower.close()
        raise AssertionError(f"no completion record for job {job_id} in {self.jobcomp} after {timeout}s")

    def wait_state(self, job_id: str, *states: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T").strip()
            if state in states:
                return state
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} is {state or 'unknown'}, not {'/'.join(states)}, after {timeout}s")


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("a private SLURM cluster needs root (slurmd and munged are started by scripts/slurm-up.sh)")
    state_dir = Path(tempfile.mkdtemp(prefix="expwatch-slurm-", dir="/tmp"))
    try:
        up = subprocess.run([str(SCRIPTS / "slurm-up.sh"), str(state_dir)], capture_output=True, text=True, timeout=UP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        up = None
    if up is None or up.returncode != 0:
        subprocess.run([str(SCRIPTS / "slurm-down.sh"), str(state_dir)], capture_output=True, timeout=120)
        why = "timed out" if up is None else (up.stderr.strip().splitlines() or ["no message"])[-1]
        shutil.rmtree(state_dir, ignore_errors=True)
        pytest.skip(f"single-node SLURM could not be started by scripts/slurm-up.sh: {why}")
    try:
        yield SlurmCluster(state_dir)
    finally:
        down = subprocess.run([str(SCRIPTS / "slurm-down.sh"), str(state_dir)], capture_output=True, text=True, timeout=120)
        if down.returncode == 0:
            shutil.rmtree(state_dir, ignore_errors=True)
