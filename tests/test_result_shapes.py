"""Result files shaped like real eval outputs give the seed's figures, in `validate` and in progress alike.

Every expected figure below is counted by hand from the records written in the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wait_for
from expwatch.cli import main
from expwatch.files import NotReadyYet
from expwatch.results.fields import FieldMapError, sidecar_path
from expwatch.results.progress import read_progress, read_result
from expwatch.results.validation import validate_result

# The seed's shape: `answer` is the gold label, `response` what the model said.
SEED_ITEMS = [
    {"id": "e1", "task_type": "EPM", "response": "A", "answer": "A", "correct": True, "realtime": 10.0, "max_time": 10.0, "null_reason": None},
    {"id": "e2", "task_type": "EPM", "response": "A", "answer": "B", "correct": False, "realtime": 20.0, "max_time": 20.0, "null_reason": None},
    {"id": "e3", "task_type": "EPM", "response": None, "answer": "C", "correct": False, "realtime": 30.0, "max_time": 30.0, "null_reason": "content_policy"},
    {"id": "q1", "task_type": "QA", "response": "A", "answer": "A", "correct": True, "realtime": 1.0, "max_time": None, "null_reason": None},
    {"id": "q2", "task_type": "QA", "response": "A", "answer": "A", "correct": True, "realtime": 2.0, "max_time": None, "null_reason": None},
    {"id": "q3", "task_type": "QA", "response": "B", "answer": "B", "correct": True, "realtime": 3.0, "max_time": None, "null_reason": None},
    {"id": "q4", "task_type": "QA", "response": None, "answer": "D", "correct": False, "realtime": 4.0, "max_time": None, "null_reason": "timeout"},
    {"id": "o1", "task_type": "OCR", "response": "A", "answer": "C", "correct": False, "realtime": 5.0, "max_time": None, "null_reason": None},
]


@pytest.fixture
def seed_result(tmp_path) -> Path:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"config": {"model": {"backend": "openai"}}, "per_item": SEED_ITEMS}))
    return path


def test_seed_shape_counts_bias_over_responses_and_per_task_over_valid_items(seed_result):
    report = validate_result(seed_result, expected=8)
    # 6 valid responses, 5 of them "A" (e1 e2 q1 q2 o1): 83.3%. The gold labels are only 3/6 "A".
    assert (report.answer_bias.answer, report.answer_bias.count, report.answer_bias.valid) == ("A", 5, 6)
    assert report.answer_bias.share == pytest.approx(5 / 6)
    assert (report.correct, report.null_count, report.raw_acc, report.valid_acc) == (4, 2, 0.5, pytest.approx(4 / 6))
    assert report.null_reasons == {"content_policy": 1, "timeout": 1}
    figures = {t: (a.correct, a.n_valid, a.acc_valid, a.n, a.acc_raw) for t, a in report.per_task.items()}
    assert figures == {
        "EPM": (1, 2, 0.5, 3, pytest.approx(1 / 3)),
        "OCR": (0, 1, 0.0, 1, 0.0),
        "QA": (3, 3, 1.0, 4, 0.75),
    }
    assert report.leaked_ids == ()
    assert [issue.split(":")[0] for issue in report.issues] == ["null rate 25.0% (2/8) above 5%", "answer bias"]


def test_seed_json_keeps_the_old_keys_as_valid_figures_and_adds_the_raw_ones(seed_result, capsys):
    assert main(["validate", str(seed_result), "--json"]) == 1
    epm = json.loads(capsys.readouterr().out)["per_task"]["EPM"]
    assert epm == {"correct": 1, "n": 2, "acc": 0.5, "n_valid": 2, "acc_valid": 0.5, "n_raw": 3, "acc_raw": pytest.approx(1 / 3)}


def test_progress_reads_the_same_figures_as_validate(seed_result):
    snap = read_progress(seed_result, seed_result.with_name("seed_checkpoint.json"))
    report = validate_result(seed_result)
    assert (snap.done, snap.correct, snap.null_count) == (report.done, report.correct, report.null_count) == (8, 4, 2)


def jsonl(path: Path, records: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


# A script with its own names and no `correct`: correctness is response vs gold, normalised.
OWN_NAMES = [
    {"uid": "j1", "pred": " a ", "label": "A", "task": "QA"},        # correct after case + whitespace
    {"uid": "j2", "pred": "B", "label": "C", "task": "QA"},          # wrong
    {"uid": "j3", "pred": None, "label": "A", "task": "OCR"},        # null: never correct
    {"uid": "j4", "pred": "Paris  France", "label": "paris france", "task": "OCR"},  # correct
]
OWN_MAP = ["id=uid", "response=pred", "gold=label", "task_type=task", "correct="]


def test_jsonl_with_its_own_field_names_and_a_partial_last_line(tmp_path, capsys):
    path = jsonl(tmp_path / "preds.jsonl", OWN_NAMES, tail='{"uid": "j5", "pred": "D", "lab')
    assert main(["validate", str(path), "--json", *[arg for f in OWN_MAP for arg in ("--field", f)]]) == 1
    data = json.loads(capsys.readouterr().out)
    assert (data["items"], data["correct"], data["null_count"]) == (4, 2, 1)
    assert (data["raw_acc"], data["valid_acc"]) == (0.5, pytest.approx(2 / 3))
    assert data["per_task"]["QA"] == {"correct": 1, "n": 2, "acc": 0.5, "n_valid": 2, "acc_valid": 0.5, "n_raw": 2, "acc_raw": 0.5}
    assert data["per_task"]["OCR"]["n_valid"] == 1 and data["per_task"]["OCR"]["acc_raw"] == 0.5
    assert data["fields"]["response"] == "pred"


def test_the_run_field_file_makes_progress_and_validate_agree_while_the_file_grows(tmp_path):
    path = jsonl(tmp_path / "preds.jsonl", OWN_NAMES, tail='{"uid": "j5", "pred": "D", "lab')
    sidecar_path(path).write_text("id: uid\nresponse: pred\ngold: label\ntask_type: task\ncorrect: null\n")
    snap = read_progress(path, None)
    assert (snap.done, snap.correct, snap.null_count) == (4, 2, 1)
    with path.open("a") as fh:
        fh.write('el": "d", "task": "QA"}\n')  # the writer finishes the line: now it counts
    snap, report = read_progress(path, None), validate_result(path)
    assert (snap.done, snap.correct, snap.null_count) == (report.done, report.correct, report.null_count) == (5, 3, 1)


def test_a_broken_line_in_the_middle_is_not_ready_and_names_its_line(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text('{"id": 1}\n{"id": 2, oops\n{"id": 3}\n')
    with pytest.raises(NotReadyYet, match="line 2"):
        read_result(path)


def lm_eval_sample(doc_id: int, resp: str, target: str, exact: float) -> dict:
    # The record shape lm-evaluation-harness writes to samples_<task>_<date>.jsonl with --log_samples
    # (keys as seen in public test fixtures of its users, e.g. doc_id/target/resps/filtered_resps/exact_match).
    return {
        "doc_id": doc_id, "doc": {"question": f"q{doc_id}", "answer": f"#### {target}"}, "target": target,
        "arguments": {"gen_args_0": {"arg_0": f"q{doc_id}", "arg_1": {"until": ["Question:"]}}},
        "resps": [[f"The answer is {resp}"]], "filtered_resps": [resp], "filter": "strict-match",
        "metrics": ["exact_match"], "doc_hash": "d", "prompt_hash": "p", "target_hash": "t", "exact_match": exact,
    }


def test_lm_eval_samples_read_through_a_field_map(tmp_path):
    path = jsonl(tmp_path / "samples_gsm8k_2026-12-01T00-00-00.jsonl", [
        lm_eval_sample(0, "72", "72", 1.0),
        lm_eval_sample(1, "10", "12", 0.0),
        lm_eval_sample(2, "5", "5", 1.0),
        lm_eval_sample(3, "[invalid]", "9", 0.0),
    ])
    overrides = {"id": "doc_id", "response": "filtered_resps.0", "gold": "target", "correct": "exact_match",
                 "task_type": None, "null_reason": None, "max_time": None, "realtime": None}
    report = validate_result(path, expected=4, field_overrides=overrides)
    assert (report.items, report.correct, report.null_count, report.raw_acc) == (4, 2, 0, 0.5)
    assert {t: (a.correct, a.n_valid, a.n) for t, a in report.per_task.items()} == {"unknown": (2, 4, 4)}
    assert report.answer_bias is None and report.issues == ()


def test_top_level_lists_and_common_item_keys(tmp_path):
    items = [{"id": "a", "response": "x", "correct": True}, {"id": "b", "response": "y", "correct": False}]
    (tmp_path / "list.json").write_text(json.dumps(items))
    (tmp_path / "preds.json").write_text(json.dumps({"predictions": items, "meta": {"n": 2}}))
    # lm-eval's aggregate file maps task names to metrics under `results`: not items.
    (tmp_path / "agg.json").write_text(json.dumps({"results": {"gsm8k": {"exact_match,strict-match": 0.5}}}))
    for name in ("list.json", "preds.json"):
        snap = read_result(tmp_path / name)
        assert (snap.done, snap.correct) == (2, 1), name
    assert read_result(tmp_path / "agg.json").items == ()


def test_a_bad_field_option_exits_2_and_names_it(seed_result):
    proc = subprocess.run([sys.executable, "-m", "expwatch", "validate", str(seed_result), "--field", "reponse=pred"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--field: unknown field 'reponse'" in proc.stderr
    sidecar_path(seed_result).write_text("- response\n")
    with pytest.raises(FieldMapError, match="seed.fields.yaml: must be a mapping"):
        validate_result(seed_result)
    sidecar_path(seed_result).write_text("response: pred\nanwser: label\n")
    with pytest.raises(FieldMapError, match=r"seed\.fields\.yaml:2: anwser: unknown field"):
        validate_result(seed_result)
    # The watcher and status retry and show the reason instead of failing.
    with pytest.raises(NotReadyYet, match=r"seed\.fields\.yaml:2: anwser: unknown field"):
        read_progress(seed_result, None)


def test_a_field_file_that_would_expand_without_bound_is_refused_with_its_line_not_built(seed_result):
    # The "billion laughs" shape: nine levels of nine aliases, 536 bytes that safe_load would build into 9**9 strings.
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for depth, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[depth]
        levels.append(f"{name}: &{name} [" + ",".join(f"*{prev}" for _ in range(9)) + "]")
    sidecar_path(seed_result).write_text("\n".join(levels) + "\n")
    with pytest.raises(FieldMapError, match=r"seed\.fields\.yaml:\d+: refused"):
        validate_result(seed_result)
    with pytest.raises(NotReadyYet, match=r"seed\.fields\.yaml:\d+: refused"):  # status and the watcher show it and go on
        read_progress(seed_result, None)
    sidecar_path(seed_result).write_bytes(b"response: \xff\n")
    with pytest.raises(FieldMapError, match=r"seed\.fields\.yaml: not UTF-8 text \(byte 10\)"):
        validate_result(seed_result)


def test_the_smoke_run_reads_its_result_with_the_runs_field_map(tmp_path):
    from expwatch.results.smoke import run_smoke

    script = tmp_path / "eval_own.py"
    script.write_text(
        "import argparse, json\n"
        "p = argparse.ArgumentParser(); p.add_argument('--output'); p.add_argument('--limit', type=int, default=5)\n"
        "a = p.parse_args()\n"
        "with open(a.output, 'w') as fh:\n"
        "    for i in range(a.limit):\n"
        "        fh.write(json.dumps({'uid': f'x{i}', 'pred': 'A', 'label': 'A', 'task': 'QA'}) + '\\n')\n"
    )
    argv = [sys.executable, str(script), "--output", "out.jsonl"]
    without = run_smoke(argv, tmp_path, 2, workdir=tmp_path / "smoke1")
    assert not without.ok and "2 of 2 items have a null response" in without.reasons[0]  # `response` is not its name
    (tmp_path / "out.fields.yaml").write_text("id: uid\nresponse: pred\ngold: label\ntask_type: task\n")
    assert run_smoke(argv, tmp_path, 2, workdir=tmp_path / "smoke2").ok


def test_status_of_a_launched_run_shows_the_figures_validate_gives(experiments, capsys):
    root = experiments.root
    script = root / "eval_own.py"
    script.write_text(
        "import json, sys\n"
        f"records = {OWN_NAMES!r}\n"
        "with open(sys.argv[sys.argv.index('--output') + 1], 'w') as fh:\n"
        "    fh.writelines(json.dumps(r) + '\\n' for r in records)\n"
    )
    result = root / "own.jsonl"
    (root / "own.fields.yaml").write_text("id: uid\nresponse: pred\ngold: label\ntask_type: task\ncorrect: null\n")
    assert main(["launch", "--name", "own", "--log", str(root / "own.log"), "--result", str(result), "--expected", "4",
                 "--dir", str(root), "--", sys.executable, str(script), "--output", str(result)]) == 0
    capsys.readouterr()
    wait_for(lambda: experiments.state("own") == "COMPLETE", what="the run to finish")
    assert main(["status", str(root), "--json"]) == 0
    row, = json.loads(capsys.readouterr().out)
    report = validate_result(result, expected=4)
    assert (row["done"], row["null_count"], row["accuracy"]) == (report.done, report.null_count, report.raw_acc) == (4, 1, 0.5)
    assert row["null_reasons"] == report.null_reasons == {"unknown": 1}
