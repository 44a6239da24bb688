"""Runs found long finished at start go straight to sleep, unread while unchanged (expwatch/engine/asleep.py, issue 16).

Two halves. The read position a first sight finds from the log's end alone
must be exactly where the tailer's own history read leaves it, over real
client failures from the crash corpus cut at every few bytes. And real
watcher processes, started and stopped over a folder of finished runs in
the seed's result shape, show what each start read and recorded; a
separate process rewrites a result between starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from conftest import wait_for
from fleet import Fleet

from expwatch.display.records import feed_records, summary
from expwatch.engine.reading import history_end, history_position
from expwatch.manifest import RunManifest, save_manifest
from expwatch.settings import load_settings
from expwatch.state import StateStore
from expwatch.watcher.crash import CrashLimits
from expwatch.watcher.tail import LogTailer

LIMITS = CrashLimits.from_settings(load_settings().crash)
CORPUS = sorted((Path(__file__).parent / "data" / "crashes").glob("*.log"))
SETTINGS = "watch: {{settle_s: 0.4, safety_poll_s: 0.3, release_finished_s: 1.5, status_cache_after_s: {settled}}}\n"


def tailer_position(path: Path, tail_bytes: int, max_line: int):
    """Where ``RunMembership.add``'s history read leaves a new tailer: read up to ``history_end``."""
    tailer = LogTailer(path, None, max_line)
    until = history_end(str(path), LIMITS, tail_bytes)
    while True:
        tailer.read_new(None, 0, until)
        if not tailer.more_pending:
            break
    position = tailer.position
    tailer.close()
    return position


