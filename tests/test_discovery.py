"""Runs started by hand, the ways researchers start them, found and adopted by a real watcher.

Every run here is ``python -m expwatch.demo.fake_eval`` started through a
real shell (``bash -c`` in a session of its own, as a terminal's shell is) or
typed into a real tmux pane; nothing is given a manifest beforehand.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from conftest import fast_rules, wait_for
from endpoint import closed_port
from fleet import ts_seconds
from expwatch.cli import main as cli
from expwatch.display.records import summary
from expwatch.manifest import RunManifest
from expwatch.settings import load_settings
from expwatch.watcher.discover import DiscoveryConfig, scan

PY = shlex.quote(sys.executable)
FAKE = f"{PY} -m expwatch.demo.fake_eval"
POLL_S = 1.0  # FAST_SETTINGS' watch.safety_poll_s
CRASHER = shlex.quote(str(Path(__file__).parent / "clients" / "client_crash.py"))


@pytest.fixture
def shell(experiments):
    """Run a command line through ``bash -c`` in a new session; returns the pid it prints (``echo $!``)."""
    started: list[int] = []

    def run(line: str) -> int:
        out = subprocess.run(["bash", "-c", f"{line}\necho $!"], cwd=experiments.root, capture_output=True, text=True,
                             start_new_session=True, timeout=30, check=True).stdout
        started.append(int(out.split()[-1]))
        return started[-1]

    yield run
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def adopted(experiments) -> dict[str, dict]:
    return {r["run"]: r for r in experiments.audit(event="run adopted")}


def assert_restarted_from_checkpoint_and_complete(experiments, name: str, items: int, died_at: int) -> None:
    wait_for(lambda: experiments.state(name) == "COMPLETE", timeout=40, what=f"{name} COMPLETE after its restart")
    assert experiments.manifest(name).restarts == 1
    assert sorted(experiments.items(name)) == [f"item-{i:04d}" for i in range(items)]
    assert f"Resuming from checkpoint: {died_at}/{items} items done" in (experiments.root / f"{name}.log").read_text()
    restarts = [r for r in experiments.audit(run=name, event="action finished") if r.get("action") == "restart"]
    assert [r["outcome"] for r in restarts] == ["restarted"]


def test_a_run_started_with_setsid_nohup_then_the_watcher_is_adopted_and_its_death_restarted_from_its_checkpoint(experiments, shell):
    root = experiments.root
    pid = shell(f"setsid nohup {FAKE} --items 10 --delay 0.5 --fault die:once@8 --output {root}/x.json "
                f">> {root}/x.log 2>&1 < /dev/null &")
    wait_for(lambda: (root / "x.json").exists(), what="the run's first item")
    experiments.start_watcher()
    record = wait_for(lambda: adopted(experiments).get("x"), what="run adopted")
    assert record["pid"] == pid and record["via"] == "discovery"
    inferred = {k: (v["value"], v["source"]) for k, v in record["inferred"].items()}
    assert inferred == {
        "name": ("x", "stem of the result"),
        "log": (str(root / "x.log"), f"stdout+stderr of pid {pid}"),
        "result": (str(root / "x.json"), "argv --output"),
        "checkpoint": (str(root / "x_checkpoint.json"), "present beside the result"),
        "expected": (10, "result config.items"),
        "argv": (record["argv"], f"/proc/{pid}/cmdline"),
        "cwd": (str(root), f"/proc/{pid}/cwd"),
        "env": ({"overrides": [], "unset": []}, f"/proc/{pid}/environ, as its difference from the watcher's"),
    }
    assert summary(record) == f"adopted pid {pid} (expected 10, log {root / 'x.log'})"  # the live feed's line
    manifest = experiments.manifest("x")
    assert manifest.adopted and manifest.argv[1:3] == ("-m", "expwatch.demo.fake_eval") and manifest.cwd == str(root)
    assert_restarted_from_checkpoint_and_complete(experiments, "x", 10, 8)
    assert list(adopted(experiments)) == ["x"]  # the restarted copy under the shim is the same run


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")
def test_a_run_typed_into_a_tmux_pane_shows_within_one_safety_poll_and_its_death_is_restarted(experiments):
    root = experiments.root
    experiments.start_watcher()
    socket = f"expwatch-test-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    subprocess.run([*tmux, "new-session", "-d", "-s", "evals", "-x", "200", "-y", "50", "bash --norc --noprofile"], check=True)
    try:
        subprocess.run([*tmux, "send-keys", "-t", "evals",
                        f"cd {shlex.quote(str(root))} && {FAKE} --items 10 --limit 10 --delay 0.4 --fault die:once@6 "
                        f"--output t.json > t.log 2>&1", "Enter"], check=True)
        record = wait_for(lambda: adopted(experiments).get("t"), what="run adopted")
        born = experiments.manifest("t").create_time
        assert ts_seconds(record["ts"]) - born <= POLL_S + 1.5, "adopted later than one safety poll"
        assert experiments.state("t") == "RUNNING"
        assert record["inferred"]["expected"] == {"value": 10, "source": "argv --limit"}
        assert record["inferred"]["log"]["value"] == str(root / "t.log")
        assert record["inferred"]["result"] == {"value": str(root / "t.json"), "source": "argv --output"}
        assert_restarted_from_checkpoint_and_complete(experiments, "t", 10, 6)
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)


def test_a_plain_background_run_is_adopted_and_a_reader_a_sleep_and_a_launched_runs_child_are_left_alone(experiments, shell):
    root = experiments.root
    kid = root / "kid.json"
    assert cli(["launch", "--name", "launched", "--log", str(root / "launched.log"), "--result", str(kid), "--expected", "60",
                "--dir", str(root), "--", "bash", "-c", f"{FAKE} --items 60 --delay 0.2 --output {kid} > {root}/kid.out 2>&1; true"]) == 0
    experiments.start_watcher()
    shell(f"{FAKE} --items 10 --delay 0.4 --fault die:once@6 --output p.json >> p.log 2>&1 &")
    shell(f"tail -F {root}/p.log > /dev/null 2>&1 &")
    shell(f"sleep 60 >> {root}/sleep.out 2>&1 &")
    wait_for(lambda: "p" in adopted(experiments), what="run adopted")
    assert_restarted_from_checkpoint_and_complete(experiments, "p", 10, 6)
    time.sleep(2 * POLL_S)  # two more safety polls, each a chance to adopt what must be left alone
    assert list(adopted(experiments)) == ["p"]
    assert sorted(m.stem for m in experiments.layout.runs_dir.glob("*.json") if not m.name.endswith(".exit.json")) == ["launched", "p"]


def test_suggest_prints_the_adopt_line_once_and_that_line_adopts_the_run(experiments, shell):
    root = experiments.root
    with open(root / "expwatch.yaml", "a") as fh:
        fh.write("discover: suggest\n")
    pid = shell(f"{FAKE} --items 40 --delay 0.25 --output s.json >> s.log 2>&1 &")
    wait_for(lambda: (root / "s.json").exists(), what="the run's first item")
    watcher = experiments.start_watcher()
    record = wait_for(lambda: experiments.audit(event="run suggested"), what="run suggested")[0]
    time.sleep(3 * POLL_S)
    assert len(experiments.audit(event="run suggested")) == 1 and not adopted(experiments)
    assert not experiments.layout.manifest_path("s").exists()
    line = record["command"]
    assert line == shlex.join(["expwatch", "adopt", "--pid", str(pid), "--name", "s", "--log", str(root / "s.log"),
                               "--result", str(root / "s.json"), "--checkpoint", str(root / "s_checkpoint.json"),
                               "--expected", "40", "--dir", str(root)])
    assert cli(shlex.split(line)[1:]) == 0
    wait_for(lambda: experiments.audit(run="s", event="run discovered"), what="the watcher taking the adopted run")
    out = experiments.stop_watcher(watcher)
    assert out.count(line) == 1


def test_adopt_with_only_the_log_finds_its_writer_and_infers_the_rest(experiments, shell, capsys):
    root = experiments.root
    pid = shell(f"{FAKE} --items 12 --limit 12 --delay 0.3 --output a.json > a.log 2>&1 &")
    wait_for(lambda: (root / "a.log").exists(), what="the run's log")
    assert cli(["adopt", "--log", str(root / "nobody.log"), "--dir", str(root)]) == 2
    assert "no process of yours without a manifest is writing" in capsys.readouterr().err
    assert cli(["adopt", "--log", str(root / "a.log"), "--dir", str(root)]) == 0
    out = capsys.readouterr().out
    m = experiments.manifest("a")
    assert (m.pid, m.result, m.checkpoint, m.expected, m.adopted) == (pid, str(root / "a.json"), str(root / "a_checkpoint.json"), 12, True)
    assert f"adopted pid {pid} as run 'a'" in out and "(argv --limit)" in out and "(given)" in out
    # Adopting the same process again under another name replaces the earlier adoption: one process, one run.
    assert cli(["adopt", "--pid", str(pid), "--name", "renamed", "--log", str(root / "a.log"), "--dir", str(root)]) == 0
    assert not experiments.layout.manifest_path("a").exists() and experiments.manifest("renamed").pid == pid


def test_monitor_adopts_the_writer_with_the_given_values_winning_over_inference(experiments, shell, capsys):
    root = experiments.root
    pid = shell(f"{FAKE} --items 30 --delay 0.3 --output m.json >> m.log 2>&1 &")
    wait_for(lambda: (root / "m.json").exists(), what="the run's first item")
    assert cli(["monitor", str(root / "m.json"), "--log", str(root / "m.log"), "--expected", "25"]) == 0
    out = capsys.readouterr().out
    m = experiments.manifest("m")
    assert (m.pid, m.log, m.expected) == (pid, str(root / "m.log"), 25)
    assert "expected   25  (given)" in out and "name       m  (stem of the result)" in out
    assert cli(["monitor", str(root / "m.json")]) == 0
    assert "m: RUNNING at" in capsys.readouterr().out


def test_monitor_with_no_process_reports_complete_or_dead_at_k_of_n_from_the_files(experiments, capsys):
    root = experiments.root
    for name, extra in (("done", []), ("died", ["--fault", "die:always@2"])):
        subprocess.run([sys.executable, "-m", "expwatch.demo.fake_eval", "--items", "5", "--delay", "0", "--output",
                        str(root / f"{name}.json"), *extra], capture_output=True, timeout=60)
    assert cli(["monitor", str(root / "done.json")]) == 0
    assert "done: COMPLETE at 5/5" in capsys.readouterr().out
    assert cli(["monitor", str(root / "died.json"), "--expected", "5"]) == 1
    assert "died: DEAD at 2/5" in capsys.readouterr().out
    assert not experiments.layout.runs_dir.exists() or not list(experiments.layout.runs_dir.glob("*.json"))


def test_a_worker_pool_is_one_run_and_an_editor_swap_file_is_no_run(experiments, shell):
    root = experiments.root
    pool = shell(f"{PY} -c 'import subprocess, sys, time; subprocess.Popen([sys.executable, \"-c\", \"import time; time.sleep(30)\"]); "
                 f"time.sleep(30)' --output pool.json >> pool.log 2>&1 &")
    shell(f"{PY} -c 'import time; f = open(\".notes.txt.swp\", \"w\"); time.sleep(30)' > /dev/null 2>&1 &")
    wait_for(lambda: len(psutil.Process(pool).children()) == 1 and (root / ".notes.txt.swp").exists(), what="the worker and the swap file")
    found = scan(root, [], DiscoveryConfig.from_settings(load_settings(experiments.layout))).found
    assert [(f.pid, f.name.value, f.log.source) for f in found] == [(pool, "pool", f"stdout+stderr of pid {pool}")]
    assert found[0].expected.value is None and found[0].waiting == f"result {root / 'pool.json'} not written yet"


def test_an_unknown_discover_mode_is_refused_before_watching(experiments, capfd):
    with open(experiments.root / "expwatch.yaml", "a") as fh:
        fh.write("discover: sometimes\n")
    # Through the restarting parent, as a user runs it: the watcher child says why and the parent exits with its code.
    assert cli(["watch", str(experiments.root)]) == 2
    assert "field 'discover' must be one of adopt, suggest, off, got 'sometimes'" in capfd.readouterr().err


def test_discover_off_written_bare_in_yaml_turns_discovery_off(experiments, shell):
    with open(experiments.root / "expwatch.yaml", "a") as fh:
        fh.write("discover: off\n")  # YAML 1.1 reads this as false
    shell(f"{FAKE} --items 20 --delay 0.2 --output off.json >> off.log 2>&1 &")
    watcher = experiments.start_watcher()
    time.sleep(2 * POLL_S)
    experiments.stop_watcher(watcher)
    assert not adopted(experiments) and not experiments.layout.manifest_path("off").exists()


def test_a_scan_cut_short_by_its_time_budget_is_continued_by_the_next(experiments, shell):
    root = experiments.root
    pid = shell(f"{FAKE} --items 50 --limit 50 --delay 0.2 --output b.json >> b.log 2>&1 &")
    wait_for(lambda: (root / "b.log").exists(), what="the run's log")
    with open(root / "expwatch.yaml", "a") as fh:
        fh.write("discovery: {budget_s: 0}\n")  # one process per scan
    config = DiscoveryConfig.from_settings(load_settings(experiments.layout))
    resume, scans, found = 0, 0, ()
    while not found and scans <= len(psutil.pids()) + 5:  # one pass: no process is skipped
        result = scan(root, [], config, resume_at=resume)
        assert result.truncated
        resume, scans, found = result.stopped_at, scans + 1, result.found
    assert [f.pid for f in found] == [pid] and scans > 1


def test_a_process_writing_only_a_watched_runs_files_is_no_new_run(experiments, shell):
    root = experiments.root
    pid = shell(f"{PY} -c 'import time; f = open(\"w.log\", \"a\"); time.sleep(30)' > /dev/null 2>&1 &")
    wait_for(lambda: (root / "w.log").exists(), what="the writer")
    config = DiscoveryConfig.from_settings(load_settings(experiments.layout))
    assert [f.pid for f in scan(root, [], config).found] == [pid]
    watched = RunManifest(name="w", argv=("true",), cwd=str(root), log=str(root / "w.log"))
    assert scan(root, [watched], config).found == ()
    # Once that run is finished, writing its files again is a new run, named apart from it.
    finished = watched.with_changes(completed_at="2026-12-01T00:00:00.000+00:00")
    assert [(f.pid, f.name.value) for f in scan(root, [finished], config).found] == [(pid, "w-2")]


def test_a_launched_run_is_never_rediscovered_even_before_its_manifest_is_read(experiments):
    experiments.launch("launched", items=200, delay=0.1)
    config = DiscoveryConfig.from_settings(load_settings(experiments.layout))
    wait_for(lambda: (experiments.root / "launched.json").exists(), what="the launched run's first item")
    assert scan(experiments.root, [], config).found == ()  # below the launch shim: expwatch's own, manifest or not


def test_whoever_started_the_watcher_is_no_run_even_holding_its_output_file_under_dir(experiments):
    root = experiments.root
    with open(root / "watcher.out", "ab") as out:  # as bench/fleet.py does: this very process writes under DIR
        watcher = subprocess.Popen([sys.executable, "-m", "expwatch", "watch", str(root)], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        experiments.watchers.append(watcher)
        wait_for(lambda: experiments.audit(event="watcher started"), what="watcher start")
        time.sleep(2 * POLL_S)
        experiments.stop_watcher(watcher)
    assert not adopted(experiments)


def test_a_long_lived_process_found_writing_nothing_is_looked_at_again_only_after_recheck_s(experiments, shell):
    """The open-files listing of every process each poll was most of an idle watcher's CPU; young ones are always read."""
    root = experiments.root
    line = (f"{PY} -c 'import os, time\nwhile not os.path.exists(\"go\"): time.sleep(0.05)\n"
            f"f = open(\"late.log\", \"a\"); f.write(\"started\\n\"); f.flush(); time.sleep(30)' > /dev/null 2>&1 &")
    pid = shell(line)
    young = scan(root, [], DiscoveryConfig.from_settings(load_settings(experiments.layout)))  # recheck_s: 60
    assert pid not in young.quiet
    with open(root / "expwatch.yaml", "a") as fh:
        fh.write("discovery: {recheck_s: 0.5}\n")
    config = DiscoveryConfig.from_settings(load_settings(experiments.layout))
    wait_for(lambda: time.time() - psutil.Process(pid).create_time() > 0.6, what="the process older than recheck_s")
    first = scan(root, [], config)
    assert pid in first.quiet and pid not in {f.pid for f in first.found}
    quiet = frozenset({pid})
    (root / "go").write_text("")
    wait_for(lambda: (root / "late.log").exists(), what="the process writing under DIR")
    assert pid not in {f.pid for f in scan(root, [], config, quiet=quiet).found}  # not listed again while cached
    assert pid in {f.pid for f in scan(root, [], config).found}  # what the watcher does once recheck_s has passed


