"""Runs submitted through a real single-node SLURM: how they end is read back from SLURM.

Every test here drives slurmctld and slurmd started by scripts/slurm-up.sh
(see conftest_slurm.py); they are skipped, with the reason, where no cluster
can be started. The parser tests at the end need no cluster.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import wait_for
from conftest_slurm import SlurmCluster
from expwatch.manifest import RunManifest
from expwatch.runners.base import LaunchSpec
from expwatch.runners.slurm import JobState, SlurmError, SlurmRunner, sbatch_output_path
from expwatch.runners.jobcomp import JobCompFollower, parse_record

# The first test also starts the cluster, which installs slurm-wlm and munge on
# a machine that lacks them; every wait inside the tests is bounded on its own.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def cluster(slurm_cluster: SlurmCluster) -> SlurmCluster:
    return slurm_cluster


@pytest.fixture
def runner(cluster: SlurmCluster) -> SlurmRunner:
    return cluster.runner()


def submit(runner: SlurmRunner, tmp_path: Path, name: str, argv: tuple[str, ...], *, env: dict[str, str] | None = None,
           sbatch_args: tuple[str, ...] = (), cwd: Path | None = None, log: Path | None = None) -> RunManifest:
    overrides = env or {}
    spec = LaunchSpec(
        name=name, argv=argv, cwd=str(cwd or tmp_path), log=str(log or tmp_path / f"{name}.log"),
        env={**os.environ, **overrides}, exit_record=str(tmp_path / f"{name}.exit.json"), sbatch_args=sbatch_args,
    )
    launched = runner.launch(spec)
    assert launched.pid is None and launched.job_id and launched.job_id.isdigit()
    return RunManifest(name=name, argv=argv, cwd=spec.cwd, log=spec.log, env_overrides=overrides, runner="slurm",
                       job_id=launched.job_id, sbatch_args=sbatch_args)


def fake_eval(tmp_path: Path, name: str, *args: str, items: int = 10) -> tuple[str, ...]:
    return (sys.executable, "-m", "expwatch.demo.fake_eval", "--items", str(items), "--output", str(tmp_path / f"{name}.json"),
            "--delay", "0.05", *args)


def log_text(run: RunManifest) -> str:
    """The run's log so far; slurmstepd creates it only once the job is running."""
    try:
        return Path(run.log).read_text()
    except FileNotFoundError:
        return ""


def settled(runner: SlurmRunner, manifest: RunManifest) -> JobState:
    return wait_for(lambda: (s := runner.state(manifest)).settled and s, timeout=30, what=f"job {manifest.job_id} to settle")


# ----- how runs end ----------------------------------------------------------------


def test_eval_run_through_slurm_completes_and_its_completion_record_says_so(cluster, runner, tmp_path):
    run = submit(runner, tmp_path, "ok", fake_eval(tmp_path, "ok"))
    assert runner.alive(run)  # pending or running: SLURM knows it at once

    record = cluster.completion(run.job_id)

    assert (record.state, record.exit_code, record.signal, record.name, record.node) == ("COMPLETED", 0, None, "ok", cluster.node)
    result = json.loads((tmp_path / "ok.json").read_text())
    assert len(result["per_item"]) == 10
    assert "Evaluation complete: 10 items" in log_text(run)
    assert settled(runner, run) == JobState("COMPLETED", 0, None, cluster.node)
    assert not runner.alive(run)


def test_eval_that_dies_is_failed_with_its_exit_code(cluster, runner, tmp_path):
    run = submit(runner, tmp_path, "dies", fake_eval(tmp_path, "dies", "--fault", "die@3"))

    record = cluster.completion(run.job_id)

    assert (record.state, record.exit_code, record.returncode, record.signal) == ("FAILED", 3, 3, None)
    assert settled(runner, run) == JobState("FAILED", 3, None, cluster.node)


def test_run_cancelled_by_hand_is_cancelled(cluster, runner, tmp_path):
    run = submit(runner, tmp_path, "byhand", fake_eval(tmp_path, "byhand", "--fault", "hang@0"))
    cluster.wait_state(run.job_id, "RUNNING")

    cluster.run("scancel", run.job_id)

    assert cluster.completion(run.job_id).state == "CANCELLED"
    assert settled(runner, run).state == "CANCELLED"
    assert not runner.alive(run)


# ----- the runner's verbs ----------------------------------------------------------


