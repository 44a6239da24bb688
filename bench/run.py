"""Run every expwatch benchmark and print one table: ``python bench/run.py [--quick]``.

Full mode (about 6 minutes on 2 cores) measures what BENCHMARKS.md reports
and exits 1 if a goal is missed; ``--quick`` (under a minute, for CI) runs
every benchmark on a small scale, prints the same table, and judges nothing.

    detection latency   bench/latency.py  (1, 10, 100 runs logging 20 lines/s each)
    peers               bench/peers.py    (the largest latency workload against fail2ban and tail -F | grep;
                                           every latency workload against the CPython floor, bench/floor.py)
    catch-up throughput bench/catchup.py  (1,000,000-line history vs grep -cE)
    idle cost           bench/idle.py     (100 quiet runs, 60 s)

The chaos suite is separate: ``python bench/chaos.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import catchup  # noqa: E402
import idle  # noqa: E402
import latency  # noqa: E402
import peers  # noqa: E402

CRON_PERIOD_S = 300


@dataclass(frozen=True)
class Scale:
    latency_runs: tuple[int, ...]
    latency_duration_s: float
    latency_samples: int
    rate: float
    history_lines: int
    rounds: int
    idle_runs: int
    idle_window_s: float


FULL = Scale((1, 10, 100), 30.0, 300, 20.0, 1_000_000, 3, 100, 60.0)
QUICK = Scale((1, 10), 3.0, 30, 20.0, 50_000, 1, 10, 3.0)

GOAL_P99_MS = 50.0
GOAL_GREP_RATIO = 3.0
GOAL_IDLE_CPU_PCT = 1.0
GOAL_IDLE_RSS_MB = 100.0


def machine() -> dict[str, str]:
    def first(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "?")
    except OSError:
        pass
    mem = first(["free", "-h"]).splitlines()
    from expwatch.rules.prefilter import hyperscan

    return {
        "nproc": first(["nproc"]),
        "memory": mem[1].split()[1] if len(mem) > 1 else "?",
        "cpu": cpu,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "grep": first(["grep", "--version"]).splitlines()[0] if shutil.which("grep") else "?",
        "prefilter": f"hyperscan {getattr(hyperscan, '__version__', '')}".strip() if hyperscan else "re (hyperscan not installed)",
    }


def fmt_rate(lines: int, seconds: float | None) -> str:
    if not seconds:
        return "-"
    rate = lines / seconds
    return f"{rate / 1e6:.2f} M lines/s ({seconds:.3f} s)" if rate >= 1e6 else f"{rate / 1e3:.0f} k lines/s ({seconds:.3f} s)"


def table(scale: Scale, quick: bool, info: dict, lat: list, floors: dict, cup, idl) -> tuple[str, list[str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    missed: list[str] = []

    def verdict(ok: bool, what: str) -> str:
        if quick:
            return "n/a (--quick)"
        if not ok:
            missed.append(what)
        return "met" if ok else "MISSED"

    for r in lat:
        ok = r.p99_ms < GOAL_P99_MS and r.seen == r.probes
        rows.append((
            "detection latency",
            f"{r.runs} run{'s' if r.runs > 1 else ''} × {r.rate:g} lines/s, {r.probes} probes",
            f"p50 {r.p50_ms:.0f} ms, p99 {r.p99_ms:.0f} ms, max {r.max_ms:.0f} ms"
            + (f" ({r.probes - r.seen} probes not matched)" if r.seen != r.probes else "")
            + f"; watcher CPU {r.watcher_cpu_pct:.1f}%"
            + f" (CPython floor {floors[r.runs].cpu_pct:.1f}%)",
            f"p99 < {GOAL_P99_MS:.0f} ms" if r.runs == max(scale.latency_runs) else "",
            verdict(ok, f"latency p99 at {r.runs} runs") if r.runs == max(scale.latency_runs) else "",
        ))
    worst = max((r.max_ms for r in lat), default=float("nan"))
    rows.append((
        "cron check, every 5 min", "for reference: a failure just after a check",
        f"worst {CRON_PERIOD_S * 1000:,} ms, mean {CRON_PERIOD_S * 500:,} ms",
        "", f"{CRON_PERIOD_S * 1000 / max(worst, 1):,.0f}× expwatch's worst ({worst:.0f} ms)",
    ))
    ratio = cup.expwatch_s / cup.grep_s
    rows.append((
        "catch-up throughput",
        f"{cup.lines:,} lines ({cup.mbytes:.0f} MB), {cup.matching_lines:,} match",
        f"expwatch {fmt_rate(cup.lines, cup.expwatch_s)} [{cup.engine}]; grep -cE {fmt_rate(cup.lines, cup.grep_s)}; "
        f"expwatch/grep time {ratio:.2f}×",
        f"within {GOAL_GREP_RATIO:g}× of grep",
        verdict(ratio <= GOAL_GREP_RATIO, "catch-up within 3x of grep"),
    ))
    if cup.expwatch_re_s:
        rows.append(("catch-up, without Hyperscan", "same log, pure-re prefilter",
                     f"{fmt_rate(cup.lines, cup.expwatch_re_s)}; {cup.expwatch_re_s / cup.grep_s:.1f}× grep's time", "", ""))
    if cup.python_loop_s:
        rows.append(("catch-up, plain Python loop", "re.search per pattern per line",
                     f"{fmt_rate(cup.lines, cup.python_loop_s)}; {cup.python_loop_s / cup.grep_s:.0f}× grep's time", "", ""))
    ok = idl.cpu_pct < GOAL_IDLE_CPU_PCT and idl.rss_mb_max < GOAL_IDLE_RSS_MB
    rows.append((
        "idle cost", f"{idl.runs} quiet runs, {idl.window_s:.0f} s",
        f"CPU {idl.cpu_pct:.2f}% of a core, RSS {idl.rss_mb_max:.0f} MB, {idl.threads} threads",
        f"< {GOAL_IDLE_CPU_PCT:g}% CPU, < {GOAL_IDLE_RSS_MB:.0f} MB", verdict(ok, "idle cost"),
    ))
    head = [
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, Python {info['python']}, {info['os']}",
        f"         {info['grep']}; prefilter engine: {info['prefilter']}",
        "",
        "| benchmark | setting | result | goal | verdict |",
        "|---|---|---|---|---|",
    ]
    return "\n".join(head + [f"| {' | '.join(row)} |" for row in rows]), missed


def ratio(ours: float, theirs: float, floor: float) -> str:
    """``ours/theirs``, or why not: a peer below what its measure resolves gives no meaningful ratio."""
    return f"{ours / theirs:.2f}×" if theirs >= floor else f"n/a (peer < {floor:g})"


def peer_table(ours, others: list, skipped: dict[str, str]) -> str:
    """expwatch beside its peers on one workload, with the ratios the README quotes."""
    rows = [("expwatch (watcher)", ours.p50_ms, ours.p99_ms, ours.max_ms, ours.watcher_cpu_pct, ours.watcher_cpu_pct,
             ours.rss_mb, ours.seen, ours.probes)]
    rows += [(f"{p.tool} ({p.version})", p.p50_ms, p.p99_ms, p.max_ms, p.cpu_pct, p.cpu_children_pct, p.rss_mb, p.seen, p.probes)
             for p in others]
    out = [f"Peers, same workload: {ours.runs} runs × {ours.rate:g} lines/s, {ours.probes} probes (each tool to its action)", "",
           "| tool | p50 | p99 | max | CPU (% of one core) | with children | RSS | probes seen |", "|---|---|---|---|---|---|---|---|"]
    # "tail|grep" in a Markdown cell must not end it.
    out += [f"| {name.replace('|', chr(92) + '|')} | {p50:.1f} ms | {p99:.1f} ms | {mx:.1f} ms | {cpu:.1f}% | {cpuc:.1f}% | {rss:.0f} MB | {seen}/{n} |"
            for name, p50, p99, mx, cpu, cpuc, rss, seen, n in rows]
    out.append("")
    for p in others:
        out.append(f"expwatch/{p.tool}: CPU {ratio(ours.watcher_cpu_pct, p.cpu_children_pct, 0.05)}, "
                   f"p99 {ratio(ours.p99_ms, p.p99_ms, 0.01)}, RSS {ratio(ours.rss_mb, p.rss_mb, 0.1)}")
    out += [f"{tool}: not run ({why})" for tool, why in skipped.items()]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small scale, under a minute, judges nothing (CI)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="keep the experiments folders here (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else FULL
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="expwatch-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load_at_start = os.getloadavg()
    try:
        info = machine()
        lat = []
        for runs in scale.latency_runs:
            print(f"detection latency, {runs} runs ...", file=sys.stderr, flush=True)
            lat.append(latency.measure(workdir, runs, scale.rate, scale.latency_duration_s, scale.latency_samples, args.seed))
        skipped = peers.available()
        others = []
        biggest = max(scale.latency_runs)
        for tool, measure in (("fail2ban", peers.measure_fail2ban), ("tail|grep", peers.measure_tail_grep)):
            if tool not in skipped:
                print(f"{tool}, {biggest} runs ...", file=sys.stderr, flush=True)
                others.append(measure(workdir, biggest, scale.rate, scale.latency_duration_s, scale.latency_samples, args.seed))
        floors = {}
        for runs in scale.latency_runs:
            print(f"CPython floor, {runs} runs ...", file=sys.stderr, flush=True)
            floors[runs] = peers.measure_floor(workdir, runs, scale.rate, scale.latency_duration_s, scale.latency_samples, args.seed)
        others.append(floors[biggest])
        print(f"catch-up, {scale.history_lines:,} lines ...", file=sys.stderr, flush=True)
        cup = catchup.measure(workdir, scale.history_lines, scale.rounds, python_loop=True, seed=args.seed)
        print(f"idle cost, {scale.idle_runs} runs ...", file=sys.stderr, flush=True)
        idl = idle.measure(workdir, scale.idle_runs, scale.idle_window_s)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    text, missed = table(scale, args.quick, info, lat, floors, cup, idl)
    elapsed = time.monotonic() - started
    print(f"\n## expwatch benchmarks{' (--quick: small scale, nothing judged)' if args.quick else ''}\n")
    print(text)
    print()
    print(peer_table(next(r for r in lat if r.runs == biggest), others, skipped))
    load_at_end = os.getloadavg()
    print(f"\n(ran in {elapsed:.0f} s; `python bench/run.py{' --quick' if args.quick else ''}`; load average "
          f"{' / '.join(f'{x:.2f}' for x in load_at_start)} at start, {' / '.join(f'{x:.2f}' for x in load_at_end)} at end)")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "quick": args.quick, "latency": [asdict(r) for r in lat],
                                         "catchup": asdict(cup), "idle": asdict(idl),
                                         "peers": [asdict(p) for p in others], "floors": [asdict(f) for f in floors.values()], "load_average": [load_at_start, load_at_end], "elapsed_s": elapsed}, indent=1))
    if missed:
        print(f"goals missed: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
