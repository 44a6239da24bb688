"""`expwatch noise` records a floor from two identical runs; `expwatch verdict` judges against it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from expwatch.cli import main


def write_result(path: Path, epm_correct: int, qa_correct: int) -> Path:
    """20 EPM items and 100 QA items: macro accuracy moves 2.5 points per EPM item, 0.5 per QA item."""
    per_item = [{"id": f"e{i}", "task_type": "EPM", "response": "A", "correct": i < epm_correct} for i in range(20)]
    per_item += [{"id": f"q{i}", "task_type": "QA", "response": "B", "correct": i < qa_correct} for i in range(100)]
    path.write_text(json.dumps({"config": {}, "per_item": per_item}))
    return path


@pytest.fixture
def criteria(tmp_path, capsys) -> Path:
    baseline = write_result(tmp_path / "baseline.json", 12, 70)  # (60 + 70) / 2 = 65.0
    rerun = write_result(tmp_path / "rerun.json", 12, 73)  # 66.5: run-to-run delta 1.5
    out = tmp_path / "criteria.yaml"
    assert main(["noise", str(baseline), str(rerun), "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def verdict(tmp_path: Path, criteria: Path, qa_correct: int, capsys) -> str:
    candidate = write_result(tmp_path / f"cand{qa_correct}.json", 12, qa_correct)
    assert main(["verdict", str(tmp_path / "baseline.json"), str(candidate), "--criteria", str(criteria)]) == 0
    return capsys.readouterr().out


def test_noise_writes_the_floor_and_how_it_was_derived(criteria, tmp_path):
    data = yaml.safe_load(criteria.read_text())
    assert data["baseline"] == str((tmp_path / "baseline.json").resolve())
    assert data["rerun"] == str((tmp_path / "rerun.json").resolve())
    assert (data["baseline_macro_acc"], data["rerun_macro_acc"]) == (65.0, 66.5)
    assert data["observed_delta"] == 1.5
    assert data["noise_floor"] == 2.25  # max(2, 1.5 x 1.5)
    assert data["derivation"] == "max(2 points, 1.5 x |observed delta| 1.50 = 2.25) = 2.25 points"
    assert data["rule"] == {"min_points": 2.0, "factor": 1.5}


def test_small_observed_delta_falls_back_to_the_minimum_floor(tmp_path):
    baseline, rerun = write_result(tmp_path / "a.json", 12, 70), write_result(tmp_path / "b.json", 12, 71)
    out = tmp_path / "criteria.yaml"
    assert main(["noise", str(baseline), str(rerun), "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["noise_floor"] == 2.0


def test_verdicts_just_inside_and_just_outside_the_floor(criteria, tmp_path, capsys):
    inside = verdict(tmp_path, criteria, 74, capsys)  # +2.0 <= 2.25
    assert "delta macro accuracy +2.00 points, noise floor 2.25" in inside
    assert inside.rstrip().endswith("verdict: noise")
    assert verdict(tmp_path, criteria, 75, capsys).rstrip().endswith("verdict: gain")  # +2.5
    assert verdict(tmp_path, criteria, 66, capsys).rstrip().endswith("verdict: noise")  # -2.0
    assert verdict(tmp_path, criteria, 65, capsys).rstrip().endswith("verdict: regression")  # -2.5


def test_verdict_reads_the_floor_instead_of_rederiving_it(criteria, tmp_path, capsys):
    data = yaml.safe_load(criteria.read_text())
    criteria.write_text(yaml.safe_dump({**data, "noise_floor": 2.5}))
    assert verdict(tmp_path, criteria, 75, capsys).rstrip().endswith("verdict: noise")  # +2.5, exactly the floor


def test_unreadable_inputs_exit_2(criteria, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    truncated = tmp_path / "truncated.json"
    truncated.write_text(baseline.read_text()[:100])
    assert main(["verdict", str(baseline), str(truncated), "--criteria", str(criteria)]) == 2
    assert str(truncated) in capsys.readouterr().err
    no_floor = tmp_path / "no_floor.yaml"
    no_floor.write_text("baseline: x\n")
    assert main(["verdict", str(baseline), str(baseline), "--criteria", str(no_floor)]) == 2
    assert f"{no_floor}: noise_floor" in capsys.readouterr().err
    assert main(["noise", str(baseline), str(tmp_path / "absent.json"), "--out", str(tmp_path / "c.yaml")]) == 2
    assert not (tmp_path / "c.yaml").exists()
