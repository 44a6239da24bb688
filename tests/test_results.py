"""Reading result and checkpoint files the way real eval scripts leave them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expwatch.files import NotReadyYet
from expwatch.results.progress import checkpoint_path_for, read_progress, read_result


def write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_checkpoint_sits_next_to_the_result_with_a_suffix():
    assert checkpoint_path_for(Path("runs/out.json")) == Path("runs/out_checkpoint.json")


def test_every_field_may_be_missing(tmp_path):
    snap = read_result(write(tmp_path / "out.json", {"per_item": [{}, {"id": 7, "correct": 1, "max_time": "3.5"}]}))
    bare, full = snap.items
    assert (bare.id, bare.response, bare.correct, bare.task_type, bare.max_time) == (None, None, None, None, None)
    assert (full.id, full.correct, full.max_time) == ("7", True, 3.5)
    assert snap.config == {} and snap.completed_ids == frozenset()
    assert read_result(write(tmp_path / "empty.json", {})).items == ()


def test_snapshot_counts_done_correct_and_nulls_by_reason(tmp_path):
    per_item = [
        {"id": "a", "response": "A", "correct": True},
        {"id": "a", "response": "A", "correct": True},  # duplicate id: done counts it once
        {"id": "b", "response": None, "null_reason": "content_policy"},
        {"id": "c", "response": None},
        {"response": "B", "correct": False},
    ]
    snap = read_result(write(tmp_path / "out.json", {"config": {"k": 1}, "per_item": per_item}))
    assert snap.done == 4
    assert snap.correct == 2
    assert snap.null_count == 2
    assert snap.null_reasons == {"content_policy": 1, "unknown": 1}
    assert snap.config == {"k": 1}


def test_unparseable_files_are_not_ready_yet(tmp_path):
    truncated = tmp_path / "out.json"
    truncated.write_text('{"config": {}, "per_item": [{"id": "a", "resp')
    with pytest.raises(NotReadyYet):
        read_result(truncated)
    with pytest.raises(NotReadyYet, match="list without item objects"):
        read_result(write(tmp_path / "list.json", [1, 2]))
    with pytest.raises(FileNotFoundError):
        read_result(tmp_path / "absent.json")


def test_progress_merges_result_with_the_checkpoint(tmp_path):
    result = write(tmp_path / "out.json", {"config": {"k": 1}, "per_item": [{"id": "a", "response": "final"}]})
    checkpoint = write(
        checkpoint_path_for(result),
        {"completed_ids": ["a", "b", "c"], "per_item": [{"id": "a", "response": "old"}, {"id": "b", "response": "x"}]},
    )
    snap = read_progress(result, checkpoint)
    assert [(i.id, i.response) for i in snap.items] == [("a", "final"), ("b", "x")]
    assert snap.done == 3
    assert snap.config == {"k": 1}


def test_progress_uses_whatever_exists(tmp_path):
    result, checkpoint = tmp_path / "out.json", tmp_path / "out_checkpoint.json"
    assert read_progress(result, checkpoint) is None
    assert read_progress(None, None) is None
    write(checkpoint, {"completed_ids": ["a", "b"]})
    assert read_progress(result, checkpoint).done == 2
    result.write_text("{")
    with pytest.raises(NotReadyYet):
        read_progress(result, checkpoint)
