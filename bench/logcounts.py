"""Validation's log counts over a long log: expwatch's streamed RE2 counter beside whole-text Python ``re`` and grep.

    python bench/logcounts.py [--lines 1000000] [--rounds 2]

`validate --log` and the watcher's `complete` action count
`configs/validation.yaml`'s ``log_patterns`` in a run's log. Each figure is
one fresh Python process, with its wall time and peak RSS, so neither mode
inherits the other's heap. The modes run alternately, ``--rounds`` times each:

* ``expwatch``: ``expwatch.results.logcounts.count_log_lines``, as validation calls it;
* ``re``: the plain way, and expwatch's own before session 29: the whole log read as
  text, ``splitlines``, Python's ``re`` per line and pattern (the shipped patterns, with
  ``rate_limit``'s lookahead, which RE2 cannot run, in its original form);
* ``grep``: ``grep -c -P`` once per pattern, the calls' times summed: what a shell user pays.

All three must count the same (checked), or the run fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from history import write_history  # noqa: E402

# Before RE2, the shipped rate_limit pattern said "not followed by er" with a lookahead.
LOOKAHEAD_FORM = ("(?:[^e]|e[^r]|e?$)", "(?!er)")

MODE = """
import json, re, resource, sys, time
from pathlib import Path
from expwatch.results.config import load_validation_settings
mode, log = sys.argv[1], Path(sys.argv[2])
log_patterns = load_validation_settings().log_patterns
started = time.perf_counter()
if mode == "re":
    patterns = {name: re.compile(p.pattern.replace(*json.loads(sys.argv[3]))) for name, p in log_patterns.patterns.items()}
    counts = dict.fromkeys(patterns, 0)
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        for name, pattern in patterns.items():
            if pattern.search(line):
                counts[name] += 1
else:
    from expwatch.results.logcounts import count_log_lines
    counts = count_log_lines(log, log_patterns)
print(json.dumps({"s": time.perf_counter() - started, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "counts": counts}))
"""


def run_mode(mode: str, log: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", MODE, mode, str(log), json.dumps(LOOKAHEAD_FORM)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def grep_counts(log: Path) -> tuple[float, dict[str, int]]:
    """``grep -c -P`` once per pattern (PCRE reads the patterns as written): the summed time and each count."""
    from expwatch.results.config import load_validation_settings

    total, counts = 0.0, {}
    for name, pattern in load_validation_settings().log_patterns.patterns.items():
        started = time.perf_counter()
        done = subprocess.run(["grep", "-c", "-P", pattern.pattern, str(log)], capture_output=True, text=True)
        total += time.perf_counter() - started
        counts[name] = int(done.stdout.strip() or 0)
    return total, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/expwatch-bench-logcounts"))
    args = parser.parse_args()
    log = args.workdir / "history.log"
    write_history(log, args.lines, 1)
    results: dict[str, list[dict]] = {"expwatch": [], "re": []}
    for _ in range(args.rounds):
        for mode in results:
            results[mode].append(run_mode(mode, log))
    grep_s, by_grep = grep_counts(log)
    ours, theirs = results["expwatch"][0]["counts"], results["re"][0]["counts"]
    if not ours == theirs == by_grep:
        print(f"counts differ: expwatch {ours}, re {theirs}, grep {by_grep}", file=sys.stderr)
        return 1
    print(f"{args.lines:,} lines, {log.stat().st_size / 1e6:.0f} MB; counts {ours}")
    for mode, rows in results.items():
        print(f"  {mode:<9} " + ", ".join(f"{r['s']:.2f} s" for r in rows) + f"; peak RSS {max(r['rss_mb'] for r in rows):.0f} MB")
    best = {mode: min(r["s"] for r in rows) for mode, rows in results.items()}
    print(f"  {'grep -P':<9} {grep_s:.2f} s, one call per pattern")
    print(f"  expwatch/re {best['expwatch'] / best['re']:.2f}x, expwatch/grep {best['expwatch'] / grep_s:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
