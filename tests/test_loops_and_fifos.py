"""A run file that is there but cannot be read (a symlink loop, a FIFO) is that run's problem, never the watcher's.

Found in session 29. A symlink loop among the manifests raised OSError out of
the survey, so the watcher died at every start. A log or result that was
one made `status` print a traceback. The log was read whole, and counted
with Python's backtracking ``re``, by `validate` and by the watcher's
`complete` action.

Everything here is real: real symlinks and FIFOs, a real watcher process,
the real CLI. Poisoned result contents (digits, depth, a FIFO result) are
tests/test_unreadable_files.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for
from fleet import Fleet

from expwatch.actions.halt import last_lines
from expwatch.manifest import RunManifest, save_manifest
from expwatch.results.config import ValidationSettingsError, load_validation_settings
from expwatch.results.logcounts import LogPatterns, count_log_lines
from expwatch.rules.patterns import compile_pattern

SETTINGS = "watch: {settle_s: 0.4, safety_poll_s: 0.3}\nkill: {grace_s: 2}\n"
LOOP = "Too many levels of symbolic links"  # strerror(ELOOP)


def loop_at(path: Path) -> Path:
    """A symlink to itself: stat and open fail with ELOOP, exists() says False."""
    path.unlink(missing_ok=True)
    path.symlink_to(path.name)
    return path


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "expwatch", *args], capture_output=True, text=True, timeout=timeout)


def test_a_looping_manifest_is_reported_and_the_watcher_keeps_watching_the_other_runs(tmp_path):
    fleet = Fleet(tmp_path / "exp", settings=SETTINGS)
    try:
        fleet.adopt_sleepers(["good"])
        loop_at(fleet.layout.runs_dir / "loop.json")
        watcher = fleet.start_watcher()
        bad = wait_for(lambda: fleet.audit.select("manifest unreadable", run="loop"), what="the looping manifest reported")
        assert LOOP in bad[0]["error"] and bad[0]["file"].endswith("runs/loop.json")
        wait_for(lambda: fleet.audit.select("run discovered", run="good"), what="the good run watched")
        with open(fleet.root / "good.log", "a") as fh:
            fh.write("Traceback (most recent call last):\n  File \"eval.py\", line 3, in <module>\nZeroDivisionError: division by zero\n")
        wait_for(lambda: fleet.audit.select("rule matched", run="good"), what="the good run's traceback decided")
        time.sleep(1.0)  # three more safety polls past the loop
        assert watcher.poll() is None
        assert len(fleet.audit.select("manifest unreadable", run="loop")) == 1  # once per reason, not per poll
    finally:
        fleet.cleanup()


def test_a_run_whose_log_loops_is_watched_and_shown(tmp_path):
    """The log is replaced by a loop after adoption: discovery, the live view and `status` all go on."""
    fleet = Fleet(tmp_path / "exp", settings=SETTINGS)
    try:
        fleet.adopt_sleepers(["looped", "plain"])
        loop_at(fleet.root / "looped.log")
        watcher = fleet.start_watcher()
        wait_for(lambda: fleet.audit.select("run discovered", run="plain"), what="the runs watched")
        assert fleet.audit.select("run discovered", run="looped")
        time.sleep(1.0)
        assert watcher.poll() is None
        done = cli("status", "--json", str(fleet.root))
        assert done.returncode == 0, done.stderr
        rows = {row["name"]: row for row in json.loads(done.stdout)}
        assert rows["looped"]["log_age_s"] is None and rows["looped"]["alive"] is True
    finally:
        fleet.cleanup()


def test_status_names_a_result_that_loops(tmp_path):
    fleet = Fleet(tmp_path / "exp", settings=SETTINGS)
    try:
        log = fleet.root / "r.log"
        log.write_text("INFO eval: [1/2] item-1 correct=True\n")
        result = loop_at(fleet.root / "r.json")
        save_manifest(fleet.layout, RunManifest(name="r", argv=("python", "eval.py"), cwd=str(fleet.root), log=str(log),
                                                result=str(result), expected=2, completed_at="2026-12-01T00:00:00+00:00"))
        done = cli("status", "--json", str(fleet.root))
        assert done.returncode == 0, done.stderr
        [row] = json.loads(done.stdout)
        assert row["state"] == "UNREADABLE" and LOOP in row["progress_note"] and str(result) in row["progress_note"]
    finally:
        fleet.cleanup()


def test_a_run_that_completes_with_a_log_it_cannot_read_is_complete_and_says_why_it_was_not_validated(tmp_path):
    fleet = Fleet(tmp_path / "exp", settings=SETTINGS)
    try:
        log, result = loop_at(fleet.root / "c.log"), fleet.root / "c.json"
        result.write_text(json.dumps({"per_item": [{"id": "q0", "response": "A", "gold": "A", "correct": True},
                                                   {"id": "q1", "response": "B", "gold": "A", "correct": False}]}))
        save_manifest(fleet.layout, RunManifest(name="c", argv=("python", "eval.py"), cwd=str(fleet.root), log=str(log),
                                                result=str(result), expected=2))
        fleet.start_watcher()
        done = wait_for(lambda: [r for r in fleet.audit.select("action finished", run="c") if r["action"] == "complete"],
                        what="the complete action")
        assert done[0]["outcome"] == "completed" and LOOP in done[0]["validation_error"]
        assert fleet.manifest("c").completed_at
        assert not (fleet.root / "c.validation.json").exists()
    finally:
        fleet.cleanup()


def test_validate_refuses_a_fifo_log_at_once_with_one_line(tmp_path):
    """A FIFO opened for reading blocks until a writer comes; ``read_text`` had waited forever."""
    result = tmp_path / "out.json"
    result.write_text(json.dumps([{"id": "q0", "response": "A", "gold": "A"}]))
    fifo = tmp_path / "run.log"
    os.mkfifo(fifo)
    done = cli("validate", str(result), "--log", str(fifo), timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"expwatch validate: {fifo}: unreadable (not a regular file)"]


def test_a_halt_bundle_names_a_log_it_cannot_read(tmp_path):
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    assert last_lines(str(fifo)) == ["(the log is not a regular file)"]
    assert last_lines(str(loop_at(tmp_path / "loop.log"))) == [f"(the log cannot be read: {LOOP})"]
    assert last_lines(str(tmp_path / "absent.log")) == []


# The counts below are hand-made from the log each test writes. Failure texts:
# "Rate limit reached ... (TPM)" is openai 0.x's RateLimitError as quoted in
# FoundationAgents/MetaGPT#523; "would exceed your organization's rate limit"
# is Anthropic's 429 text as quoted in stagewise-io/stagewise#927.
OPENAI_TPM = ("openai.error.RateLimitError: Rate limit reached for gpt-4 in organization org-uVqpjtJiKqvVJMVfvpaounIh on tokens per min"
              " (TPM): Limit 10000, Used 8554, Requested 3082. Please try again in 9.816s.")
ANTHROPIC_TPM = ("Last error: This request would exceed your organization's rate limit of 30,000 input tokens per minute"
                 " (org: 80162711-722b-4454-ae75-c6334e6796f2, model: claude-opus-4-6).")


def counted(log: Path) -> dict[str, int]:
    return count_log_lines(log, load_validation_settings().log_patterns)


def test_log_lines_are_counted_across_chunks_cut_lines_and_carriage_returns(tmp_path):
    settings = load_validation_settings()
    limit = settings.log_patterns.max_line_bytes
    log = tmp_path / "run.log"
    with open(log, "wb") as fh:
        fh.write(b"INFO eval: [1/3] item-1 correct=True\n" * 30000)  # ~1.1 MB: the lines below cross a 1 MB chunk
        fh.write((OPENAI_TPM + "\n").encode())
        fh.write((ANTHROPIC_TPM + "\r\n").encode())
        fh.write(b"INFO rate limiter: waiting 1.5 s for a token\n")
        fh.write(b"x" * (limit - 20) + b" cache miss " + b"y" * 100 + b" stale cache\n")  # searched in its first `limit` bytes
        fh.write(b"progress 10%\rWARNING cache miss: clip-0001\rprogress 20%\n")  # a progress bar's redraws: three lines
        fh.write(b"WARNING content policy violation for item-0007, recording null")  # the last line, no newline yet
    assert counted(log) == {"cache_stale": 0, "cache_miss": 2, "rate_limit": 2, "content_policy": 1, "rate_limiter": 1}
    # Lines are searched without their endings, as before: RE2's `$` does not match before a "\n".
    ended = LogPatterns.of({"failed": compile_pattern("failed$")}, limit)
    (tmp_path / "ends.log").write_bytes(b"job failed\njob failed\r\njob failed\rjob failed twice\njob failed")
    assert count_log_lines(tmp_path / "ends.log", ended) == {"failed": 4}


def test_a_long_line_of_near_matches_is_counted_in_linear_time(tmp_path):
    """``cache\\b.*\\bstale\\b`` in Python's re took 13 s on 120 kB of ``cache `` and grows with the square.

    This 1 MB line would have taken about 15 minutes; RE2 takes milliseconds.
    The bound of 60 s only tells linear from quadratic. It is not a speed target.
    """
    log = tmp_path / "run.log"
    log.write_bytes(b"cache " * 170000 + b"\nWARNING cache stale for key abc, recomputing\n")
    started = time.monotonic()
    assert counted(log)["cache_stale"] == 1
    assert time.monotonic() - started < 60


def test_a_lookahead_in_a_log_pattern_is_refused_naming_file_line_and_field(tmp_path):
    override = tmp_path / "validation.yaml"
    override.write_text("nulls:\n  warn_rate: 0.1\nlog_patterns:\n  mine: 'retry(?!ing)'\n")
    with pytest.raises(ValidationSettingsError) as refused:
        load_validation_settings(override)
    message = str(refused.value)
    assert message.startswith(f"{override}:4: log_patterns.mine: not a pattern RE2 can run:") and "lookahead" in message
    assert "\n" not in message


def test_report_passes_over_a_fifo_where_a_validation_report_would_be(tmp_path):
    fleet = Fleet(tmp_path / "exp", settings=SETTINGS)
    try:
        fleet.adopt_sleepers(["v"])
        folder = fleet.layout.run_files_dir("v")
        folder.mkdir(parents=True, exist_ok=True)
        os.mkfifo(folder / "validation.json")
        done = cli("report", str(fleet.root), timeout=60)
        assert done.returncode == 0, done.stderr
        assert (fleet.layout.home / "report.html").exists()
    finally:
        fleet.cleanup()


def test_a_slurm_jobs_script_is_read_for_its_interpreter_without_blocking_or_reading_it_whole(tmp_path):
    from expwatch.watcher.discover_slurm import _job_argv

    fifo = tmp_path / "job.sbatch"
    os.mkfifo(fifo)
    assert _job_argv("7", f"{fifo} --limit 5", {}, 5) == ("sh", str(fifo), "--limit", "5")
    script = tmp_path / "eval.sbatch"
    script.write_bytes(b"#!/usr/bin/env python3 -u\n" + b"x" * 10_000_000)
    assert _job_argv("8", str(script), {}, 5) == ("/usr/bin/env", "python3", "-u", str(script))
    blob = tmp_path / "blob"
    blob.write_bytes(b"#!" + b"y" * 10_000_000)  # no newline: only the first 4 kB are one "line"
    assert len(_job_argv("9", str(blob), {}, 5)[0]) < 4096
