"""`python bench/run.py --quick` runs every benchmark end to end and prints the table (speed is not judged)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"


def test_quick_benchmark_run_prints_every_row_of_the_table(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(tmp_path / "bench.json")],
                         capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout
    assert "| benchmark | setting | result | goal | verdict |" in table
    for row in ("| detection latency | 1 run", "| detection latency | 10 runs", "| cron check, every 5 min",
                "| catch-up throughput |", "| catch-up, plain Python loop |", "| idle cost |"):
        assert row in table, row
    assert "MISSED" not in table and "machine: " in table
    # The peers ran the same workload in the same invocation (fail2ban only where it is installed).
    assert "| expwatch (watcher) |" in table and "| tail\\|grep (" in table and "expwatch/tail|grep: CPU " in table
    # The CPython floor (bench/floor.py) ran beside every latency workload, and saw every probe too.
    assert "| CPython floor (Python " in table and "expwatch/CPython floor: CPU " in table
    assert table.count("(CPython floor ") == 2
    if shutil.which("fail2ban-server"):
        assert "| fail2ban (" in table and "expwatch/fail2ban: CPU " in table
    import json

    results = json.loads((tmp_path / "bench.json").read_text())
    assert all(r["seen"] == r["probes"] > 0 for r in results["latency"])
    assert results["catchup"]["lines"] == 50_000 and results["catchup"]["matching_lines"] > 0
    assert all(p["seen"] == p["probes"] > 0 for p in results["peers"] + results["floors"])
    assert [f["runs"] for f in results["floors"]] == [1, 10]


def test_status_benchmark_times_a_first_and_a_remembered_call_beside_the_floor(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH.parent / "status.py"), "--runs", "30", "--items", "40", "--repeat", "1",
                          "--json", str(tmp_path / "status.json")], capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| first (every result read, figures kept) |" in out.stdout and "| again (best of 1) |" in out.stdout
    import json

    figures = json.loads((tmp_path / "status.json").read_text())
    assert figures["rows"] == figures["runs"] == 30 and figures["first_s"] > 0 and figures["again_s"] > 0 and figures["floor_s"] > 0


def test_log_count_benchmark_counts_alike_with_expwatch_python_re_and_grep(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH.parent / "logcounts.py"), "--lines", "20000", "--rounds", "1",
                          "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stderr[-3000:]  # 1 when the three counts differ
    assert "'rate_limit': 0" not in out.stdout  # bench/history.py's mix holds 429s, so a count of 0 means nothing was read
    assert "expwatch/re" in out.stdout and "grep -P" in out.stdout
