"""`status` remembers finished runs' figures by their files' signatures, and never shows old ones.

Each result is in the seed's shape (`per_item` with id/response/answer/correct/null_reason),
its figures counted by hand beside it. The files are written by this process and by a
separate one (a writer that rewrites in place, as a script's plain `open(..., "w")` does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from expwatch.cli import main as cli
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import RunManifest, save_manifest
from expwatch.results.fields import sidecar_path

SETTLED_S = 0.3  # watch.status_cache_after_s in these tests


def item(n: int, response: str | None, answer: str, null_reason: str | None = None) -> dict:
    return {"id": f"item-{n:04d}", "task_type": "QA", "response": response, "answer": answer,
            "correct": response == answer, "null_reason": null_reason}


# 4 items: 2 correct (0, 2), 1 null from the content filter (3). done 4, accuracy 0.5, nulls 1.
FOUR = [item(0, "A", "A"), item(1, "B", "C"), item(2, "D", "D"), item(3, None, "A", "content_policy")]


class Lab:
    def __init__(self, root: Path):
        self.root = root
        self.layout = ExperimentsLayout.at(root)
        root.mkdir(parents=True)
        (root / "expwatch.yaml").write_text(f"watch: {{status_cache_after_s: {SETTLED_S}}}\n")
        self.cache = self.layout.home / "progress-cache.json"

    def finished(self, name: str, items: list[dict], expected: int = 4) -> Path:
        result, log = self.root / f"{name}.json", self.root / f"{name}.log"
        log.write_text("done\n")
        result.write_text(json.dumps({"config": {"model": "gpt-4o"}, "per_item": items}, indent=2))
        save_manifest(self.layout, RunManifest(name=name, argv=("python", "eval.py"), cwd=str(self.root), log=str(log),
                                               result=str(result), expected=expected, completed_at="2026-12-01T10:00:00+00:00"))
        return result

    def status(self, capsys) -> dict[str, dict]:
        assert cli(["status", str(self.root), "--json"]) == 0
        return {row["name"]: row for row in json.loads(capsys.readouterr().out)}

    def cached(self) -> dict:
        return json.loads(self.cache.read_text())["runs"]


@pytest.fixture
def lab(tmp_path) -> Lab:
    return Lab(tmp_path / "experiments")


def figures(row: dict) -> tuple:
    return row["done"], row["accuracy"], row["null_count"], row["null_reasons"]


def test_a_settled_runs_figures_come_from_the_cache_until_its_result_changes(lab, capsys):
    result = lab.finished("gpt4o-qa", FOUR)
    time.sleep(SETTLED_S + 0.1)
    assert figures(lab.status(capsys)["gpt4o-qa"]) == (4, 0.5, 1, {"content_policy": 1})
    # The cache is what the second call shows: figures planted in it (same signatures) are believed.
    data = json.loads(lab.cache.read_text())
    data["runs"]["gpt4o-qa"][3] = [4, 4, 0, {}]
    lab.cache.write_text(json.dumps(data))
    assert figures(lab.status(capsys)["gpt4o-qa"]) == (4, 1.0, 0, {})
    # Another process appends a fifth item (correct): the signature moves, the file is read again.
    subprocess.run([sys.executable, "-c", f"import json; p = {str(result)!r}; d = json.load(open(p)); "
                    "d['per_item'].append({'id': 'item-0004', 'response': 'B', 'answer': 'B', 'correct': True}); "
                    "open(p, 'w').write(json.dumps(d))"], check=True)
    assert figures(lab.status(capsys)["gpt4o-qa"]) == (5, 0.6, 1, {"content_policy": 1})


def test_a_same_size_rewrite_in_place_with_its_old_mtime_put_back_is_still_seen(lab, capsys):
    result = lab.finished("claude-qa", FOUR)
    before = os.stat(result)
    time.sleep(SETTLED_S + 0.1)
    assert figures(lab.status(capsys)["claude-qa"]) == (4, 0.5, 1, {"content_policy": 1})
    # Item 1's wrong "B" becomes the right "C" (and its flag, padded to the same length): 3 correct of 4.
    text = result.read_text()
    changed = text.replace('"response": "B"', '"response": "C"').replace('"correct": false', '"correct": true ', 1)
    assert len(changed) == len(text) and changed != text
    with open(result, "r+") as fh:  # same inode, same size
        fh.write(changed)
    os.utime(result, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime as it was; only ctime can tell
    assert (os.stat(result).st_ino, os.stat(result).st_size, os.stat(result).st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert figures(lab.status(capsys)["claude-qa"]) == (4, 0.75, 1, {"content_policy": 1})


def test_a_file_changed_within_the_settle_window_is_read_every_time_and_kept_once_settled(lab, capsys):
    lab.finished("gemini-qa", FOUR)
    assert figures(lab.status(capsys)["gemini-qa"]) == (4, 0.5, 1, {"content_policy": 1})
    assert "gemini-qa" not in (lab.cached() if lab.cache.exists() else {})
    time.sleep(SETTLED_S + 0.1)
    lab.status(capsys)
    assert lab.cached()["gemini-qa"][3] == [4, 2, 1, {"content_policy": 1}]


def test_a_new_field_file_is_read_and_a_removed_run_leaves_the_cache(lab, capsys):
    # A script that names its fields its own way: `pred` and `label`, read through the run's field file.
    own = [{"uid": "x0", "pred": "A", "label": "A"}, {"uid": "x1", "pred": "B", "label": "A"}]
    result = lab.finished("qwen-local", own, expected=2)
    lab.finished("gone-run", FOUR)
    time.sleep(SETTLED_S + 0.1)
    assert lab.status(capsys)["qwen-local"]["null_count"] == 2  # `response` is not its name: both look null
    sidecar_path(result).write_text("id: uid\nresponse: pred\ngold: label\ncorrect: null\n")
    row = lab.status(capsys)["qwen-local"]
    assert (row["done"], row["accuracy"], row["null_count"]) == (2, 0.5, 0)
    lab.layout.manifest_path("gone-run").unlink()
    time.sleep(SETTLED_S + 0.1)
    assert set(lab.status(capsys)) == {"qwen-local"}
    assert set(lab.cached()) == {"qwen-local"}


@pytest.mark.parametrize("planted", ["torn", "other digest", "world-writable"])
def test_a_broken_or_foreign_cache_is_ignored_and_replaced(lab, capsys, planted):
    lab.finished("gpt4o-qa", FOUR)
    time.sleep(SETTLED_S + 0.1)
    lab.status(capsys)
    good = json.loads(lab.cache.read_text())
    lying = dict(good, runs={"gpt4o-qa": [*good["runs"]["gpt4o-qa"][:3], [4, 4, 0, {}]]})
    if planted == "torn":
        lab.cache.write_text(json.dumps(lying)[:40])
    elif planted == "other digest":
        lab.cache.write_text(json.dumps(dict(lying, digest="0000000000000000")))
    else:
        lab.cache.write_text(json.dumps(lying))
        lab.cache.chmod(0o666)
    assert figures(lab.status(capsys)["gpt4o-qa"]) == (4, 0.5, 1, {"content_policy": 1})
    assert json.loads(lab.cache.read_text()) == good
    assert lab.cache.stat().st_mode & 0o777 == 0o600


def test_a_half_written_result_is_not_remembered(lab, capsys):
    result = lab.finished("o3-qa", FOUR)
    result.write_text(result.read_text()[:120])  # a plain open(..., "w") caught mid-write
    time.sleep(SETTLED_S + 0.1)
    row = lab.status(capsys)["o3-qa"]
    assert row["done"] == 0 and "not readable yet" in row["progress_note"]
    assert "o3-qa" not in (lab.cached() if lab.cache.exists() else {})
