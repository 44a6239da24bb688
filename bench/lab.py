"""A lab's worth of runs: many live runs beside a folder full of finished ones.

    python bench/lab.py [--live 1000] [--finished 10000] [--duration 30] [--json FILE]

One experiments directory holds ``finished`` runs that completed long ago
(a COMPLETE manifest, its log and its result file each, as ``expwatch
launch`` leaves them) and ``live`` adopted ``sleep`` runs whose logs
bench/logwriter.py writes at ``rate`` lines/s each, with probe lines as in
bench/latency.py. Measured from outside, on a real watcher process:

* start: from spawning ``expwatch watch`` to a ``run discovered`` record for
  every run (discovery plus each run's history read);
* open descriptors (``/proc/PID/fd``) and RSS after start and at the end of
  the writing window, and the per-run descriptor cost over the live runs;
* p50/p99/max from a probe's write to its ``rule matched`` record;
* ``expwatch status DIR`` wall time, as a user would run it: the first call, and again with its figures remembered;
* a restart: a second watcher from spawn to every live run discovered again
  and its ``runs asleep`` record, with how many finished runs it left unread.

tests/test_lab_scale.py runs it at a fifth of the scale and checks the
bounds that do not depend on this machine's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import Fleet, ts_seconds, wait_for  # noqa: E402
from latency import PROBE, PROBE_RULE, percentile  # noqa: E402

from expwatch.manifest import RunManifest, save_manifest  # noqa: E402
from expwatch.rules.loader import shipped_rules_text  # noqa: E402


@dataclass(frozen=True)
class LabResult:
    live: int
    finished: int
    rate: float
    start_s: float  # spawn → every run discovered
    fds_after_start: int
    fds_end: int
    rss_mb_after_start: float
    rss_mb_end: float
    cpu_pct: float  # during the writing window
    probes: int
    seen: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    status_first_s: float  # `expwatch status DIR` wall time, nothing remembered yet (.expwatch/progress-cache.json)
    status_s: float  # the same again, as every later call
    status_rows: int
    restart_s: float  # a second watcher: spawn → every live run discovered again, the finished ones asleep
    restart_unchanged: int  # finished runs the second watcher left unread (`runs asleep`)


def write_finished(fleet: Fleet, count: int) -> None:
    """``count`` runs that completed a day ago: manifest, a short log and a result file each."""
    logs = fleet.root / "done"
    logs.mkdir(exist_ok=True)
    when = datetime.fromtimestamp(time.time() - 86400, timezone.utc).isoformat(timespec="seconds")
    stamp = time.time() - 86400
    for i in range(count):
        name = f"done{i:05d}"
        log, result = logs / f"{name}.log", logs / f"{name}.json"
        log.write_text("2026-11-30 10:00:00,000 INFO eval: [1/2] item-000001 correct=True\n"
                       "2026-11-30 10:00:01,000 INFO eval: [2/2] item-000002 correct=False\n")
        result.write_text(json.dumps({"per_item": [{"id": "item-000001", "correct": True}, {"id": "item-000002", "correct": False}]}))
        os.utime(log, (stamp, stamp))
        os.utime(result, (stamp, stamp))
        save_manifest(fleet.layout, RunManifest(name=name, argv=("python", "eval.py"), cwd=str(fleet.root), log=str(log),
                                                result=str(result), expected=2, launched_at=when, completed_at=when))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def measure(workdir: Path, live: int, finished: int, rate: float, duration: float, samples: int, seed: int) -> LabResult:
    root = workdir / f"lab-{live}-{finished}"
    fleet = Fleet(root, settings="audit: {max_bytes: 1000000000}\n", rules=shipped_rules_text() + PROBE_RULE)
    names = [f"live{i:04d}" for i in range(live)]
    try:
        write_finished(fleet, finished)
        fleet.adopt_sleepers(names)
        spawned = time.monotonic()
        fleet.start_watcher(timeout=120)
        wait_for(lambda: len(fleet.audit.select("run discovered")) >= live + finished, 300, "every run to be discovered", 0.1)
        start_s = time.monotonic() - spawned
        time.sleep(2.0)
        watcher = psutil.Process(fleet.watcher.pid)
        fds_start, rss_start = open_fds(watcher.pid), watcher.memory_info().rss
        config = {"logs": [str(root / f"{n}.log") for n in names], "rate": rate, "duration": duration,
                  "probe_every": live * duration / samples, "seed": seed, "start_at": time.time() + 0.5}
        (root / "writer.json").write_text(json.dumps(config))
        cpu0, t0 = watcher.cpu_times(), time.monotonic()
        writer = subprocess.run([sys.executable, str(Path(__file__).with_name("logwriter.py")), str(root / "writer.json")],
                                capture_output=True, text=True, timeout=duration + 120)
        cpu1, t1 = watcher.cpu_times(), time.monotonic()
        if writer.returncode != 0:
            raise RuntimeError(f"log writer failed: {writer.stderr}")
        report = json.loads(writer.stdout.strip().splitlines()[-1])
        fds_end, rss_end = open_fds(watcher.pid), watcher.memory_info().rss
        try:
            wait_for(lambda: len([r for r in fleet.audit.select("rule matched") if r.get("rule") == "LATENCY_PROBE"]) >= report["probes"],
                     10, "every probe to be matched")
        except TimeoutError:
            pass  # reported as probes not seen
        latencies = sorted(
            (ts_seconds(r["ts"]) + 0.001 - float(m.group(3))) * 1000
            for r in fleet.audit.select("rule matched") if r.get("rule") == "LATENCY_PROBE" and (m := PROBE.search(r.get("line", "")))
        )
        times = []
        for _ in range(2):  # the first reads every result and keeps the figures; the second is every later call
            began = time.monotonic()
            status = subprocess.run([sys.executable, "-m", "expwatch", "status", str(root), "--json"], capture_output=True, text=True, timeout=120)
            times.append(time.monotonic() - began)
        rows = len(json.loads(status.stdout)) if status.returncode == 0 else -1
        fleet.stop_watcher()
        discovered = len(fleet.audit.select("run discovered"))
        spawned = time.monotonic()
        fleet.start_watcher(timeout=120)
        again = wait_for(lambda: len(fleet.audit.select("runs asleep")) >= 2 and len(fleet.audit.select("run discovered")) >= discovered + live
                         and fleet.audit.select("runs asleep")[-1:], 300, "every run to be back", 0.1)
        restart_s = time.monotonic() - spawned
        busy = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        return LabResult(live, finished, rate, start_s, fds_start, fds_end, rss_start / 2**20, rss_end / 2**20, 100 * busy / (t1 - t0),
                         report["probes"], len(latencies), percentile(latencies, 50), percentile(latencies, 99),
                         latencies[-1] if latencies else float("nan"), times[0], times[1], rows, restart_s, again[0]["unchanged"])
    finally:
        fleet.cleanup()


def describe(r: LabResult) -> str:
    return "\n".join([
        f"lab: {r.live:,} live runs × {r.rate:g} lines/s + {r.finished:,} finished runs",
        "",
        "| measure | result | goal |",
        "|---|---|---|",
        f"| watcher start (spawn → every run discovered) | {r.start_s:.1f} s | ≤ 10 s |",
        f"| RSS after start / after writing | {r.rss_mb_after_start:.0f} MB / {r.rss_mb_end:.0f} MB | ≤ 200 MB |",
        f"| open descriptors after start / after writing | {r.fds_after_start:,} / {r.fds_end:,} | a constant + one per live run ({r.live:,}) |",
        f"| write → `rule matched` | p50 {r.p50_ms:.0f} ms, p99 {r.p99_ms:.0f} ms, max {r.max_ms:.0f} ms ({r.seen}/{r.probes} probes) | p99 ≤ 20 ms |",
        f"| watcher CPU while writing | {r.cpu_pct:.1f}% of a core | |",
        f"| `expwatch status` ({r.status_rows:,} rows): first call / again | {r.status_first_s:.2f} s / {r.status_s:.2f} s | ≤ 2 s |",
        f"| watcher restart (spawn → every run back; {r.restart_unchanged:,} finished runs left unread) | {r.restart_s:.1f} s | |",
        "",
        f"(load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())} at the end)",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", type=int, default=1000)
    parser.add_argument("--finished", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="expwatch-lab-"))
    try:
        result = measure(workdir, args.live, args.finished, args.rate, args.duration, args.samples, args.seed)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(describe(result))
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
