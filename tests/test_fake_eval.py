"""The fake eval behaves like a real eval run: it checkpoints, resumes, and fails with real signatures.

Every test drives the script as a child process, its stdout and stderr appended
to one log file the way expwatch's launcher does.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "expwatch" / "demo" / "fake_eval.py"
# The texts of openai 3.x over httpx2 (tests/test_fake_eval_real_client.py checks them against the real client).
HTTP_429 = 'INFO httpx2: HTTP Request: POST http://localhost:8000/v1/chat/completions "HTTP/1.1 429 Too Many Requests"'
HTTP_403 = 'INFO httpx2: HTTP Request: POST http://localhost:8000/v1/chat/completions "HTTP/1.1 403 Forbidden"'
RETRY = re.compile(r"INFO openai\._base_client: Retrying request in \d+\.\d{6} seconds \(retry (\d) of 2\)$")
RATE_LIMIT_LAST_LINE = (
    "openai.RateLimitError: Error code: 429 - Rate limit reached for gpt-4o in organization "
    "org-xxx on tokens per min (TPM): Limit 30000, Used 30000, Requested 1200. Please try again in 2.4s. "
    "Visit https://platform.openai.com/account/rate-limits to learn more."
)
OOM_LAST_LINE = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. "
    "GPU 0 has a total capacity of 79.15 GiB of which 1.02 GiB is free. "
    "Including non-PyTorch memory, this process has 78.12 GiB memory in use. "
    "Of the allocated memory 76.50 GiB is allocated by PyTorch, and 1.10 GiB is reserved by PyTorch but unallocated. "
    "If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
    "to avoid fragmentation.  See documentation for Memory Management  "
    "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)


class EvalRun:
    """One experiment folder: result file plus the log every run of it appends to."""

    def __init__(self, folder: Path) -> None:
        self.result = folder / "out.json"
        self.checkpoint = folder / "out_checkpoint.json"
        self.log = folder / "run.log"

    def command(self, *args: str) -> list[str]:
        # -S: no site-packages, so the script must stay stdlib only.
        return [sys.executable, "-S", str(SCRIPT), "--output", str(self.result), "--delay", "0", *args]

    def run(self, *args: str) -> tuple[int, list[str]]:
        """Run to the end; return the exit code and this run's log lines."""
        before = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("a") as log:
            code = subprocess.run(self.command(*args), stdout=log, stderr=subprocess.STDOUT, timeout=30).returncode
        with self.log.open() as log:
            log.seek(before)
            return code, log.read().splitlines()

    def items(self) -> list[dict]:
        return json.loads(self.result.read_text())["per_item"]

    def ids(self) -> list[str]:
        return [item["id"] for item in self.items()]


@pytest.fixture
def eval_run(tmp_path: Path) -> EvalRun:
    return EvalRun(tmp_path)


def expected_ids(n: int) -> list[str]:
    return [f"item-{i:04d}" for i in range(n)]


def test_run_completes_with_every_item_once_and_a_checkpoint(eval_run: EvalRun) -> None:
    code, lines = eval_run.run("--items", "8")

    assert code == 0
    assert eval_run.ids() == expected_ids(8)
    checkpoint = json.loads(eval_run.checkpoint.read_text())
    assert checkpoint["completed_ids"] == expected_ids(8)
    assert checkpoint["per_item"] == eval_run.items()
    config = json.loads(eval_run.result.read_text())["config"]
    assert config["model"]["name"] == "gpt-4o" and config["model"]["backend"]
    assert config["pipeline"]["resize_mode"] == "pad"
    assert config["mode"] == {"summary_prompt_variant": "v1"}
    assert "INFO eval: [8/8] item-0007 task=HLD correct=" in lines[-2]
    assert re.search(r" INFO eval: Evaluation complete: 8 items, accuracy [01]\.\d\d$", lines[-1])
    assert not list(eval_run.result.parent.glob("*.tmp"))


def test_items_are_deterministic_per_seed_and_backward_items_carry_max_time(tmp_path: Path) -> None:
    first, second, other_seed = EvalRun(tmp_path / "a"), EvalRun(tmp_path / "b"), EvalRun(tmp_path / "c")
    for run, seed in ((first, "1"), (second, "1"), (other_seed, "2")):
        run.result.parent.mkdir()
        run.run("--items", "10", "--seed", seed)

    assert first.items() == second.items()
    assert first.items() != other_seed.items()
    for item in first.items():
        assert item["response"] == f"The answer is {item['answer']}" and item["answer"] in "ABCD"
        if item["task_type"] in ("EPM", "ASI", "HLD"):
            assert item["max_time"] == item["realtime"]
        else:
            assert "max_time" not in item


