"""The watcher through a real single-node SLURM: the same rules file heals and halts jobs.

Runs are launched with ``expwatch launch --runner slurm``; their ends come
from SLURM's own completion records (jobcomp/filetxt), read by the same file
watcher that tails logs. Skipped, with the reason, where no cluster starts.
"""

from __future__ import annotations

import sys

import pytest

from conftest import fast_rules, wait_for
from conftest_slurm import SlurmCluster
from expwatch.cli import main as cli

pytestmark = pytest.mark.timeout(600)
ITEMS = [f"item-{i:04d}" for i in range(12)]


@pytest.fixture
def cluster_env(slurm_cluster: SlurmCluster, monkeypatch) -> SlurmCluster:
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    return slurm_cluster


def launch_job(experiments, name: str, *eval_args: str, items: int = 12, delay: float = 0.1, sbatch: tuple[str, ...] = ()):
    result = experiments.root / f"{name}.json"
    argv = ["launch", "--runner", "slurm", *[f"--sbatch={a}" for a in sbatch], "--name", name,
            "--log", str(experiments.root / f"{name}.log"), "--result", str(result), "--expected", str(items),
            "--dir", str(experiments.root), "--", sys.executable, "-m", "expwatch.demo.fake_eval", "--items", str(items),
            "--output", str(result), "--delay", str(delay), *eval_args]
    assert cli(argv) == 0
    manifest = experiments.manifest(name)
    assert manifest.runner == "slurm" and manifest.job_id and manifest.pid is None
    return manifest


def classified(experiments, run: str) -> list[str]:
    return [r["rule"] for r in experiments.audit(run=run, event="incident classified")]


def test_a_job_that_dies_once_is_resubmitted_and_completes_and_one_that_always_dies_is_halted(experiments, cluster_env):
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())  # the very file the local tests use
    watcher = experiments.start_watcher()
    first = launch_job(experiments, "dies-once", "--fault", "die@4")
    launch_job(experiments, "always-dies", "--fault", "die:always@4")
    wait_for(lambda: experiments.manifest("dies-once").completed_at, timeout=90, what="dies-once to complete")
    wait_for(lambda: experiments.manifest("always-dies").halted, timeout=90, what="always-dies to halt")
    experiments.stop_watcher(watcher)
    done = experiments.manifest("dies-once")
    assert done.restarts == 1 and done.job_id != first.job_id
    assert sorted(experiments.items("dies-once")) == ITEMS
    assert classified(experiments, "dies-once") == ["DEAD", "COMPLETE"]
    exits = experiments.audit(run="dies-once", event="process exited")
    assert exits[0]["job_id"] == first.job_id and exits[0]["job_state"] == "FAILED" and exits[0]["returncode"] == 3
    assert exits[0]["node"] == cluster_env.node
    assert classified(experiments, "always-dies") == ["DEAD", "DEAD"]
    assert experiments.manifest("always-dies").restarts == 1


def test_a_job_cancelled_by_hand_is_reported_and_not_fought(experiments, cluster_env, capsys):
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())
    watcher = experiments.start_watcher()
    manifest = launch_job(experiments, "cancelled", items=400, delay=0.2)
    wait_for(lambda: (experiments.root / "cancelled.json").exists(), timeout=30, what="the job to start")
    cluster_env.run("scancel", manifest.job_id)
    exited = wait_for(lambda: experiments.audit(run="cancelled", event="process exited"), timeout=30, what="the exit")
    experiments.stop_watcher(watcher)
    assert exited[0]["job_state"] == "CANCELLED"
    assert classified(experiments, "cancelled") == []
    assert experiments.manifest("cancelled").restarts == 0
    capsys.readouterr()
    assert cli(["status", str(experiments.root)]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("cancelled")][0]
    assert f"j{manifest.job_id}" in row and "CANCELLED" in row


def test_a_job_past_its_time_limit_is_resubmitted_and_resumes_from_its_checkpoint(experiments, cluster_env):
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())
    watcher = experiments.start_watcher()
    # 40 s of work: longer than the controller's 30 s time-limit sweep, shorter than the 1-minute limit.
    first = launch_job(experiments, "slow", items=160, delay=0.25, sbatch=("--time=1",))
    wait_for(lambda: (experiments.root / "slow.json").exists(), timeout=30, what="the job to start")
    # Limits are whole minutes; cutting the limit to zero makes the next time-limit sweep end it.
    cluster_env.run("scontrol", "update", f"JobId={first.job_id}", "TimeLimit=0")
    wait_for(lambda: experiments.manifest("slow").completed_at, timeout=150, what="completion after TIMEOUT")
    experiments.stop_watcher(watcher)
    assert classified(experiments, "slow") == ["TIMEOUT", "COMPLETE"]
    assert experiments.manifest("slow").sbatch_args == ("--time=1",)
    assert sorted(experiments.items("slow")) == [f"item-{i:04d}" for i in range(160)]
    log = (experiments.root / "slow.log").read_text()
    assert "Resuming from checkpoint" in log
