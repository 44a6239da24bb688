"""`expwatch validate`: result files built to carry one problem each give exactly the expected figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from expwatch.cli import main
from expwatch.results.validation import validate_result
from expwatch.results.config import ValidationSettingsError, load_validation_settings

JSON_KEYS = {
    "items", "null_count", "null_rate", "null_reasons", "raw_acc", "valid_acc", "per_task",
    "leaked_ids", "duplicate_ids", "answer_bias", "log_counts", "issues",
}


def rec(item_id, response="A", correct=True, task="QA", **fields) -> dict:
    """One per_item record in the seed's shape; ``response=None`` makes a null response."""
    record = {"id": item_id, "task_type": task, "response": response, "correct": correct}
    return {**record, **fields}


def write_result(path: Path, per_item: list[dict]) -> Path:
    path.write_text(json.dumps({"config": {"model": {"backend": "openai"}}, "per_item": per_item}))
    return path


def varied(n: int, correct: int, start: int = 0) -> list[dict]:
    """n valid items, answers spread over A-D so no answer dominates."""
    return [rec(f"q{start + i}", response="ABCD"[i % 4], correct=i < correct) for i in range(n)]


@pytest.fixture
def clean(tmp_path) -> Path:
    return write_result(tmp_path / "clean.json", varied(8, correct=6))


def test_clean_result_has_no_issues(clean):
    report = validate_result(clean, expected=8)
    assert report.issues == ()
    assert (report.items, report.raw_acc, report.valid_acc) == (8, 0.75, 0.75)
    assert main(["validate", str(clean), "--expected", "8"]) == 0


def test_nulls_with_mixed_reasons_report_raw_and_valid_accuracy(tmp_path):
    nulls = [
        rec("n1", response=None, correct=False, null_reason="content_policy"),
        rec("n2", response=None, correct=False, null_reason="content_policy"),
        rec("n3", response=None, correct=False, null_reason="timeout"),
        rec("n4", response=None, correct=False),
    ]
    report = validate_result(write_result(tmp_path / "out.json", varied(16, correct=12) + nulls))
    assert report.null_count == 4
    assert report.null_rate == pytest.approx(0.20)
    assert report.null_reasons == {"content_policy": 2, "timeout": 1, "unknown": 1}
    assert report.raw_acc == pytest.approx(0.60)
    assert report.valid_acc == pytest.approx(0.75)
    assert report.acc_gap_points == pytest.approx(15.0)
    assert report.issues == (
        "null rate 20.0% (4/20) above 5%: raw accuracy 60.0%, valid accuracy 75.0% (+15.0 points)",
    )


def test_one_null_in_twenty_stays_under_the_warning(tmp_path):
    per_item = varied(19, correct=10) + [rec("n1", response=None, correct=False)]
    report = validate_result(write_result(tmp_path / "out.json", per_item))
    assert report.null_rate == pytest.approx(0.05)
    assert report.issues == ()


def test_a_seventy_percent_answer_is_a_bias(tmp_path):
    # The gold `answer` is spread over A-D; only what the model said (`response`) is biased.
    per_item = [rec(f"b{i}", response="B", answer="ABCD"[i % 4]) for i in range(7)] + [
        rec("c1", response="C", answer="C"), rec("d1", response="D", answer="B"), rec("a1", response="A", answer="A"),
    ]
    report = validate_result(write_result(tmp_path / "out.json", per_item))
    assert report.answer_bias is not None
    assert (report.answer_bias.answer, report.answer_bias.share) == ("B", pytest.approx(0.70))
    assert report.to_json()["answer_bias"] == {"answer": "B", "share": pytest.approx(0.7), "count": 7, "valid": 10}
    assert report.issues == ("answer bias: 'B' is 70.0% of 10 valid responses (above 60%)",)


def test_sixty_percent_is_not_yet_a_bias(tmp_path):
    per_item = [rec(f"b{i}", response="B") for i in range(6)] + [rec(f"x{i}", response=x) for i, x in enumerate("ACDA")]
    assert validate_result(write_result(tmp_path / "out.json", per_item)).answer_bias is None