def test_kill_sends_sigterm_and_a_run_that_obeys_ends_by_it(cluster, runner, tmp_path):
    run = submit(runner, tmp_path, "polite", fake_eval(tmp_path, "polite", "--fault", "hang@0"))
    # RUNNING comes with the allocation, a moment before the node starts the script.
    wait_for(lambda: "Starting evaluation" in log_text(run), what="the run to start")

    report = runner.kill(run, grace_s=10)

    assert report.signalled == (int(run.job_id),) and report.killed == ()
    record = cluster.completion(run.job_id)
    assert (record.state, record.signal, record.returncode) == ("FAILED", 15, None)  # ended by the signal itself
    assert runner.kill(run, grace_s=1).skipped.startswith(f"job {run.job_id} already ended")


def test_kill_cancels_a_run_that_ignores_sigterm_after_the_grace_period(cluster, runner, tmp_path):
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(300)"
    run = submit(runner, tmp_path, "stubborn", (sys.executable, "-c", stubborn))
    cluster.wait_state(run.job_id, "RUNNING")
    wait_for(lambda: "up" in log_text(run), what="the run to ignore SIGTERM")

    report = runner.kill(run, grace_s=1)

    assert report.signalled == (int(run.job_id),) and report.killed == (int(run.job_id),)
    assert report.details["state"] == "CANCELLED"
    assert cluster.completion(run.job_id).state == "CANCELLED"


def test_pending_run_is_alive_and_kill_cancels_it(cluster, runner, tmp_path):
    run = submit(runner, tmp_path, "held", fake_eval(tmp_path, "held"), sbatch_args=("--hold",))
    assert runner.state(run).state == "PENDING" and runner.alive(run)

    report = runner.kill(run, grace_s=5)

    assert report.details == {"job_id": run.job_id, "state_before": "PENDING", "state": "CANCELLED"}
    record = cluster.completion(run.job_id)
    assert (record.state, record.node) == ("CANCELLED", None)
    assert not (tmp_path / "held.log").exists()  # it never ran


def test_argv_and_env_arrive_literally_without_a_shell(cluster, runner, tmp_path):
    pwned = tmp_path / "pwned"
    weird = ["two words", "\"double\" 'single'", f"$(touch {pwned})", f"`touch {pwned}`", "semi;colon && echo",
             "new\nline", "", "*", "--not-an-option", "100%j"]
    env = {"EXPWATCH_LITERAL": f"a,b=c d $(touch {pwned}) $HOME 'q'", "EXPWATCH_EMPTY": ""}
    show = ("import json, os, sys; json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(), "
            "'env': {k: os.environ.get(k) for k in ('EXPWATCH_LITERAL', 'EXPWATCH_EMPTY')}}, open('seen.json', 'w'))")
    cwd = tmp_path / "cwd with space"
    cwd.mkdir()
    log = tmp_path / "log dir" / "run 100%j %x.log"

    run = submit(runner, tmp_path, "literal", (sys.executable, "-c", show, *weird), env=env, cwd=cwd, log=log)

    record = cluster.completion(run.job_id)
    assert (record.state, record.work_dir) == ("COMPLETED", str(cwd))
    seen = json.loads((cwd / "seen.json").read_text())
    assert seen == {"argv": weird, "cwd": str(cwd), "env": env}
    assert not pwned.exists()
    assert log.exists()  # sbatch's %j/%x patterns were not expanded


def test_job_states_answers_for_every_run_with_one_squeue_call(cluster, runner, tmp_path):
    done = submit(runner, tmp_path, "done", fake_eval(tmp_path, "done", items=2))
    cluster.completion(done.job_id)
    running = submit(runner, tmp_path, "running", fake_eval(tmp_path, "running", "--fault", "hang@0"))
    cluster.wait_state(running.job_id, "RUNNING")
    assert runner.jobcomp_path == cluster.jobcomp  # asked of the cluster once, before counting
    calls = []
    real_run = runner._run
    runner._run = lambda argv, **kw: calls.append(argv[0]) or real_run(argv, **kw)

    states = runner.job_states([done.job_id, running.job_id, "999999"])

    assert calls == ["squeue"]
    assert states[running.job_id] == JobState("RUNNING", node=cluster.node)
    assert states[done.job_id].state in ("COMPLETED", "COMPLETING") and states[done.job_id].exit_code == 0
    assert states["999999"] == JobState("UNKNOWN")
    runner.kill(running, grace_s=5)


