"""A small real evaluation script: the openai client against tests/endpoint.py.

It does what the scripts expwatch watches do: a thread pool of --workers
calls, one answer per item appended to RESULT.json, an atomic checkpoint
after each item, resume from the checkpoint, and no handling of API errors
(a RateLimitError the client's own retries did not absorb crashes it).
``--http-log quiet`` silences httpx as most scripts do; ``info`` logs every
request line. ``--catch`` is the hand-written retry loop many scripts have
instead: a RateLimitError is logged with ``log.exception`` (a whole
traceback in the log) and the call tried again after the server's hint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

log = logging.getLogger("eval")


def write_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def call_model(client: openai.OpenAI, model: str, item: str) -> str:
    log.info("calling %s for item=%s", model, item)
    resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"Question {item}: answer A or B"}])
    return resp.choices[0].message.content


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="gpt-4o")
    parser.add_argument("--max-retries", type=int, default=2)
    parser.add_argument("--http-log", choices=["info", "quiet"], default="quiet")
    parser.add_argument("--catch", action="store_true", help="log a RateLimitError and retry it, as a hand-written loop does")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.http_log == "quiet":
        # openai 3.x sends through httpx2; older clients through httpx.
        for name in ("httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)
    checkpoint = args.output.with_name(f"{args.output.stem}_checkpoint.json")
    per_item = json.loads(checkpoint.read_text())["per_item"] if checkpoint.exists() else []
    done = {r["id"] for r in per_item}
    log.info("Starting evaluation: model=%s items=%d workers=%d resumed=%d", args.model, args.items, args.workers, len(done))
    client = openai.OpenAI(base_url=args.base_url, api_key=os.environ.get("OPENAI_API_KEY", "sk-test"), max_retries=args.max_retries)
    lock = threading.Lock()

    def answered(item: str) -> str:
        while True:
            try:
                return call_model(client, args.model, item)
            except openai.RateLimitError as exc:
                if not args.catch:
                    raise
                log.exception("rate limited on %s; retrying", item)
                time.sleep(float(exc.response.headers.get("retry-after", "1")))

    def run(item: str) -> None:
        answer = answered(item)
        with lock:
            per_item.append({"id": item, "response": answer, "correct": answer == "A", "task_type": "MCQ"})
            config = {"model": args.model, "workers": args.workers}
            write_atomic(args.output, {"config": config, "per_item": per_item})
            write_atomic(checkpoint, {"completed_ids": [r["id"] for r in per_item], "per_item": per_item})
        log.info("[%d/%d] %s done", len(per_item), args.items, item)

    todo = [f"item-{i:04d}" for i in range(args.items) if f"item-{i:04d}" not in done]
    with ThreadPoolExecutor(args.workers) as pool:
        for future in [pool.submit(run, item) for item in todo]:
            future.result()
    log.info("Evaluation complete: %d items", len(per_item))


if __name__ == "__main__":
    main()
