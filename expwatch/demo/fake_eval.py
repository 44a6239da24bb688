"""A stand-in for a long ML evaluation script, with failures on demand.

expwatch's tests, benchmarks and demo need a child process that behaves like a
real eval run calling GPT-4o through a local proxy: it logs through ``logging``,
checkpoints after every item, resumes after a restart, and fails the way real
runs fail (429 storms, code bugs, CUDA OOM, a dead proxy, hangs, silent deaths).
It is stdlib only so it runs under any Python 3.11, with or without expwatch's
dependencies::

    python -m expwatch.demo.fake_eval --output out.json [options]
    python path/to/expwatch/fake_eval.py --output out.json [options]

Options:
    --output RESULT.json  required; result file, {"config": {...}, "per_item": [...]}
    --items N             items in the data set, ids item-0000 ... (default 20)
    --limit N             process at most N items this run, then exit 0 (smoke tests)
    --delay SECONDS       simulated model latency per item (default 0.05)
    --workers W           only logged and recorded in the config (default 4)
    --seed S              makes answers, correctness, null and leak picks deterministic (default 0)
    --model NAME          model name in the config and in error messages (default gpt-4o)
    --http-log MODE       quiet (default): the HTTP client libraries are silenced (logger level
                          WARNING), as most scripts do, so a client failure shows only the
                          traceback Python prints for the uncaught exception; verbose: they
                          log at INFO, one "HTTP Request: ..." line per request and one
                          "Retrying request ..." line per retry
    --max-retries N       the openai client's max_retries (default 2, the client's own default)
    --null-rate F         fraction of items answered with a content-policy null (default 0)
    --leak-rate F         fraction of backward items (EPM, ASI, HLD) whose max_time is
                          missing or differs from realtime (default 0)
    --task-types LIST     comma-separated task types cycled over items (default EPM,ASI,HLD,QA,OCR)
    --fault SPEC          inject a failure; repeatable; see below

Counts are exact, not sampled: the null items are round-half-up(N * null-rate) of
all items and the leaked items round-half-up(B * leak-rate) of the B backward
items, chosen by a shuffle seeded with --seed. A leaked item either has no
``max_time`` key or a ``max_time`` later than its ``realtime``. Non-backward
items never have a ``max_time`` key.

Files, each rewritten atomically (temp file in the same folder, then os.replace)
after every item:
    RESULT.json               {"config": {...}, "per_item": [...]}
    RESULT_checkpoint.json    {"completed_ids": [...], "per_item": [...]}
    RESULT_faults.json        {"fired": [fault keys]}; written just before a `once` fault fires
On start the checkpoint (or else the result file) is loaded and its items kept,
so across any number of restarts every item appears exactly once.

Log lines (stderr, flushed per line, like ``logging.basicConfig``)::

    2026-11-26 12:00:00,123 INFO eval: Starting evaluation: model=gpt-4o items=20 workers=4 seed=0 output=out.json
    2026-11-26 12:00:00,123 INFO eval: Config: {...json...}
    2026-11-26 12:00:00,123 INFO eval: Resuming from checkpoint: 6/20 items done
    2026-11-26 12:00:00,123 INFO eval: [7/20] item-0006 task=EPM correct=True latency=0.05s
    2026-11-26 12:00:00,123 WARNING eval: content policy violation for item-0007, recording null
    2026-11-26 12:00:00,123 INFO eval: Limit reached: processed 3 items this run, 9/20 done
    2026-11-26 12:00:00,123 INFO eval: Evaluation complete: 20 items, accuracy 0.65

Faults, ``--fault KIND[:WHEN][@AT]``:
    WHEN  ``once`` (default) fires on the first run that reaches it only; ``always``
          fires on every run that reaches it, so a terminal `always` fault means
          the run can never complete (a genuine bug).
    AT    0-based index of the item (item-AT) before which the fault fires;
          default items // 3. It fires only in a run that still has that item
          pending, so an `always` fault that ends the run recurs at the very
          same item on every resume, with no progress in between (a genuine,
          deterministic bug). A run that --limit stops before item AT does not
          fire it, and a `once` fault then stays armed.
    Faults due at the same item fire in command-line order; the first
    terminal one ends the run.

    KIND       what the log shows, then how the process ends (the client lines only with
               --http-log verbose; the traceback in both modes)
    rate_limit what the openai client prints when every attempt gets a 429: per attempt
                    INFO httpx2: HTTP Request: POST http://localhost:8000/v1/chat/completions "HTTP/1.1 429 Too Many Requests"
               and between attempts
                    INFO openai._base_client: Retrying request in 0.421337 seconds (retry 1 of 2)
               (max-retries + 1 attempts within ~0.5 s: the announced backoff is the client's,
               the sleep is shortened), then a traceback ending
               openai.RateLimitError: Error code: 429 - Rate limit reached for MODEL in organization org-xxx on tokens per min (TPM): Limit 30000, Used 30000, Requested 1200. Please try again in 2.4s. Visit https://platform.openai.com/account/rate-limits to learn more.
               exit 1
    traceback  a real bug: traceback through parse_answer ending  KeyError: 'choices'  exit 1
    oom        traceback ending  torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.15 GiB of which 1.02 GiB is free. Including non-PyTorch memory, ... (PyTorch 2.5+'s whole message)  exit 1
    proxy      max-retries x "Retrying request in ... seconds (retry i of N)", then the openai
               client's three-part chained traceback: httpcore2.ConnectError: [Errno 111]
               Connection refused, httpx2.ConnectError: [Errno 111] Connection refused, each
               followed by "The above exception was the direct cause of the following exception:",
               then openai.APIConnectionError: Connection error.  exit 1
    forbidden  10 x ... "HTTP/1.1 403 Forbidden" within ~0.5 s (the script retries each refused
               request itself; the openai client never retries a 403), then carries on normally
    null       from AT on, this run's items are content-policy nulls, each logged with the WARNING above
    hang       logs nothing more and sleeps forever (alive and silent)
    die        exits with status 3 and no message
    sigkill    kills itself with SIGKILL
No line ever announces an injected fault: the failure must be recognised from
what a real run would print. The client's texts, and where each was copied
from, live in fake_client.py beside this file.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__:
    from expwatch.demo.fake_client import CLIENT_LOGGERS, ENDPOINT, OOM_MESSAGE, FakeProxyClient, OutOfMemoryError, forbidden_storm
else:  # run as a file (python path/to/fake_eval.py): stdlib only, its folder is on the path
    from fake_client import CLIENT_LOGGERS, ENDPOINT, OOM_MESSAGE, FakeProxyClient, OutOfMemoryError, forbidden_storm

BACKWARD_TASK_TYPES = frozenset({"EPM", "ASI", "HLD"})
FAULT_KINDS = ("rate_limit", "traceback", "oom", "proxy", "hang", "die", "sigkill", "forbidden", "null")
ANSWER_LETTERS = "ABCD"

log = logging.getLogger("eval")


@dataclass(frozen=True)
class FaultSpec:
    """One ``--fault KIND[:WHEN][@AT]``; ``at`` is None when the default applies."""

    kind: str
    always: bool
    at: int | None

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        rest, _, at_text = text.partition("@")
        kind, _, when = rest.partition(":")
        if kind not in FAULT_KINDS:
            raise argparse.ArgumentTypeError(f"unknown fault kind {kind!r} in {text!r}; known: {', '.join(FAULT_KINDS)}")
        if when not in ("", "once", "always"):
            raise argparse.ArgumentTypeError(f"fault {text!r}: WHEN must be 'once' or 'always', not {when!r}")
        if at_text and not at_text.isdigit():
            raise argparse.ArgumentTypeError(f"fault {text!r}: AT must be a non-negative integer, not {at_text!r}")
        return cls(kind, when == "always", int(at_text) if at_text else None)

    @property
    def key(self) -> str:
        """Identity in the fault state file, stable across restarts with the same CLI."""
        at = "" if self.at is None else f"@{self.at}"
        return f"{self.kind}:{'always' if self.always else 'once'}{at}"

    def index(self, total_items: int) -> int:
        return total_items // 3 if self.at is None else self.at


@dataclass(frozen=True)
class ItemSpec:
    """Everything about one item that is fixed by seed and CLI before the run touches it."""

    item_id: str
    task_type: str
    gold: str
    predicted: str
    realtime: float
    max_time: float | None  # None: the record has no max_time key
    content_filtered: bool


@dataclass(frozen=True)
class RunFiles:
    result: Path

    @property
    def checkpoint(self) -> Path:
        return self.result.with_name(f"{self.result.stem}_checkpoint.json")

    @property
    def faults(self) -> Path:
        return self.result.with_name(f"{self.result.stem}_faults.json")


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"rate must be between 0 and 1, not {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fake_eval", description="Stand-in ML evaluation run with injectable faults.")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--items", type=_positive_int, default=20)
    parser.add_argument("--limit", type=_positive_int, default=None)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--workers", type=_positive_int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="gpt-4o")
    parser.add_argument("--null-rate", type=_rate, default=0.0)
    parser.add_argument("--leak-rate", type=_rate, default=0.0)
    parser.add_argument("--task-types", default="EPM,ASI,HLD,QA,OCR")
    parser.add_argument("--fault", type=FaultSpec.parse, action="append", default=[])
    parser.add_argument("--http-log", choices=("verbose", "quiet"), default="quiet")
    parser.add_argument("--max-retries", type=_non_negative_int, default=2)
    args = parser.parse_args(argv)
    args.task_types = [t.strip() for t in args.task_types.split(",") if t.strip()]
    if not args.task_types:
        parser.error("--task-types needs at least one task type")
    return args


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": {"name": args.model, "backend": "openai", "base_url": ENDPOINT.rsplit("/chat", 1)[0]},
        "items": args.items,
        "limit": args.limit,
        "delay": args.delay,
        "workers": args.workers,
        "seed": args.seed,
        "null_rate": args.null_rate,
        "leak_rate": args.leak_rate,
        "task_types": args.task_types,
        "faults": [fault.key for fault in args.fault],
        "pipeline": {"fps": 1, "resize_mode": "pad", "clip_delta_high": 0.5, "clip_delta_low": 0.1},
        "mode": {"summary_prompt_variant": "v1"},
    }


def _pick(indices: list[int], rate: float, salt: str) -> set[int]:
    """An exact, seeded subset: rates become counts so tests can assert them."""
    count = math.floor(len(indices) * rate + 0.5)
    return set(random.Random(salt).sample(indices, count))


def build_items(args: argparse.Namespace) -> list[ItemSpec]:
    types = [args.task_types[i % len(args.task_types)] for i in range(args.items)]
    nulls = _pick(list(range(args.items)), args.null_rate, f"{args.seed}:null")
    backward = [i for i, task in enumerate(types) if task in BACKWARD_TASK_TYPES]
    leaks = _pick(backward, args.leak_rate, f"{args.seed}:leak")
    items = []
    for index, task in enumerate(types):
        item_id = f"item-{index:04d}"
        rng = random.Random(f"{args.seed}:{item_id}")
        gold = rng.choice(ANSWER_LETTERS)
        wrong = rng.choice(ANSWER_LETTERS.replace(gold, ""))
        predicted = gold if rng.random() < 0.7 else wrong
        realtime = round(rng.uniform(5.0, 600.0), 2)
        # Drawn for every item so a different --leak-rate never changes the answers.
        leak_drops_key, leak_ahead = rng.random() < 0.5, round(rng.uniform(1.0, 60.0), 2)
        max_time: float | None = realtime if task in BACKWARD_TASK_TYPES else None
        if index in leaks:
            max_time = None if leak_drops_key else round(realtime + leak_ahead, 2)
        items.append(ItemSpec(item_id, task, gold, predicted, realtime, max_time, index in nulls))
    return items


def write_json_atomic(path: Path, data: Any) -> None:
    """Readers (and a restarted run) never see a half-written file.

    No fsync: we guard against the process dying mid-write, not the machine.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_previous(files: RunFiles) -> list[dict[str, Any]]:
    for path in (files.checkpoint, files.result):
        if path.exists():
            return json.loads(path.read_text())["per_item"]
    return []


