"""A long, realistic evaluation log to catch up on (deterministic per seed).

Mostly what a healthy GPT-4o eval run prints at INFO level (an httpx line
per request, a progress line per item, token counts), with the usual
sprinkle of trouble: content-policy warnings, 429 bursts with retries, the
odd traceback. About 0.3% of lines match a default rule.
"""

from __future__ import annotations

import random
from pathlib import Path

ENDPOINT = "http://localhost:8000/v1/chat/completions"
TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "eval.py", line 212, in evaluate_item',
    "    answer = parse_answer(payload)",
    '  File "eval.py", line 98, in parse_answer',
    '    choice = payload["choices"][0]',
    "KeyError: 'choices'",
]


def history_lines(count: int, seed: int):
    rng = random.Random(seed)
    second = 0
    n = 0
    while n < count:
        if rng.random() < 0.05:
            second += 1
        ts = f"2026-11-{20 + second // 86400 % 9:02d} {second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d},{rng.randrange(1000):03d}"
        pick = rng.random()
        if pick < 0.45:
            block = [f'{ts} INFO httpx: HTTP Request: POST {ENDPOINT} "HTTP/1.1 200 OK"']
        elif pick < 0.90:
            item = n % 100000
            block = [f"{ts} INFO eval: [{item}/100000] item-{item:06d} task=EPM correct={rng.random() < 0.7} latency={rng.random() * 3:.2f}s"]
        elif pick < 0.97:
            block = [f"{ts} DEBUG eval: prompt tokens={rng.randrange(4000)} completion tokens={rng.randrange(400)} frames=32 fps=1 resize=pad"]
        elif pick < 0.997:
            block = [f"{ts} WARNING eval: content policy violation for item-{n % 100000:06d}, recording null"]
        elif pick < 0.9995:
            block = [
                f'{ts} INFO httpx: HTTP Request: POST {ENDPOINT} "HTTP/1.1 429 Too Many Requests"',
                f"{ts} INFO openai._base_client: Retrying request to /chat/completions in 2.000000 seconds",
            ]
        else:
            block = [f"{ts} ERROR eval: item failed, continuing", *TRACEBACK]
        for line in block[: count - n]:
            yield line
            n += 1


def write_history(path: Path, count: int, seed: int) -> None:
    """Write (or reuse, if already written with these parameters) the history log."""
    stamp = path.with_suffix(".params")
    params = f"{count} {seed} v1"
    if path.exists() and stamp.exists() and stamp.read_text() == params:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        batch = []
        for line in history_lines(count, seed):
            batch.append(line)
            if len(batch) >= 10000:
                fh.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            fh.write("\n".join(batch) + "\n")
    stamp.write_text(params)
