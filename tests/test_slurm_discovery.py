"""A job submitted by hand with ``sbatch --output DIR/x.log`` is found by the watcher and adopted as a SLURM run.

Uses the real single-node cluster of conftest_slurm (skipped, with the reason, where none starts).
"""

from __future__ import annotations

import shlex
import sys

import pytest

from conftest import fast_rules, wait_for
from conftest_slurm import SlurmCluster
from expwatch.cli import main as cli

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def cluster_env(slurm_cluster: SlurmCluster, monkeypatch) -> SlurmCluster:
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    return slurm_cluster


def test_a_job_submitted_by_hand_is_adopted_as_a_slurm_run_and_resubmitted_after_its_death(experiments, cluster_env, tmp_path):
    root = experiments.root
    (root / "expwatch.rules.yaml").write_text(fast_rules())
    script = tmp_path / "eval.sbatch"  # not executable, as sbatch scripts often are not
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m expwatch.demo.fake_eval "$@"\n')
    job = cluster_env.run("sbatch", "--parsable", f"--output={root}/j.log", f"--chdir={root}", str(script), "--items", "10",
                          "--limit", "10", "--delay", "0.4", "--fault", "die:once@6", "--output", "j.json").strip()
    jobs = [job]
    try:
        watcher = experiments.start_watcher()
        record = wait_for(lambda: [r for r in experiments.audit(event="run adopted") if r.get("job_id") == job],
                          timeout=30, what="the job adopted")[0]
        assert record["run"] == "j" and record["via"] == "discovery"
        inferred = {k: (v["value"], v["source"]) for k, v in record["inferred"].items()}
        assert inferred["log"] == (str(root / "j.log"), f"StdOut of job {job}")
        assert inferred["result"] == (str(root / "j.json"), "job command --output")
        assert inferred["expected"] == (10, "argv --limit")
        manifest = experiments.manifest("j")
        assert (manifest.runner, manifest.job_id, manifest.pid, manifest.cwd) == ("slurm", job, None, str(root))
        assert manifest.argv[:2] == ("/bin/sh", str(script))
        wait_for(lambda: experiments.manifest("j").completed_at, timeout=120, what="completion after the resubmission")
        jobs.append(experiments.manifest("j").job_id)
        experiments.stop_watcher(watcher)
        done = experiments.manifest("j")
        assert done.restarts == 1 and done.job_id != job
        assert sorted(experiments.items("j")) == [f"item-{i:04d}" for i in range(10)]
        assert [r["rule"] for r in experiments.audit(run="j", event="incident classified")] == ["DEAD", "COMPLETE"]
        assert "Resuming from checkpoint: 6/10 items done" in (root / "j.log").read_text()
        assert len(experiments.audit(event="run adopted")) == 1
    finally:
        for j in jobs:
            cluster_env.run("scancel", j)


def test_with_suggest_a_job_submitted_by_hand_gets_the_adopt_line_that_adopts_it(experiments, cluster_env, tmp_path):
    root = experiments.root
    with open(root / "expwatch.yaml", "a") as fh:
        fh.write("discover: suggest\n")
    job = cluster_env.run("sbatch", "--parsable", f"--output={root}/s.log", f"--chdir={root}", "--wrap",
                          f"{sys.executable} -m expwatch.demo.fake_eval --items 200 --limit 200 --delay 0.1 --output s.json").strip()
    try:
        watcher = experiments.start_watcher()
        record = wait_for(lambda: experiments.audit(event="run suggested"), timeout=30, what="the suggestion")[0]
        assert record["job_id"] == job and not experiments.layout.manifest_path("s").exists()
        line = record["command"]
        assert line.startswith(f"expwatch adopt --job {job} --name s --log {root / 's.log'}")
        assert cli(shlex.split(line)[1:]) == 0
        manifest = experiments.manifest("s")
        assert (manifest.runner, manifest.job_id, manifest.expected) == ("slurm", job, 200)
        assert manifest.argv[:2] == ("sh", "-c") and "fake_eval" in manifest.argv[2]
        wait_for(lambda: experiments.audit(run="s", event="run discovered"), what="the watcher taking the adopted job")
        experiments.stop_watcher(watcher)
        assert len(experiments.audit(event="run suggested")) == 1
    finally:
        cluster_env.run("scancel", job)
