"""`expwatch status` over finished runs whose results are real-sized, first call and again.

    python bench/status.py [--runs 1000] [--items 500] [--repeat 3] [--json FILE]

bench/lab.py's finished runs hold two items each, which hides what reading a
real result costs: an eval's result holds hundreds (seed-shaped here:
id, task_type, response, answer, correct, null_reason, timings, token counts;
a tenth of the responses null). Each figure is the wall time of a fresh
``python -m expwatch status DIR --json`` process:

* ``first``: nothing remembered (``.expwatch/progress-cache.json`` removed), so every result is read;
* ``again``: the best of ``--repeat`` later calls, the figures of unchanged files remembered;
* ``floor``: a fresh Python process that only reads and parses every manifest and
  result (``json.loads``), with no validation and no cache: what any uncached reader pays.

Both status calls must print the same rows (checked), or the run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from expwatch.layout import ExperimentsLayout  # noqa: E402
from expwatch.manifest import RunManifest, save_manifest  # noqa: E402

FLOOR = """
import json, os, sys
runs = sys.argv[1]
for entry in os.scandir(runs):
    if entry.name.endswith(".json") and not entry.name.endswith(".exit.json"):
        with open(entry.path, "rb") as fh:
            manifest = json.loads(fh.read())
        with open(manifest["result"], "rb") as fh:
            json.loads(fh.read())
"""


def build(root: Path, runs: int, items: int, seed: int) -> None:
    rng = random.Random(seed)
    layout = ExperimentsLayout.at(root)
    results = root / "results"
    results.mkdir(parents=True)
    day_ago = time.time() - 86400
    for r in range(runs):
        name = f"qa{r:05d}"
        records = []
        for i in range(items):
            response = None if rng.random() < 0.1 else rng.choice("ABCD")
            answer = rng.choice("ABCD")
            records.append({"id": f"item-{i:04d}", "task_type": rng.choice(["EPM", "QA", "OCR"]), "response": response,
                            "answer": answer, "correct": response == answer, "realtime": round(rng.uniform(1, 30), 2),
                            "max_time": 30.0, "null_reason": "content_policy" if response is None else None,
                            "prompt_tokens": rng.randint(200, 2000), "completion_tokens": rng.randint(5, 400)})
        result, log = results / f"{name}.json", results / f"{name}.log"
        result.write_text(json.dumps({"config": {"model": "gpt-4o", "temperature": 0}, "per_item": records}, indent=2))
        log.write_text(f"[{items}/{items}] done\n")
        for path in (result, log):
            os.utime(path, (day_ago, day_ago))
        save_manifest(layout, RunManifest(name=name, argv=("python", "eval.py"), cwd=str(root), log=str(log), result=str(result),
                                          expected=items, completed_at="2026-12-01T10:00:00+00:00"))


def timed(argv: list[str]) -> tuple[float, str]:
    began = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - began
    if proc.returncode != 0:
        raise SystemExit(f"{argv[2:4]} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return elapsed, proc.stdout


def rows(text: str) -> list[dict]:
    # log_age_s moves between calls; every other field must agree.
    return [{k: v for k, v in row.items() if k != "log_age_s"} for row in json.loads(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="expwatch-status-")) / "experiments"
    try:
        build(root, args.runs, args.items, args.seed)
        status = [sys.executable, "-m", "expwatch", "status", str(root), "--json"]
        cache = ExperimentsLayout.at(root).home / "progress-cache.json"
        floor_s = min(timed([sys.executable, "-c", FLOOR, str(ExperimentsLayout.at(root).runs_dir)])[0] for _ in range(args.repeat))
        cache.unlink(missing_ok=True)
        first_s, first_out = timed(status)
        again = [timed(status) for _ in range(args.repeat)]
        again_s = min(t for t, _ in again)
        if any(rows(out) != rows(first_out) for _, out in again):
            raise SystemExit("status printed different rows with its figures remembered")
        count = len(json.loads(first_out))
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)
    figures = {"runs": args.runs, "items": args.items, "rows": count, "first_s": first_s, "again_s": again_s, "floor_s": floor_s}
    print(f"status over {args.runs:,} finished runs × {args.items} items ({count:,} rows)\n")
    print("| call | wall | ÷ floor |\n|---|---|---|")
    print(f"| first (every result read, figures kept) | {first_s:.2f} s | {first_s / floor_s:.2f}× |")
    print(f"| again (best of {args.repeat}) | {again_s:.2f} s | {again_s / floor_s:.2f}× |")
    print(f"| floor (json.loads of every manifest and result, no cache) | {floor_s:.2f} s | 1.00× |")
    print(f"\n(load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())} at the end)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