def test_limit_stops_early_and_reruns_resume_until_each_item_appears_once(eval_run: EvalRun) -> None:
    code, lines = eval_run.run("--items", "7", "--limit", "3")
    assert code == 0 and eval_run.ids() == expected_ids(3)
    assert lines[-1].endswith("INFO eval: Limit reached: processed 3 items this run, 3/7 done")

    code, lines = eval_run.run("--items", "7", "--limit", "3")
    assert code == 0 and "INFO eval: Resuming from checkpoint: 3/7 items done" in "\n".join(lines)
    code, lines = eval_run.run("--items", "7", "--limit", "3")

    assert code == 0
    assert eval_run.ids() == expected_ids(7)
    assert re.search(r" INFO eval: Evaluation complete: 7 items, accuracy [01]\.\d\d$", lines[-1])


@pytest.mark.parametrize(
    ("kind", "last_line"),
    [
        ("rate_limit", RATE_LIMIT_LAST_LINE),
        ("traceback", "KeyError: 'choices'"),
        ("oom", OOM_LAST_LINE),
        ("proxy", "openai.APIConnectionError: Connection error."),
    ],
)
def test_crash_faults_end_in_a_real_traceback(eval_run: EvalRun, kind: str, last_line: str) -> None:
    code, lines = eval_run.run("--items", "6", "--fault", f"{kind}@2")

    assert code == 1
    assert lines[-1] == last_line
    assert "Traceback (most recent call last):" in lines
    assert eval_run.ids() == expected_ids(2)


def test_rate_limit_prints_a_burst_of_429s_and_retries(eval_run: EvalRun) -> None:
    _, lines = eval_run.run("--items", "6", "--fault", "rate_limit@2", "--http-log", "verbose")

    http = [line for line in lines if line.endswith(HTTP_429)]
    retries = [m.group(1) for m in map(RETRY.search, lines) if m]
    assert len(http) == 3 and retries == ["1", "2"]
    assert seconds_between(http[0], http[-1]) < 1.0


@pytest.mark.parametrize("kind", ["rate_limit", "proxy", "forbidden"])
def test_quiet_http_log_leaves_only_what_an_uncaught_exception_prints(eval_run: EvalRun, kind: str) -> None:
    _, lines = eval_run.run("--items", "6", "--fault", f"{kind}@2", "--http-log", "quiet")

    assert not [line for line in lines if " INFO httpx2: " in line or " openai._base_client: " in line]
    if kind != "forbidden":
        first = lines.index("Traceback (most recent call last):")
        assert all(" INFO eval: " in line for line in lines[:first])


def test_traceback_fault_is_raised_inside_parse_answer(eval_run: EvalRun) -> None:
    _, lines = eval_run.run("--items", "6", "--fault", "traceback@2")

    frames = [line for line in lines if line.startswith("  File ")]
    assert frames[-1].endswith(", in parse_answer")


def test_proxy_fault_chains_the_connect_error(eval_run: EvalRun) -> None:
    _, lines = eval_run.run("--items", "6", "--fault", "proxy@2")

    cause = lines.index("httpcore2.ConnectError: [Errno 111] Connection refused")
    assert lines[cause + 2] == "The above exception was the direct cause of the following exception:"
    mapped = lines.index("httpx2.ConnectError: [Errno 111] Connection refused")
    assert mapped > cause and lines[mapped + 2] == "The above exception was the direct cause of the following exception:"


def test_forbidden_storm_is_survived(eval_run: EvalRun) -> None:
    code, lines = eval_run.run("--items", "6", "--fault", "forbidden@2", "--http-log", "verbose")

    forbidden = [line for line in lines if line.endswith(HTTP_403)]
    assert len(forbidden) == 10
    assert seconds_between(forbidden[0], forbidden[-1]) < 1.0
    assert code == 0 and eval_run.ids() == expected_ids(6)


def test_null_fault_records_content_policy_nulls_from_its_position(eval_run: EvalRun) -> None:
    code, lines = eval_run.run("--items", "6", "--fault", "null@4")

    assert code == 0
    assert [item["null_reason"] for item in eval_run.items()] == [None] * 4 + ["content_policy"] * 2
    assert lines[-5].endswith("WARNING eval: content policy violation for item-0004, recording null")
    assert all(item["response"] is None and item["correct"] is False for item in eval_run.items()[4:])