def test_completion_records_are_followed_from_a_saved_position(cluster, runner, tmp_path):
    first = submit(runner, tmp_path, "first", ("true",))
    cluster.completion(first.job_id)
    follower = JobCompFollower(cluster.jobcomp)
    assert first.job_id in {r.job_id for r in follower.read_new()}
    position = follower.position
    follower.close()

    second = submit(runner, tmp_path, "second", ("false",))
    cluster.completion(second.job_id)
    resumed = JobCompFollower(cluster.jobcomp, position)
    records = resumed.read_new()
    resumed.close()

    assert [(r.job_id, r.state, r.exit_code) for r in records] == [(second.job_id, "FAILED", 1)]


# ----- time limits -----------------------------------------------------------------
# slurmctld sweeps time limits every 30 s from its start, so this test comes
# after the others: the cluster is older by then and the next sweep closer.


def test_run_past_its_time_limit_ends_as_timeout(cluster, runner, tmp_path):
    run = submit(runner, tmp_path, "late", fake_eval(tmp_path, "late", "--fault", "hang@0"), sbatch_args=("--time=1",))
    cluster.wait_state(run.job_id, "RUNNING")
    assert "TimeLimit=00:01:00" in cluster.run("scontrol", "show", "job", run.job_id)  # the sbatch option arrived

    # slurmctld checks time limits every 30 s and limits are whole minutes, so
    # "--time=1" alone ends the job 60-90 s after it starts. Shortening the
    # limit to one already passed, as an admin can, makes it 0-30 s.
    cluster.run("scontrol", "update", f"JobId={run.job_id}", "TimeLimit=0")

    record = cluster.completion(run.job_id, timeout=45)
    assert record.state == "TIMEOUT"
    assert settled(runner, run).state == "TIMEOUT"
    assert "DUE TO TIME LIMIT" in log_text(run)


# ----- no cluster needed -----------------------------------------------------------

RECORD = (
    "JobId=2 UserId=root(0) GroupId=root(0) Name=x.y JobState=TIMEOUT Partition=debug TimeLimit=1 "
    "StartTime=2026-11-26T12:23:39 EndTime=2026-11-26T12:24:59 NodeList=vm NodeCnt=1 ProcCnt=1 "
    "WorkDir=/tmp/dir with space/a b=c ReservationName= Tres=cpu=1,mem=1000M,node=1,billing=1 Account= QOS= WcKey= "
    "Cluster=unknown SubmitTime=2026-11-26T12:23:39 EligibleTime=2026-11-26T12:23:39 DerivedExitCode=0:0 ExitCode=0:15 "
)


def test_completion_record_keeps_spaces_inside_values():
    record = parse_record(RECORD)
    assert (record.job_id, record.state, record.exit_code, record.signal, record.returncode) == ("2", "TIMEOUT", 0, 15, None)
    assert (record.node, record.work_dir, record.name, record.end_time) == ("vm", "/tmp/dir with space/a b=c", "x.y", "2026-11-26T12:24:59")
    assert record.fields["Tres"] == "cpu=1,mem=1000M,node=1,billing=1" and record.fields["ReservationName"] == ""


def test_lines_that_are_not_completion_records_are_skipped_with_a_note(tmp_path):
    path = tmp_path / "jobcomp.txt"
    path.write_text("garbage\n" + RECORD.replace("ExitCode=0:15", "ExitCode=weird") + "\n" + RECORD + "\n")
    follower = JobCompFollower(path)
    assert [r.job_id for r in follower.read_new()] == ["2"]
    notes = follower.drain_notes()
    assert len(notes) == 2 and "no JobId= field" in notes[0] and "ExitCode='weird' is not N:S" in notes[1]


def test_sbatch_args_that_are_not_options_are_refused_before_submitting(tmp_path):
    with pytest.raises(SlurmError, match="option 'x.sh' for run 'bad' does not start with '-'"):
        submit(SlurmRunner(), tmp_path, "bad", ("true",), sbatch_args=("x.sh",))


def test_percent_in_a_log_path_is_protected_from_sbatch_patterns():
    assert sbatch_output_path("/exp/run.log") == "/exp/run.log"
    assert sbatch_output_path("/exp/100%j.log") == "/exp/100\\%j.log"
    with pytest.raises(SlurmError, match="backslash"):
        sbatch_output_path("/exp/a\\b.log")
