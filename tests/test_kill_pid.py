"""`kill PID` works: the pid launch prints is the eval's, and every way users kill a run ends it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import fast_rules, wait_for
from expwatch.cli import main as cli


def _launch(experiments, capsys, name: str) -> int:
    result = experiments.root / f"{name}.json"
    assert cli(["launch", "--yes", "--name", name, "--log", str(experiments.root / f"{name}.log"), "--result", str(result),
                "--expected", "200", "--dir", str(experiments.root), "--", sys.executable, "-m", "expwatch.demo.fake_eval",
                "--items", "200", "--output", str(result), "--delay", "0.2"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PID ")]
    return int(printed[0].split()[1])


def test_launch_prints_the_evals_own_pid_and_ps_shows_the_eval(experiments, capsys):
    pid = _launch(experiments, capsys, "shown")
    manifest = experiments.manifest("shown")
    assert pid == manifest.command_pid != manifest.pid
    cmd = subprocess.run(["ps", "-p", str(pid), "-o", "cmd="], capture_output=True, text=True, check=True).stdout
    assert "expwatch.demo.fake_eval" in cmd and "expwatch.runners.shim" not in cmd
    status = subprocess.run([sys.executable, "-m", "expwatch", "status", str(experiments.root), "--json"],
                            capture_output=True, text=True, check=True).stdout
    assert json.loads(status)[0]["pid"] == pid


@pytest.mark.parametrize(
    "target, sig",
    [("eval", signal.SIGTERM), ("eval", signal.SIGINT), ("shim", signal.SIGTERM), ("shim", signal.SIGHUP),
     ("shim", signal.SIGUSR1), ("group", signal.SIGTERM)],
)
def test_kill_ends_a_launched_run_and_status_says_dead_within_a_second(experiments, capsys, target, sig):
    pid = _launch(experiments, capsys, "victim")
    manifest = experiments.manifest("victim")
    wait_for(lambda: (experiments.root / "victim.json").exists(), what="first result write")
    who = {"eval": str(pid), "shim": str(manifest.pid), "group": f"-{manifest.pgid}"}[target]
    subprocess.run(["bash", "-c", f"kill -{sig.name[3:]} -- {who}"], check=True)  # as users type it
    wait_for(lambda: experiments.state("victim") == "DEAD", timeout=1.0, interval=0.02, what="DEAD")
    record = json.loads(experiments.layout.exit_path("victim").read_text())
    assert record["pid"] == pid and record["signal"] == sig and record["returncode"] is None
    assert record["forwarded_signal"] == (None if target == "eval" else sig)


def test_watcher_treats_a_kill_it_did_not_make_as_dead_and_a_stopped_run_is_not_fought(experiments, capsys):
    experiments.layout.rules_path.write_text(fast_rules())
    pid = _launch(experiments, capsys, "hit")
    watcher = experiments.start_watcher()
    wait_for(lambda: experiments.audit(run="hit", event="run discovered"), what="discovery")
    os.kill(pid, signal.SIGTERM)
    exits = wait_for(lambda: experiments.audit(run="hit", event="process exited"), what="exit seen")
    assert exits[0]["signal"] == signal.SIGTERM
    wait_for(lambda: experiments.manifest("hit").restarts == 1,
             what="the rules restart the dead run")
    relaunched = experiments.manifest("hit")
    assert relaunched.command_pid and relaunched.command_pid != pid
    assert cli(["stop", "hit", "--dir", str(experiments.root)]) == 0
    wait_for(lambda: experiments.state("hit") == "STOPPED", what="STOPPED")
    experiments.stop_watcher(watcher)
    assert experiments.manifest("hit").restarts == 1


def test_a_launch_found_again_by_its_token_knows_the_commands_pid_alive_and_ended(experiments):
    from expwatch.runners.base import LaunchSpec
    from expwatch.runners.local import LocalRunner

    runner = LocalRunner()
    spec = LaunchSpec(name="tok", argv=(sys.executable, "-c", "import time; time.sleep(30)"), cwd=str(experiments.root),
                      log=str(experiments.root / "tok.log"), env=dict(os.environ),
                      exit_record=str(experiments.layout.exit_path("tok")), launch_token="tok-123")
    experiments.layout.runs_dir.mkdir(parents=True, exist_ok=True)
    launched = runner.launch(spec)
    try:
        assert launched.command_pid and launched.command_pid != launched.pid
        found = runner.find_launched(spec)
        assert (found.pid, found.command_pid) == (launched.pid, launched.command_pid)
        os.kill(launched.command_pid, signal.SIGTERM)
        wait_for(lambda: experiments.layout.exit_path("tok").exists(), what="exit record")
        ended = runner.find_launched(spec)
        assert (ended.pid, ended.command_pid, ended.create_time) == (launched.pid, launched.command_pid, None)
    finally:
        try:
            os.killpg(launched.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        runner.reap()


def test_a_command_that_cannot_start_reports_no_pid_and_exit_127(experiments):
    from expwatch.runners.base import LaunchSpec
    from expwatch.runners.local import LocalRunner

    experiments.layout.runs_dir.mkdir(parents=True, exist_ok=True)
    spec = LaunchSpec(name="nope", argv=(str(experiments.root / "missing-script"),), cwd=str(experiments.root),
                      log=str(experiments.root / "nope.log"), env=dict(os.environ), exit_record=str(experiments.layout.exit_path("nope")))
    launched = LocalRunner().launch(spec)
    assert launched.command_pid is None
    wait_for(lambda: experiments.layout.exit_path("nope").exists(), what="exit record")
    assert json.loads(experiments.layout.exit_path("nope").read_text())["returncode"] == 127