def test_die_exits_3_without_a_word(eval_run: EvalRun) -> None:
    code, lines = eval_run.run("--items", "6", "--fault", "die@2")

    assert code == 3
    assert "INFO eval: [2/6] item-0001" in lines[-1]


def test_sigkill_kills_the_process(eval_run: EvalRun) -> None:
    code, lines = eval_run.run("--items", "6", "--fault", "sigkill@2")

    assert code == -signal.SIGKILL
    assert "INFO eval: [2/6] item-0001" in lines[-1]


def test_hang_stays_alive_and_silent(eval_run: EvalRun) -> None:
    with eval_run.log.open("a") as log:
        process = subprocess.Popen(eval_run.command("--items", "6", "--fault", "hang@1"), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while "[1/6] item-0000" not in eval_run.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        size = eval_run.log.stat().st_size
        time.sleep(0.7)
        assert process.poll() is None
        assert eval_run.log.stat().st_size == size
        assert eval_run.ids() == expected_ids(1)
    finally:
        process.kill()
        process.wait()


def test_once_fault_fires_only_on_the_first_run_and_the_rerun_completes(eval_run: EvalRun) -> None:
    first, _ = eval_run.run("--items", "6", "--fault", "sigkill@2")
    second, lines = eval_run.run("--items", "6", "--fault", "sigkill@2")

    assert first == -signal.SIGKILL
    assert json.loads((eval_run.result.parent / "out_faults.json").read_text()) == {"fired": ["sigkill:once@2"]}
    assert second == 0
    assert "Resuming from checkpoint: 2/6 items done" in lines[2]
    assert eval_run.ids() == expected_ids(6)


def test_always_fault_recurs_at_the_same_item_with_no_progress(eval_run: EvalRun) -> None:
    runs = [eval_run.run("--items", "5", "--fault", "traceback:always@3") for _ in range(3)]

    assert [code for code, _ in runs] == [1, 1, 1]
    # Every run stops just before item-0003: the resumes make no progress.
    assert eval_run.ids() == expected_ids(3)
    assert all(lines[-1] == "KeyError: 'choices'" for _, lines in runs)


def test_default_position_is_a_third_of_the_items(eval_run: EvalRun) -> None:
    code, _ = eval_run.run("--items", "9", "--fault", "die")

    assert code == 3 and eval_run.ids() == expected_ids(3)


def test_fault_beyond_the_limit_stays_armed(eval_run: EvalRun) -> None:
    first, _ = eval_run.run("--items", "6", "--limit", "2", "--fault", "die@3")
    second, _ = eval_run.run("--items", "6", "--fault", "die@3")

    assert (first, second) == (0, 3)
    assert eval_run.ids() == expected_ids(3)


def test_null_and_leak_rates_give_exact_seeded_counts(eval_run: EvalRun) -> None:
    eval_run.run("--items", "20", "--null-rate", "0.25", "--leak-rate", "0.5", "--seed", "7")

    items = eval_run.items()
    nulls = [item for item in items if item["null_reason"] == "content_policy"]
    assert len(nulls) == 5
    assert all(item["response"] is None and item["answer"] is None and item["correct"] is False for item in nulls)
    backward = [item for item in items if item["task_type"] in ("EPM", "ASI", "HLD")]
    leaked = [item for item in backward if item.get("max_time") != item["realtime"]]
    assert len(backward) == 12 and len(leaked) == 6
    assert Counter(item["task_type"] for item in items) == {"EPM": 4, "ASI": 4, "HLD": 4, "QA": 4, "OCR": 4}


def test_runs_as_a_module(tmp_path: Path) -> None:
    result = tmp_path / "m.json"
    done = subprocess.run(
        [sys.executable, "-m", "expwatch.demo.fake_eval", "--output", str(result), "--items", "2", "--delay", "0"],
        cwd=SCRIPT.parents[1], capture_output=True, text=True, timeout=30,
    )

    assert done.returncode == 0, done.stderr
    assert len(json.loads(result.read_text())["per_item"]) == 2


def seconds_between(first: str, last: str) -> float:
    """Seconds between two log lines' ``HH:MM:SS,mmm`` timestamps (same day)."""

    def seconds(line: str) -> float:
        hours, minutes, rest = line.split(" ")[1].split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(rest.replace(",", "."))

    return seconds(last) - seconds(first)
