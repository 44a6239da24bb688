"""Idle cost: what a watcher of N quiet runs costs while nothing happens.

N adopted ``sleep`` runs whose logs stay silent, one watcher with the
shipped settings and rules (so its safety poll re-reads everything every
5 s, as it would on a real machine). After start-up settles, its process is
sampled with psutil once a second: CPU time over the window, resident memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from fleet import Fleet, wait_for
from latency import start_profiler

PROFILE_RATE = 1000  # py-spy samples a second: an idle watcher is busy only a few ms at a time


@dataclass(frozen=True)
class IdleResult:
    runs: int
    window_s: float
    cpu_pct: float
    rss_mb_max: float
    rss_mb_end: float
    threads: int


def measure(workdir: Path, runs: int, window: float, profile: Path | None = None) -> IdleResult:
    """``profile``: also sample the watcher with py-spy over the window (raw stacks there; bench/profile.py --idle)."""
    fleet = Fleet(workdir / f"idle-{runs}")
    try:
        fleet.adopt_sleepers([f"q{i:03d}" for i in range(runs)])
        fleet.start_watcher()
        wait_for(lambda: len(fleet.audit.select("run discovered")) >= runs, 60, "every run to be discovered")
        time.sleep(2.0)
        proc = psutil.Process(fleet.watcher.pid)
        spy = start_profiler(fleet.watcher.pid, profile, window, gil=False, rate=PROFILE_RATE) if profile else None
        cpu0, t0 = proc.cpu_times(), time.monotonic()
        rss_max = 0
        while time.monotonic() - t0 < window:
            rss_max = max(rss_max, proc.memory_info().rss)
            time.sleep(min(1.0, max(0.0, window - (time.monotonic() - t0))))
        cpu1, t1 = proc.cpu_times(), time.monotonic()
        rss_end = proc.memory_info().rss
        if spy is not None:
            spy.wait(timeout=window + 30)
        busy = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        return IdleResult(runs, t1 - t0, 100 * busy / (t1 - t0), max(rss_max, rss_end) / 2**20, rss_end / 2**20, proc.num_threads())
    finally:
        fleet.cleanup()
