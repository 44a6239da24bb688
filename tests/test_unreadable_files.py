"""A hostile or broken file of one run is that run's problem: shown UNREADABLE, never a crash or a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from conftest import wait_for
from expwatch.cli import main as cli

POISON = {
    "digits": '{"per_item": [{"id": ' + "7" * 5000 + ', "correct": true}]}',
    "deep": '{"per_item": ' + "[" * 100000 + "]" * 100000 + "}",
}


def launch_with_result(experiments, name: str) -> str:
    result = experiments.root / f"{name}.json"
    assert cli(["launch", "--name", name, "--log", str(experiments.root / f"{name}.log"), "--result", str(result),
                "--expected", "10", "--dir", str(experiments.root), "--",
                sys.executable, "-c", "import time; time.sleep(60)"]) == 0
    return str(result)


def poison(experiments) -> dict[str, str]:
    paths = {}
    for name, text in POISON.items():
        paths[name] = launch_with_result(experiments, name)
        with open(paths[name], "w") as fh:
            fh.write(text)
    paths["fifo"] = launch_with_result(experiments, "fifo")
    os.mkfifo(paths["fifo"])
    return paths


def expwatch(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "expwatch", *args], capture_output=True, text=True, timeout=timeout)


def test_status_shows_runs_with_poisoned_result_files_as_unreadable_with_the_reason_and_does_not_hang(experiments):
    poison(experiments)
    started = time.monotonic()
    done = expwatch("status", str(experiments.root), "--json")
    assert time.monotonic() - started < 10
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["digits"]["state"] == "UNREADABLE" and "5000 digits" in rows["digits"]["progress_note"]
    assert rows["deep"]["state"] == "UNREADABLE" and "nested" in rows["deep"]["progress_note"]
    assert rows["fifo"]["state"] == "UNREADABLE" and "not a regular file" in rows["fifo"]["progress_note"]
    plain = expwatch("status", str(experiments.root))
    assert plain.returncode == 0 and "Traceback" not in plain.stderr
    assert [line.split()[1] for line in plain.stdout.splitlines()[1:]] == ["UNREADABLE"] * 3


def test_validate_and_report_print_one_line_errors_for_poisoned_files_with_an_exit_code_other_than_1(experiments):
    paths = poison(experiments)
    for name, path in paths.items():
        done = expwatch("validate", path)
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1 and path in done.stderr
    report = expwatch("report", str(experiments.root), "-o", str(experiments.root / "report.html"))
    assert "Traceback" not in report.stderr, report.stderr


def test_the_watcher_audits_each_poisoned_run_file_and_keeps_serving_the_healthy_run(experiments):
    poison(experiments)
    watcher = experiments.start_watcher()
    experiments.launch("healthy", items=6)
    wait_for(lambda: experiments.manifest("healthy").completed_at or watcher.poll() is not None, what="healthy completes")
    assert watcher.poll() is None, experiments.stop_watcher(watcher)
    wait_for(lambda: {r["run"] for r in experiments.audit(event="run file unreadable")} == {"digits", "deep", "fifo"},
             what="each poisoned file audited")
    records = experiments.audit(event="run file unreadable")
    assert len(records) == 3, records  # once per problem, not once per poll
    experiments.stop_watcher(watcher)
    assert watcher.returncode == 0