@pytest.mark.parametrize("source", CORPUS, ids=[p.stem for p in CORPUS])
def test_the_position_found_from_a_logs_end_is_where_the_tailer_reads_to(tmp_path, source):
    """Every cut of a real failure log: inside a traceback, after it, mid-line, with a short tail window."""
    text = ("2026-11-30 10:00:00,000 INFO eval: [1/500] item-0001 correct=True\n" * 3).encode() + source.read_bytes()
    log = tmp_path / "run.log"
    agreed = 0
    for cut in range(0, len(text) + 1, max(1, len(text) // 60)):
        log.write_bytes(text[:cut])
        for tail_bytes, max_line in ((1 << 20, 1 << 20), (300, 1 << 20), (1 << 20, 40)):
            found = history_position(str(log), LIMITS, tail_bytes, max_line)
            if found is not None:
                assert found == tailer_position(log, tail_bytes, max_line), (cut, tail_bytes, max_line)
                agreed += 1
    assert agreed > 60  # nearly every cut is decided from the end alone


@pytest.mark.parametrize("text, why", [
    (b"", "no line yet"),
    (b"INFO eval: a first line still being written", "the first line is not finished"),
    (b"INFO eval: [1/2] item-1\n" + b"x" * 100, "the unfinished last line is over max_line_bytes: the tailer returns it cut"),
])
def test_a_log_whose_end_cannot_tell_is_left_to_the_tailer(tmp_path, text, why):
    log = tmp_path / "run.log"
    log.write_bytes(text)
    assert history_position(str(log), LIMITS, 1 << 20, 64) is None, why


def test_a_fifo_in_place_of_a_log_does_not_hang_the_history_read(tmp_path):
    """history_end opened the log blocking: with no writer, a FIFO in its place never returned."""
    fifo = tmp_path / "run.log"
    os.mkfifo(fifo)
    found: list = []
    reader = threading.Thread(target=lambda: found.extend([history_end(str(fifo), LIMITS, 1 << 20),
                                                           history_position(str(fifo), LIMITS, 1 << 20, 1 << 20)]), daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():
        with open(fifo, "wb"):  # a writer lets the blocked open return, so the thread ends
            pass
        pytest.fail("reading a FIFO's history blocked")
    assert found == [None, None]


def item(n: int, response: str | None, answer: str, null_reason: str | None = None) -> dict:
    return {"id": f"item-{n:04d}", "task_type": "QA", "response": response, "answer": answer,
            "correct": response == answer, "null_reason": null_reason}


# 4 items: 2 correct (0, 2), 1 null from the content filter (3). Figures: done 4, correct 2, nulls 1.
FOUR = [item(0, "A", "A"), item(1, "B", "C"), item(2, "D", "D"), item(3, None, "A", "content_policy")]
FOUR_FIGURES = [4, 2, 1, {"content_policy": 1}]
# A fifth item, correct: done 5, correct 3, nulls 1.
FIVE = [*FOUR, item(4, "B", "B")]
REWRITE = "import json, sys; json.dump({'config': {'model': 'gpt-4o'}, 'per_item': json.loads(sys.argv[2])}, open(sys.argv[1], 'w'))"


def finished_runs(fleet: Fleet, names: list[str]) -> None:
    day_ago = time.time() - 86400
    for name in names:
        log, result = fleet.root / f"{name}.log", fleet.root / f"{name}.json"
        log.write_text("".join(f"2026-11-30 10:00:0{i},000 INFO eval: [{i + 1}/4] {it['id']} correct={it['correct']}\n"
                               for i, it in enumerate(FOUR)))
        result.write_text(json.dumps({"config": {"model": "gpt-4o"}, "per_item": FOUR}, indent=2))
        for path in (log, result):
            os.utime(path, (day_ago, day_ago))
        save_manifest(fleet.layout, RunManifest(name=name, argv=("python", "eval.py"), cwd=str(fleet.root), log=str(log),
                                                result=str(result), expected=4, completed_at="2026-11-30T10:00:04+00:00"))


def start_and_stop(fleet: Fleet, done: Callable[[list[dict]], object]) -> list[dict]:
    """One watcher's audit records, from its start until ``done`` says it took in every run, and its stop."""
    before = len(fleet.audit.select())
    fleet.start_watcher()
    wait_for(lambda: done(fleet.audit.select()[before:]), what="the watcher to take in every run")
    assert fleet.stop_watcher() == 0
    return fleet.audit.select()[before:]


def asleep(records: list[dict]) -> list[dict]:
    return [r for r in records if r["event"] == "runs asleep"]


def events(records: list[dict], run: str) -> list[str]:
    return [r["event"] for r in records if r.get("run") == run]


def test_a_restart_reads_nothing_of_runs_unchanged_since_their_release_and_watches_a_changed_one(tmp_path):
    fleet = Fleet(tmp_path / "exp", settings=SETTINGS.format(settled=0.3))
    names = ["a", "b", "c"]
    try:
        finished_runs(fleet, names)
        time.sleep(0.4)  # past status_cache_after_s: the first start saves signatures
        first = start_and_stop(fleet, asleep)
        assert asleep(first)[0] | {"ts": None} == {
            "ts": None, "event": "runs asleep", "count": 3, "unchanged": 0, "note": "finished long ago; watched again when their files change"}
        for name in names:
            assert events(first, name) == ["run discovered"]  # no history read, progress or release records
            found = [r for r in first if r.get("run") == name][0]
            assert found["asleep"] is True and (found["done"], found["expected"]) == (4, 4)
        shown = feed_records(first)  # the live display's feed, from the records the watcher wrote
        assert not [r for r in shown if r["event"] == "run discovered"]
        assert summary(asleep(shown)[0]) == "3 finished run(s) asleep, 0 of them unchanged since the last watcher: " \
                                            "watched again when their files change"
        saved = StateStore(fleet.layout.state_db).run_data("b")
        assert saved["asleep"]["figures"] == FOUR_FIGURES
        assert saved["position"]["offset"] == os.path.getsize(fleet.root / "b.log")
        left = json.loads((fleet.layout.home / "progress-cache.json").read_text())["runs"]  # no `status` ran yet
        assert {name: entry[3] for name, entry in left.items()} == {name: FOUR_FIGURES for name in names}
        status = subprocess.run([sys.executable, "-m", "expwatch", "status", str(fleet.root), "--json"],
                                capture_output=True, text=True, check=True)
        rows = {row["name"]: row for row in json.loads(status.stdout)}
        assert (rows["b"]["done"], rows["b"]["accuracy"], rows["b"]["null_count"]) == (4, 0.5, 1)

        second = start_and_stop(fleet, asleep)
        assert [(r["count"], r["unchanged"]) for r in asleep(second)] == [(3, 3)]
        assert not [r for r in second if r.get("run") in names]
        with open(fleet.root / "watcher.out") as fh:
            plain = fh.read()
        assert "run discovered" not in plain  # one line a start, not one a run
        assert [line.split(" ", 1)[1] for line in plain.splitlines() if "runs asleep" in line] == [
            'event="runs asleep" count=3 unchanged=0 note="finished long ago; watched again when their files change"',
            'event="runs asleep" count=3 unchanged=3 note="finished long ago; watched again when their files change"']

        # A separate process adds an item to b's result while no watcher runs.
        subprocess.run([sys.executable, "-c", REWRITE, str(fleet.root / "b.json"), json.dumps(FIVE)], check=True)
        time.sleep(0.4)  # past status_cache_after_s, so the new signature is trusted
        third = start_and_stop(fleet, lambda got: asleep(got) and events(got, "b")[-1:] == ["run released"])
        assert [(r["count"], r["unchanged"]) for r in asleep(third)] == [(2, 2)]
        assert events(third, "b") == ["run discovered", "progress", "run released"]
        assert [r for r in third if r["event"] == "progress"][0]["done"] == 5
        assert StateStore(fleet.layout.state_db).run_data("b")["asleep"]["figures"] == [5, 3, 1, {"content_policy": 1}]
    finally:
        fleet.cleanup()


def test_files_changed_too_recently_to_trust_their_times_are_read_at_every_start(tmp_path):
    """``watch.status_cache_after_s`` longer than the files' age: no signature is saved, so the next start reads them."""
    fleet = Fleet(tmp_path / "exp", settings=SETTINGS.format(settled=3600 * 48))
    try:
        finished_runs(fleet, ["a"])
        first = start_and_stop(fleet, asleep)
        assert events(first, "a") == ["run discovered"] and [r for r in first if r.get("run") == "a"][0]["asleep"]
        assert "asleep" not in StateStore(fleet.layout.state_db).run_data("a")
        assert not (fleet.layout.home / "progress-cache.json").exists()
        second = start_and_stop(fleet, lambda got: events(got, "a")[-1:] == ["run released"])
        assert events(second, "a") == ["run discovered", "progress", "run released"]
        assert not asleep(second)
    finally:
        fleet.cleanup()


def test_figures_saved_by_other_figure_readers_are_read_again(tmp_path):
    """An upgrade that changes how figures are counted (another digest) must not show a sleeping run's old ones."""
    fleet = Fleet(tmp_path / "exp", settings=SETTINGS.format(settled=0.3))
    try:
        finished_runs(fleet, ["a", "b"])
        time.sleep(0.4)  # past status_cache_after_s: the first start saves signatures
        start_and_stop(fleet, asleep)
        store = StateStore(fleet.layout.state_db)
        saved = store.run_data("a")
        store.save_run("a", {**saved, "asleep": {**saved["asleep"], "digest": "an older reader"}})
        store.close()
        second = start_and_stop(fleet, lambda got: events(got, "a")[-1:] == ["run released"])
        assert events(second, "a") == ["run discovered", "progress", "run released"]
        assert [(r["count"], r["unchanged"]) for r in asleep(second)] == [(1, 1)]
    finally:
        fleet.cleanup()
