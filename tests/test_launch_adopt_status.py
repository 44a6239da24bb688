"""launch, adopt and status against real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil

from conftest import wait_for
from expwatch.cli import main as cli


def test_launched_run_survives_its_shell_and_the_shells_process_group_being_killed(experiments, capsys):
    root = experiments.root
    shell = subprocess.Popen(
        ["bash", "-c",
         f"{sys.executable} -m expwatch launch --name survivor --log {root}/survivor.log --result {root}/survivor.json "
         f"--expected 15 --dir {root} -- {sys.executable} -m expwatch.demo.fake_eval --items 15 --output {root}/survivor.json --delay 0.1; sleep 60"],
        start_new_session=True, stdout=subprocess.PIPE, text=True,
    )
    wait_for(lambda: experiments.layout.manifest_path("survivor").exists(), what="manifest")
    manifest = experiments.manifest("survivor")
    assert os.getsid(manifest.pid) != os.getsid(shell.pid)
    os.killpg(shell.pid, signal.SIGKILL)
    shell.wait()
    assert psutil.Process(manifest.pid).is_running()
    wait_for(lambda: experiments.state("survivor") == "COMPLETE", timeout=30, what="completion")
    assert sorted(experiments.items("survivor")) == [f"item-{i:04d}" for i in range(15)]


def test_launch_prints_pid_sid_log_and_warns_about_worktree_logs(experiments, capsys):
    wt = experiments.root / ".claude" / "worktrees" / "x"
    assert cli(["launch", "--allow-volatile-log", "--name", "wt", "--log", str(wt / "run.log"), "--dir", str(experiments.root), "--",
                sys.executable, "-c", "import time; time.sleep(2)"]) == 0
    out = capsys.readouterr()
    assert "PID " in out.out and "SID " in out.out and f"LOG {wt / 'run.log'}" in out.out
    assert "worktree" in out.err
    manifest = experiments.manifest("wt")
    assert manifest.sid == manifest.pid and manifest.pgid == manifest.pid


def test_launch_refuses_a_missing_command_and_a_live_duplicate(experiments, capsys):
    assert cli(["launch", "--log", str(experiments.root / "x.log"), "--dir", str(experiments.root)]) == 2
    experiments.launch("dup", delay=0.5)
    assert cli(["launch", "--name", "dup", "--log", str(experiments.root / "x.log"), "--dir", str(experiments.root),
                "--", "true"]) == 2
    assert "already running" in capsys.readouterr().err


def test_adopt_records_argv_cwd_and_env_so_a_restart_reproduces_them(experiments, tmp_path, capsys):
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = experiments.root / "hand.json"
    argv = [sys.executable, "-m", "expwatch.demo.fake_eval", "--items", "40", "--output", str(result), "--delay", "0.05"]
    env = {**os.environ, "EVAL_SPLIT": "test", "OPENAI_API_KEY": "sk-secret-value"}
    with open(experiments.root / "hand.log", "ab") as log:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        assert cli(["adopt", "--pid", str(proc.pid), "--name", "hand", "--log", str(experiments.root / "hand.log"),
                    "--result", str(result), "--expected", "40", "--dir", str(experiments.root)]) == 0
        manifest = experiments.manifest("hand")
        assert list(manifest.argv) == argv and manifest.cwd == str(workdir) and manifest.adopted
        assert manifest.env_overrides["EVAL_SPLIT"] == "test"
        assert "PATH" not in manifest.env_overrides
        proc.kill()
        proc.wait()
        assert cli(["resume", "hand", "--dir", str(experiments.root)]) == 0
        restarted = experiments.manifest("hand")
        new = psutil.Process(restarted.pid)
        child = wait_for(lambda: new.children(), what="restarted command")[0]
        assert child.cmdline() == argv and child.cwd() == str(workdir)
        assert child.environ()["EVAL_SPLIT"] == "test" and child.environ()["OPENAI_API_KEY"] == "sk-secret-value"
    finally:
        proc.kill()


def test_status_reports_running_complete_dead_stale_and_unknown(experiments, capsys):
    (experiments.root / "expwatch.rules.yaml").write_text(
        "replace: true\nrules:\n  - name: HUNG\n    when: {log_silent_s: 1}\n    actions: [kill]\n"
    )
    experiments.launch("running", items=200, delay=0.2)
    experiments.launch("complete", items=5, delay=0.01)
    experiments.launch("dead", "--fault", "die@3", items=10, delay=0.01)
    experiments.launch("stale", "--fault", "hang@2", items=10, delay=0.01)
    (experiments.layout.runs_dir / "unknown.json").write_text(json.dumps(
        {"name": "unknown", "argv": ["x"], "cwd": "/", "log": str(experiments.root / "none.log")}))
    def states() -> dict[str, str]:
        capsys.readouterr()
        cli(["status", str(experiments.root), "--json"])
        return {row["name"]: row["state"] for row in json.loads(capsys.readouterr().out)}

    wait_for(lambda: states().get("stale") == "STALE" and states().get("dead") == "DEAD", timeout=20, what="each run in its state")
    capsys.readouterr()
    assert cli(["status", str(experiments.root), "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert {name: row["state"] for name, row in rows.items()} == {
        "running": "RUNNING", "complete": "COMPLETE", "dead": "DEAD", "stale": "STALE", "unknown": "UNKNOWN"}
    assert rows["complete"]["done"] == 5 and rows["complete"]["expected"] == 5 and rows["complete"]["accuracy"] is not None
    assert rows["dead"]["done"] == 3 and rows["dead"]["alive"] is False
    for key in ("name", "state", "done", "expected", "accuracy", "null_count", "null_reasons", "pid", "alive", "log_age_s", "restarts"):
        assert key in rows["running"]
    assert cli(["status", str(experiments.root)]) == 0
    table = capsys.readouterr().out
    assert "STALE" in table.splitlines()[0] or "STATE" in table.splitlines()[0]
    assert any(line.startswith("dead") and "DEAD" in line for line in table.splitlines())


def test_launch_with_smoke_runs_two_items_first_and_blocks_a_run_that_returns_nulls(experiments, capsys):
    root = experiments.root

    def launch(name, *extra):
        return cli(["launch", "--smoke", "--name", name, "--log", str(root / f"{name}.log"), "--result", str(root / f"{name}.json"),
                    "--expected", "6", "--dir", str(root), "--", sys.executable, "-m", "expwatch.demo.fake_eval", "--items", "6",
                    "--output", str(root / f"{name}.json"), "--delay", "0.01", *extra])

    assert launch("good") == 0
    assert "smoke run on 2 items passed" in capsys.readouterr().out
    assert launch("nulls", "--null-rate", "1.0") == 1
    err = capsys.readouterr().err
    assert "smoke run on 2 items failed; nothing launched" in err and "null" in err
    assert not experiments.layout.manifest_path("nulls").exists()
    wait_for(lambda: experiments.state("good") == "COMPLETE", what="good run")
