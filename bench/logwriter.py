"""Writes the logs of many runs at once, like their evaluation scripts would.

Run as its own process by bench/latency.py (stdlib only)::

    python bench/logwriter.py CONFIG.json

CONFIG: {"logs": [paths], "rate": lines/s per log, "duration": s,
"probe_every": s per log, "seed": int, "start_at": wall-clock time}.
Each log gets ordinary lines at ``rate`` (exponential gaps, like requests
finishing) through its own O_APPEND descriptor, one ``os.write`` per line as a
line-buffered logger does. Every ``probe_every`` seconds (random phase) a log
gets a *probe* line carrying the wall-clock time taken just before its write:

    2026-11-26 12:00:00,123 INFO bench: latency probe run=r007 seq=3 t=1764158400.123456

The watcher's ``rule matched`` record for it then yields the detection latency.
On exit it prints one JSON line: {"lines": n, "probes": n, "late_s": worst lateness}.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import sys
import time
from datetime import datetime

ENDPOINT = "http://localhost:8000/v1/chat/completions"


def ordinary_line(rng: random.Random, n: int) -> str:
    now = datetime.now()
    ts = f"{now:%Y-%m-%d %H:%M:%S},{now.microsecond // 1000:03d}"
    pick = rng.random()
    if pick < 0.45:
        return f'{ts} INFO httpx: HTTP Request: POST {ENDPOINT} "HTTP/1.1 200 OK"'
    if pick < 0.9:
        return f"{ts} INFO eval: [{n}/100000] item-{n:06d} task=EPM correct={rng.random() < 0.7} latency={rng.random() * 3:.2f}s"
    if pick < 0.98:
        return f"{ts} DEBUG eval: prompt tokens={rng.randrange(4000)} completion tokens={rng.randrange(400)} frames=32"
    return f"{ts} WARNING eval: content policy violation for item-{n:06d}, recording null"


def main(config_path: str) -> int:
    with open(config_path) as fh:
        cfg = json.load(fh)
    rng = random.Random(cfg["seed"])
    fds = [os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644) for path in cfg["logs"]]
    names = [os.path.splitext(os.path.basename(path))[0] for path in cfg["logs"]]
    rate, probe_every = float(cfg["rate"]), float(cfg["probe_every"])
    start = float(cfg["start_at"])
    end = start + float(cfg["duration"])
    # (due, kind, log index): kind 0 = ordinary line, 1 = probe
    heap: list[tuple[float, int, int]] = []
    for i in range(len(fds)):
        if rate > 0:
            heap.append((start + rng.expovariate(rate), 0, i))
        heap.append((start + rng.uniform(0, probe_every), 1, i))
    heapq.heapify(heap)
    lines = probes = 0
    seq = [0] * len(fds)
    late = 0.0
    while heap:
        due, kind, i = heapq.heappop(heap)
        if due >= end:
            continue
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        else:
            late = max(late, -wait)
        if kind == 0:
            os.write(fds[i], (ordinary_line(rng, lines) + "\n").encode())
            lines += 1
            heapq.heappush(heap, (due + rng.expovariate(rate), 0, i))
        else:
            seq[i] += 1
            now = datetime.now()
            ts = f"{now:%Y-%m-%d %H:%M:%S},{now.microsecond // 1000:03d}"
            t = time.time()
            os.write(fds[i], f"{ts} INFO bench: latency probe run={names[i]} seq={seq[i]} t={t:.6f}\n".encode())
            probes += 1
            heapq.heappush(heap, (due + probe_every, 1, i))
    for fd in fds:
        os.close(fd)
    print(json.dumps({"lines": lines, "probes": probes, "late_s": round(late, 4)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