def load_fired(files: RunFiles) -> set[str]:
    return set(json.loads(files.faults.read_text())["fired"]) if files.faults.exists() else set()


def encode_frames(item: ItemSpec, fault: str | None) -> None:
    if fault == "oom":
        raise OutOfMemoryError(OOM_MESSAGE)


def parse_answer(payload: dict[str, Any]) -> str | None:
    choice = payload["choices"][0]
    if choice["finish_reason"] == "content_filter":
        return None
    return choice["message"]["content"].rsplit(" ", 1)[-1]


def evaluate_item(item: ItemSpec, client: FakeProxyClient, fault: str | None, force_null: bool) -> dict[str, Any]:
    encode_frames(item, fault)
    payload = client.create(item.predicted, fault, filtered=item.content_filtered or force_null)
    answer = parse_answer(payload)
    if answer is None:
        log.warning("content policy violation for %s, recording null", item.item_id)
    record: dict[str, Any] = {
        "id": item.item_id,
        "task_type": item.task_type,
        "response": None if answer is None else f"The answer is {answer}",
        "answer": answer,
        "correct": answer == item.gold,
        "null_reason": "content_policy" if answer is None else None,
        "realtime": item.realtime,
    }
    if item.max_time is not None:
        record["max_time"] = item.max_time
    return record