def test_a_run_adopted_after_its_traceback_while_a_worker_thread_keeps_it_alive_is_decided_by_that_crash(experiments, shell):
    """Its traceback was history when the watcher first read the log, and history triggers nothing: the run
    exited as a bare DEAD, or as PROXY_DOWN off the traceback's last line, without a cause (seen in the live
    corpus test, where a run was discovered while its traceback was being written)."""
    root = experiments.root
    (root / "expwatch.rules.yaml").write_text(fast_rules(silent_s=600))
    shell(f"setsid nohup {PY} {CRASHER} --client requests --base-url http://127.0.0.1:{closed_port()}/v1 --limit 3 "
          f"--output {root}/refused.json --linger-until {root}/go >> {root}/refused.log 2>&1 < /dev/null &")
    wait_for(lambda: "requests.exceptions.ConnectionError" in (root / "refused.log").read_text(), timeout=30,
             what="the main thread's traceback")
    experiments.start_watcher()
    wait_for(lambda: adopted(experiments).get("refused"), what="run adopted")
    assert not experiments.audit(run="refused", event="incident classified")  # the process lives: its exit is evidence
    (root / "go").write_text("")
    first = wait_for(lambda: experiments.audit(run="refused", event="incident classified"), timeout=30, what="classified")[0]
    assert first["rule"] == "PROXY_DOWN", first["candidates"]
    assert first["cause"].startswith("requests.exceptions.ConnectionError HTTPConnectionPool("), first["cause"]
    assert " at client_crash.py:" in first["cause"]
