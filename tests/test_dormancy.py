"""Finished runs let go of their files and come back when those change (expwatch/dormancy.py, issue 16).

A real watcher on a folder of runs whose manifests say they finished; what
it holds open is read from /proc, what it did from its audit trail.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from conftest import wait_for
from fleet import Fleet, ts_seconds

from expwatch.manifest import HaltMark, RunManifest, save_manifest

SETTINGS = """\
watch: {settle_s: 0.4, safety_poll_s: 0.3, release_finished_s: 1.5}
kill: {grace_s: 2}
launch: {check_after_s: 0.05}
"""


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds")


def finished_run(fleet: Fleet, name: str, **marks) -> RunManifest:
    log = fleet.root / f"{name}.log"
    log.write_text("INFO eval: [1/2] item-1 correct=True\nINFO eval: [2/2] item-2 correct=True\n")
    manifest = RunManifest(name=name, argv=("python", "eval.py"), cwd=str(fleet.root), log=str(log), expected=2, **marks)
    save_manifest(fleet.layout, manifest)
    return manifest


def open_paths(pid: int) -> set[str]:
    paths = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            paths.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return paths


def test_a_long_finished_run_goes_straight_to_sleep_and_is_revived_by_a_write_to_its_log(tmp_path):
    fleet = Fleet(tmp_path / "exp", settings=SETTINGS)
    try:
        old = finished_run(fleet, "old", completed_at=iso(time.time() - 86400))
        size = os.path.getsize(old.log)
        watcher = fleet.start_watcher()
        first = wait_for(lambda: fleet.audit.select("run discovered", run="old"), what="the finished run to be found")
        assert first[0]["asleep"] is True and first[0]["done"] is None  # no result file: nothing done to show
        assert old.log not in open_paths(watcher.pid)
        with open(old.log, "a") as fh:
            fh.write("INFO eval: a line written after the run completed\n")
        discovered = wait_for(lambda: fleet.audit.select("run discovered", run="old")[1:], what="the run to be watched again")
        assert discovered[0]["resumed_at_offset"] == size  # read on from where its history ended, not from the start
        assert not discovered[0].get("asleep")
        wait_for(lambda: fleet.audit.select("run released", run="old"), what="the run to be released again")
        assert old.log not in open_paths(watcher.pid)
    finally:
        fleet.cleanup()


def test_a_run_that_just_finished_is_kept_for_release_finished_s(tmp_path):
    fleet = Fleet(tmp_path / "exp", settings=SETTINGS)
    try:
        (fleet.root / "expwatch.yaml").write_text(SETTINGS.replace("release_finished_s: 1.5", "release_finished_s: 4"))
        completed_at = iso(time.time())
        finished = datetime.fromisoformat(completed_at).timestamp()  # the release counts from the manifest's time
        fresh = finished_run(fleet, "fresh", completed_at=completed_at)
        watcher = fleet.start_watcher()
        # The log is opened by its history read, after `run discovered` is recorded (CI caught the
        # gap); from then it stays open until the release, which is never due before finished + 4 s.
        wait_for(lambda: fleet.audit.select("history read", run="fresh"), what="the run's history read")
        held = open_paths(watcher.pid)
        if time.time() - finished < 4 - 0.002:  # read wholly before the release could be due
            assert fresh.log in held
        released = wait_for(lambda: fleet.audit.select("run released", run="fresh"), what="the release", timeout=20)
        assert ts_seconds(released[0]["ts"]) - finished >= 4 - 0.002  # both times are cut to milliseconds
    finally:
        fleet.cleanup()


def test_a_released_halted_run_that_is_resumed_has_its_guard_reset(tmp_path):
    fleet = Fleet(tmp_path / "exp", settings=SETTINGS)
    try:
        halted = finished_run(fleet, "stuck", halted=HaltMark(reason="TRACEBACK twice without progress", incident=None, at=iso(time.time() - 3600)))
        fleet.start_watcher()
        found = wait_for(lambda: fleet.audit.select("run discovered", run="stuck"), what="the halted run to be found")
        assert found[0]["asleep"] is True and found[0]["halted"] == "TRACEBACK twice without progress"
        save_manifest(fleet.layout, halted.with_changes(halted=None))  # what `expwatch resume` writes
        wait_for(lambda: fleet.audit.select("run resumed", run="stuck"), what="the resume to be seen")
    finally:
        fleet.cleanup()


def test_a_safety_poll_taken_one_run_per_step_still_reaches_every_run(tmp_path):
    """``watch.poll_step_s: 0``: each step of a round looks at one run, then the loop reads its events.

    Releasing a run that finished while watched is the safety poll's alone, so
    every run released shows that the stepped rounds went through them all,
    round after round, and that the watcher read a log between steps.
    """
    fleet = Fleet(tmp_path / "exp", settings=SETTINGS.replace("safety_poll_s: 0.3", "safety_poll_s: 0.3, poll_step_s: 0"))
    names = [f"r{i:02d}" for i in range(12)]
    try:
        for name in names:
            finished_run(fleet, name, completed_at=iso(time.time()))
        watcher = fleet.start_watcher()
        for name in names:
            wait_for(lambda: fleet.audit.select("run released", run=name), what=f"{name} to be released", timeout=30)
        assert not {str(fleet.root / f"{name}.log") for name in names} & open_paths(watcher.pid)
        with open(fleet.root / "r05.log", "a") as fh:
            fh.write("INFO eval: a line written after the run completed\n")
        wait_for(lambda: fleet.audit.select("run discovered", run="r05")[1:], what="r05 to be watched again")
        wait_for(lambda: len(fleet.audit.select("run released", run="r05")) == 2, what="r05 to be released again", timeout=30)
    finally:
        fleet.cleanup()
