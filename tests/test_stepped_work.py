"""Background work is done in steps, so no failure waits behind it (issue 16).

At a lab's 1,000 chatty runs, the batched save of read positions held the
engine thread 25-55 ms once a second, and listing 11,000 manifests at the
start of every safety poll 15-30 ms: bench/lab.py's p99 from a write to its
`rule matched` was 23-28 ms. Both are now taken a bounded piece at a time.
These tests check that the pieces still add up to all of the work: every
run's position saved, every manifest read exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import time

from conftest import wait_for
from fleet import Fleet

from expwatch.engine.persist import SAVE_BATCH, RunStatePersistence
from expwatch.engine.runs import RunTable, WatchedRun
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import ManifestCache, RunManifest, SurveyRound, save_manifest
from expwatch.rules.facts import RunFacts
from expwatch.rules.loader import parse_rules, shipped_rules_text
from expwatch.settings import load_settings
from expwatch.state import StateStore
from expwatch.watcher.crash import CrashAssembler, CrashLimits
from expwatch.watcher.tail import LogTailer

LIMITS = CrashLimits.from_settings(load_settings().crash)


def line(n: int) -> str:
    return f"2026-12-01 23:00:00,000 INFO eval: [{n}/500] item-{n:06d} correct=True latency=0.41s\n"


def test_a_save_cut_into_steps_writes_every_waiting_run_at_its_newest_position(tmp_path):
    rules = parse_rules(shipped_rules_text(), "rules.yaml")
    store = StateStore(tmp_path / "state.sqlite3")
    persist, runs = RunStatePersistence(store), RunTable()
    count = 2 * SAVE_BATCH + 30
    for i in range(count):
        log = tmp_path / f"r{i:03d}.log"
        log.write_text(line(1))
        run = WatchedRun(RunManifest(name=f"r{i:03d}", argv=("python", "eval.py"), cwd=str(tmp_path), log=str(log)),
                         LogTailer(log), RunFacts(rules, started_at=0.0), crashes=CrashAssembler(LIMITS))
        run.tailer.read_new()
        runs.add(run)
        persist.save_later(run)
    steps = 0
    while not persist.save_due(runs, until=time.monotonic()):  # a step whose time is up at once: one transaction
        steps += 1
        if steps == 1:  # a run read again between steps waits with the rest, at its newer position
            again = runs.get("r000")
            with open(again.manifest.log, "a") as fh:
                fh.write(line(2))
            again.tailer.read_new()
            assert not persist.save_later(again)  # the save under way takes it: no new timer
    assert steps == 2  # 230 runs and one re-read: three transactions of at most 100
    for i in range(count):
        name = f"r{i:03d}"
        assert persist.saved_position(name).offset == len(line(1)) * (2 if i == 0 else 1), name
    assert persist.save_due(runs)  # nothing waits
    store.close()


def manifests(layout: ExperimentsLayout, count: int) -> list[RunManifest]:
    made = [RunManifest(name=f"run{i:03d}", argv=("python", "eval.py"), cwd=str(layout.root), log=str(layout.root / f"run{i:03d}.log"))
            for i in range(count)]
    for manifest in made:
        save_manifest(layout, manifest)
    return made


def test_a_survey_taken_one_manifest_a_step_reads_each_once_even_as_they_are_replaced(tmp_path):
    layout = ExperimentsLayout.at(tmp_path)
    made = manifests(layout, 60)
    (layout.runs_dir / "run001.exit.json").write_text(json.dumps({"returncode": 0}))  # an exit record, not a manifest
    (layout.runs_dir / ".run002.json.tmp").write_text("{")  # a manifest being written
    (layout.runs_dir / "run003.json").write_text('{"name": "run003", "argv": ')  # a torn one
    cache = ManifestCache()
    survey = SurveyRound(layout, cache=cache)
    steps = 0
    while not survey.take(until=time.monotonic()):
        steps += 1
        if steps == 10:  # `expwatch resume` or a launch replacing manifests while the round is under way
            for manifest in made[::7]:
                save_manifest(layout, manifest.with_changes(expected=9))
    assert steps >= 59  # one manifest a step, the listing read along the way
    names = [m.name for m in survey.found]
    assert names == sorted(set(names)) == [m.name for m in made if m.name != "run003"]
    assert [b.name for b in survey.broken] == ["run003"] and "run003.json" in survey.broken[0].reason
    assert survey.seen == {m.name for m in made}
    assert survey.take()  # a finished round stays finished


def test_a_survey_of_a_folder_with_no_runs_dir_is_done_at_once(tmp_path):
    survey = SurveyRound(ExperimentsLayout.at(tmp_path / "empty"))
    assert survey.take(until=time.monotonic()) and survey.found == [] and survey.seen == set()


def saved_offsets(fleet: Fleet) -> dict[str, int]:
    db = sqlite3.connect(f"file:{fleet.layout.state_db}?mode=ro", uri=True)
    try:
        return {name: json.loads(data)["position"]["offset"] for name, data in db.execute("SELECT name, data FROM runs")}
    finally:
        db.close()


def test_a_watcher_saving_one_batch_a_step_saves_every_chatty_run(tmp_path):
    """``watch.poll_step_s: 0``: each step writes one transaction, then the loop reads its events; all runs get saved."""
    fleet = Fleet(tmp_path / "exp", settings="watch: {poll_step_s: 0, position_save_s: 0.2, safety_poll_s: 60}\n")
    names = [f"live{i:03d}" for i in range(SAVE_BATCH + 50)]
    try:
        fleet.adopt_sleepers(names)
        fleet.start_watcher()
        wait_for(lambda: len(fleet.audit.select("run discovered")) == len(names), what="every run watched", timeout=60)
        for round_ in (1, 2):
            for name in names:
                with open(fleet.root / f"{name}.log", "a") as fh:
                    fh.write(line(round_))
            sizes = {name: (fleet.root / f"{name}.log").stat().st_size for name in names}
            wait_for(lambda: all(saved_offsets(fleet).get(n) == size for n, size in sizes.items()),
                     what=f"every run's position saved (round {round_})", timeout=30)
    finally:
        fleet.cleanup()
