"""Where the live path's CPU goes: py-spy over a real detection-latency run.

    python bench/profile.py [--runs 100] [--duration 20] [--top 25] [--out stacks.txt] [--idle]

Runs bench/latency.py's workload (N adopted runs, bench/logwriter.py at 20
lines/s each, probe lines) while py-spy samples the watcher process, then
prints, per thread, the functions holding the most samples: *self* (the
function was on top of the stack) and *total* (anywhere on it). py-spy is a
pip package (``pip install py-spy``); it reads the process from outside, so
the watcher runs unmodified. ``--idle`` samples bench/idle.py's workload
instead: N quiet runs, nothing written, the shipped 5 s safety poll.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import idle  # noqa: E402
import latency  # noqa: E402

# py-spy raw format: "thread (0x7f..);frame;frame;... count", a frame being "func (file:line)".
FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _name(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{m['func']} ({Path(m['file']).name})"


def summarise(raw: Path, top: int, rate: int) -> str:
    """Self and total samples per function, with the thread totals they belong to."""
    self_n: Counter[str] = Counter()
    total_n: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread, frames = frames[0], [_name(f) for f in frames[1:]]
        samples += n
        threads[thread.partition("): ")[2] or thread] += n
        if frames:
            self_n[frames[-1]] += n
        for name in set(frames):
            total_n[name] += n
    out = [f"{samples} samples ({rate}/s)", "", "| thread | samples | share |", "|---|---|---|"]
    out += [f"| {t} | {n} | {100 * n / samples:.0f}% |" for t, n in threads.most_common(6)]
    out += ["", "| function (self) | samples | share |", "|---|---|---|"]
    out += [f"| `{f}` | {n} | {100 * n / samples:.1f}% |" for f, n in self_n.most_common(top)]
    out += ["", "| function (total, on the stack) | samples | share |", "|---|---|---|"]
    out += [f"| `{f}` | {n} | {100 * n / samples:.1f}% |" for f, n in total_n.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, help="keep py-spy's raw stacks here")
    parser.add_argument("--idle", action="store_true", help="profile quiet runs (bench/idle.py) instead of the live path")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="expwatch-profile-") as tmp:
        raw = args.out or Path(tmp) / "stacks.txt"
        if args.idle:
            quiet = idle.measure(Path(tmp), args.runs, args.duration, profile=raw)
            print(f"{args.runs} quiet runs for {quiet.window_s:.0f} s: watcher CPU {quiet.cpu_pct:.2f}% of a core, "
                  f"RSS {quiet.rss_mb_max:.0f} MB\n")
            print(summarise(raw, args.top, idle.PROFILE_RATE))
            return 0
        result = latency.measure(Path(tmp), args.runs, 20.0, args.duration, 200, 1, profile=raw)
        print(f"{args.runs} runs × 20 lines/s for {args.duration:g} s: watcher CPU {result.watcher_cpu_pct:.1f}% of a core, "
              f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, {result.seen}/{result.probes} probes\n")
        print(summarise(raw, args.top, latency.PROFILE_RATE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