def test_backward_items_without_a_matching_max_time_leak(tmp_path):
    per_item = [
        rec("epm-missing", task="EPM", response="A", realtime=10.0),
        rec("asi-ahead", task="ASI", response="B", realtime=10.0, max_time=10.5),
        rec("hld-close", task="HLD", response="C", realtime=10.0, max_time=10.05),
        rec("epm-exact", task="EPM", response="D", realtime=42.0, max_time=42.0, correct=False),
        rec("qa-no-time", task="QA", response="A", realtime=5.0),
    ]
    report = validate_result(write_result(tmp_path / "out.json", per_item))
    assert report.leaked_ids == ("epm-missing", "asi-ahead")
    assert report.issues == (
        "data leak: 2 backward items without a max_time matching realtime: epm-missing, asi-ahead",
    )
    assert {task: (t.correct, t.n_valid, t.acc_valid) for task, t in report.per_task.items()} == {
        "ASI": (1, 1, 1.0), "EPM": (1, 2, 0.5), "HLD": (1, 1, 1.0), "QA": (1, 1, 1.0),
    }


def test_duplicates_and_missing_items_are_reported(tmp_path):
    per_item = varied(3, correct=3) + [rec("q1", response="B"), rec("q2", response="C"), rec("q2", response="C")]
    report = validate_result(write_result(tmp_path / "out.json", per_item), expected=5)
    assert report.duplicate_ids == ("q1", "q2")
    assert (report.items, report.done) == (6, 3)
    assert report.issues == ("duplicate ids: 2 (q1, q2)", "incomplete: 3 of 5 items (2 missing)")


def test_log_warnings_and_errors_are_counted_by_configured_patterns(clean, tmp_path):
    log = tmp_path / "run.log"
    log.write_text(
        "WARNING cache stale for key abc, recomputing\n"
        "WARNING cache miss: clip-0001\n"
        "WARNING Cache miss: clip-0002\n"
        'INFO httpx: HTTP Request: POST http://localhost:8000/v1/chat/completions "HTTP/1.1 429 Too Many Requests"\n'
        "openai.RateLimitError: Error code: 429 - rate_limit_exceeded\n"
        "WARNING content policy violation for item-0007, recording null\n"
        "INFO rate limiter: waiting 1.5 s for a token\n"
        "INFO eval: [3/8] item-0002 task=QA correct=True\n"
    )
    report = validate_result(clean, log_path=log)
    assert report.log_counts == {
        "cache_stale": 1, "cache_miss": 2, "rate_limit": 2, "content_policy": 1, "rate_limiter": 1,
    }
    assert report.issues == ()


def test_cli_exit_codes_and_json_keys(tmp_path, clean, capsys):
    broken = write_result(tmp_path / "dups.json", varied(2, correct=1) + [rec("q0", response="C")])
    truncated = tmp_path / "truncated.json"
    truncated.write_text(clean.read_text()[:40])

    assert main(["validate", str(broken), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert JSON_KEYS <= set(data)
    assert data["duplicate_ids"] == ["q0"]
    assert data["per_task"] == {"QA": {"correct": 2, "n": 3, "acc": pytest.approx(2 / 3), "n_valid": 3,
                                       "acc_valid": pytest.approx(2 / 3), "n_raw": 3, "acc_raw": pytest.approx(2 / 3)}}

    assert main(["validate", str(truncated)]) == 2
    err = capsys.readouterr().err
    assert str(truncated) in err and "invalid JSON" in err and len(err.strip().splitlines()) == 1
    assert main(["validate", str(tmp_path / "absent.json")]) == 2
    assert main(["validate", str(clean), "--log", str(tmp_path / "absent.log")]) == 2
    assert "absent.log" in capsys.readouterr().err


def test_human_report_is_compact_and_names_the_issues(tmp_path, capsys):
    per_item = varied(3, correct=2) + [rec("n1", response=None, correct=False, null_reason="content_policy")]
    assert main(["validate", str(write_result(tmp_path / "out.json", per_item))]) == 1
    out = capsys.readouterr().out
    assert "4 items, 1 issue" in out
    assert "content_policy 1" in out
    assert "! null rate 25.0% (1/4)" in out


def test_cli_runs_as_a_real_process(clean, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "expwatch", "validate", str(clean), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["raw_acc"] == 0.75


def test_settings_override_changes_thresholds_and_bad_values_name_their_place(tmp_path, clean):
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("nulls:\n  warn_rate: 0.5\n")
    per_item = varied(3, correct=2) + [rec("n1", response=None, correct=False)]
    result = write_result(tmp_path / "out.json", per_item)
    assert validate_result(result, settings=load_validation_settings(lenient)).issues == ()
    assert main(["validate", str(result), "--settings", str(lenient)]) == 0

    bad = tmp_path / "bad.yaml"
    bad.write_text("leak:\n  tolerance: 0.1\nanswer_bias:\n  max_share: lots\n")
    with pytest.raises(ValidationSettingsError, match=r"bad\.yaml:4: answer_bias\.max_share: must be"):
        load_validation_settings(bad)
    assert main(["validate", str(clean), "--settings", str(bad)]) == 2