def fire_process_fault(kind: str) -> None:
    """Faults that end (or freeze) the process without a Python exception, so nothing reaches the log."""
    if kind == "hang":
        while True:
            time.sleep(3600)
    if kind == "die":
        os._exit(3)
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)


def save(files: RunFiles, config: dict[str, Any], per_item: list[dict[str, Any]]) -> None:
    write_json_atomic(files.result, {"config": config, "per_item": per_item})
    write_json_atomic(files.checkpoint, {"completed_ids": [r["id"] for r in per_item], "per_item": per_item})


def run(args: argparse.Namespace) -> int:
    files = RunFiles(args.output.resolve())
    config = build_config(args)
    log.info(
        "Starting evaluation: model=%s items=%d workers=%d seed=%d output=%s",
        args.model, args.items, args.workers, args.seed, args.output,
    )
    log.info("Config: %s", json.dumps(config))
    per_item = load_previous(files)
    done = {record["id"] for record in per_item}
    if per_item:
        log.info("Resuming from checkpoint: %d/%d items done", len(done), args.items)
    pending = [item for item in build_items(args) if item.item_id not in done]
    fired = load_fired(files)
    armed = [fault for fault in args.fault if fault.always or fault.key not in fired]
    client = FakeProxyClient(args.model, args.delay, args.max_retries, args.seed)
    nulls_forced = False
    for position, item in enumerate(pending):
        if args.limit is not None and position >= args.limit:
            log.info("Limit reached: processed %d items this run, %d/%d done", position, len(per_item), args.items)
            return 0
        terminal = None
        for fault in (f for f in armed if f.index(args.items) == int(item.item_id.rsplit('-', 1)[1])):
            if not fault.always:
                fired.add(fault.key)
                write_json_atomic(files.faults, {"fired": sorted(fired)})
            if fault.kind == "forbidden":
                forbidden_storm()
            elif fault.kind == "null":
                nulls_forced = True
            else:
                terminal = fault.kind
                break
        if terminal is not None:
            fire_process_fault(terminal)
        started = time.monotonic()
        record = evaluate_item(item, client, terminal, nulls_forced)
        per_item.append(record)
        save(files, config, per_item)
        log.info(
            "[%d/%d] %s task=%s correct=%s latency=%.2fs",
            len(per_item), args.items, item.item_id, item.task_type, record["correct"], time.monotonic() - started,
        )
    accuracy = sum(record["correct"] for record in per_item) / len(per_item)
    log.info("Evaluation complete: %d items, accuracy %.2f", len(per_item), accuracy)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.http_log == "quiet":
        for name in CLIENT_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
