"""Detection latency: a matching line's write to its ``rule matched`` record.

N adopted ``sleep`` runs, one real watcher (shipped settings and rules, plus
one informational rule that matches the probe lines, so measuring never
kills a run), and one writer process (bench/logwriter.py) that appends
ordinary lines to every log at ``rate`` lines/s and, now and then, a probe
line stamped with the time of its write. Latency = the audit record's ``ts``
minus that stamp; ``ts`` is cut to the millisecond, so each latency is counted
up to the end of its millisecond (an upper bound, at most 1 ms high).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from fleet import Fleet, ts_seconds, wait_for

from expwatch.rules.loader import shipped_rules_text

PROBE_RULE = """
  - name: LATENCY_PROBE
    description: Benchmark probe lines (bench/logwriter.py); informational, so no run is touched.
    severity: info
    priority: 1
    when:
      log: {pattern: 'latency probe run='}
    actions: [{alert: latency probe}]
"""
PROBE = re.compile(r"latency probe run=(\S+) seq=(\d+) t=([\d.]+)")


@dataclass(frozen=True)
class LatencyResult:
    runs: int
    rate: float
    duration_s: float
    probes: int
    seen: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    watcher_cpu_pct: float
    lines: int
    writer_late_ms: float
    rss_mb: float = float("nan")  # the watcher's, right after the writer ends


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.4999)))
    return sorted_values[rank - 1]


PROFILE_RATE = 200  # py-spy samples a second over the live path


def start_profiler(pid: int, out: Path, duration: float, gil: bool = True, rate: int = PROFILE_RATE) -> subprocess.Popen:
    """py-spy sampling every thread of ``pid`` (idle ones excluded) for ``duration`` s into a raw stacks file.

    ``gil``: only samples holding the GIL (Python's own CPU); without it, also
    threads busy in system calls, which is most of what an idle watcher does.
    """
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate), "--threads",
                             *(["--gil"] if gil else []),
                             "--duration", str(int(duration)), "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(workdir: Path, runs: int, rate: float, duration: float, samples: int, seed: int,
            profile: Path | None = None) -> LatencyResult:
    """``profile``: also sample the watcher with py-spy while the writer runs (raw stacks there; bench/profile.py)."""
    root = workdir / f"latency-{runs}"
    fleet = Fleet(root, settings="audit: {max_bytes: 1000000000}\n", rules=shipped_rules_text() + PROBE_RULE)
    names = [f"r{i:03d}" for i in range(runs)]
    try:
        fleet.adopt_sleepers(names)
        fleet.start_watcher()
        wait_for(lambda: len(fleet.audit.select("run discovered")) >= runs, 60, "every run to be discovered")
        time.sleep(1.0)  # let start-up work (first reads, first safety poll) pass
        config = {
            "logs": [str(root / f"{n}.log") for n in names],
            "rate": rate,
            "duration": duration,
            "probe_every": runs * duration / samples,
            "seed": seed,
            "start_at": time.time() + 0.5,
        }
        (root / "writer.json").write_text(json.dumps(config))
        watcher = psutil.Process(fleet.watcher.pid)
        spy = start_profiler(fleet.watcher.pid, profile, duration) if profile else None
        cpu_before, wall_before = watcher.cpu_times(), time.monotonic()
        writer = subprocess.run([sys.executable, str(Path(__file__).with_name("logwriter.py")), str(root / "writer.json")],
                                capture_output=True, text=True, timeout=duration + 60)
        cpu_after, wall_after = watcher.cpu_times(), time.monotonic()
        rss_mb = watcher.memory_info().rss / 2**20
        if spy is not None:
            spy.wait(timeout=30)
        if writer.returncode != 0:
            raise RuntimeError(f"log writer failed: {writer.stderr}")
        report = json.loads(writer.stdout.strip().splitlines()[-1])
        try:
            wait_for(lambda: len(fleet.audit.select("rule matched")) >= report["probes"], 5, "every probe to be matched")
        except TimeoutError:
            pass  # reported as probes not seen
        latencies = []
        for record in fleet.audit.select("rule matched"):
            m = PROBE.search(record.get("line", ""))
            if record.get("rule") == "LATENCY_PROBE" and m:
                latencies.append((ts_seconds(record["ts"]) + 0.001 - float(m.group(3))) * 1000)
        latencies.sort()
        busy = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        return LatencyResult(
            runs=runs, rate=rate, duration_s=duration, probes=report["probes"], seen=len(latencies),
            p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99), max_ms=latencies[-1] if latencies else float("nan"),
            watcher_cpu_pct=100 * busy / (wall_after - wall_before), lines=report["lines"],
            writer_late_ms=report["late_s"] * 1000, rss_mb=rss_mb,
        )
    finally:
        fleet.cleanup()
