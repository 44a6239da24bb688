"""A lab's worth of runs at a fifth of the scale: what must stay bounded, not how fast.

bench/lab.py with 200 live runs (2 lines/s each, probe lines) beside 2,000
finished ones, a real watcher on the folder. Speed depends on the machine
and is only reported by the benchmark; these tests check what does not:
every probe is matched, memory does not grow with the writing, and open
descriptors are a constant plus a couple per live run, because finished runs
are released (expwatch/dormancy.py; issue 16).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import lab  # noqa: E402

LIVE, FINISHED = 200, 2000
# Per live run: its log and its pidfd. The constant: interpreter, SQLite, audit, inotify, pipes.
FDS_PER_LIVE_RUN, FDS_CONSTANT = 2, 64


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> lab.LabResult:
    return lab.measure(tmp_path_factory.mktemp("lab"), LIVE, FINISHED, rate=2.0, duration=6.0, samples=60, seed=1)


@pytest.mark.timeout(180)
def test_every_run_is_discovered_and_every_probe_matched_among_thousands_of_finished_runs(measured):
    assert measured.seen == measured.probes > 0
    assert measured.status_rows == LIVE + FINISHED


@pytest.mark.timeout(180)
def test_memory_stays_bounded_while_the_live_runs_write(measured):
    assert measured.rss_mb_end < 200
    assert measured.rss_mb_end - measured.rss_mb_after_start < 20


@pytest.mark.timeout(180)
def test_open_descriptors_are_a_constant_plus_a_few_per_live_run(measured):
    assert measured.fds_end <= FDS_CONSTANT + FDS_PER_LIVE_RUN * LIVE


@pytest.mark.timeout(180)
def test_a_restart_leaves_the_finished_runs_unread(measured):
    """Those whose manifest was written within ``status_cache_after_s`` of the first start are read again, once."""
    assert FINISHED * 0.5 <= measured.restart_unchanged <= FINISHED
