"""A hand-edited, truncated or wrongly shaped manifest is shown UNREADABLE; everything else carries on."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import wait_for
from test_liveview import Pane, needs_tmux, table_rows

GOOD = {"argv": ["python", "-c", "pass"], "cwd": "/", "log": "/nonexistent.log"}
BAD = {
    "halted": ({**GOOD, "halted": {"foo": 1}}, "field 'halted'"),
    "env": ({**GOOD, "env_overrides": "abc"}, "field 'env_overrides'"),
    "pid": ({**GOOD, "pid": "abc"}, "field 'pid'"),
    "expected": ({**GOOD, "expected": "abc"}, "field 'expected'"),
    "listed": (["not", "an", "object"], "not an object"),
    "othername": ({**GOOD, "name": "someone-else"}, "field 'name'"),
}


def plant(experiments) -> None:
    experiments.layout.runs_dir.mkdir(parents=True, exist_ok=True)
    for name, (data, _) in BAD.items():
        if isinstance(data, dict):
            data = {"name": name, **data}
        experiments.layout.manifest_path(name).write_text(json.dumps(data))
    experiments.layout.manifest_path("truncated").write_text(json.dumps({"name": "truncated", **GOOD})[:30])


def test_status_shows_each_bad_manifest_as_unreadable_naming_file_and_field_and_the_good_run_normally(experiments):
    experiments.launch("healthy", items=4)
    plant(experiments)
    done = subprocess.run([sys.executable, "-m", "expwatch", "status", str(experiments.root), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    for name, (_, field) in BAD.items():
        assert rows[name]["state"] == "UNREADABLE", name
        assert str(experiments.layout.manifest_path(name)) in rows[name]["progress_note"] and field in rows[name]["progress_note"]
    assert rows["truncated"]["state"] == "UNREADABLE" and "invalid JSON" in rows["truncated"]["progress_note"]
    assert rows["healthy"]["state"] in ("RUNNING", "COMPLETE")
    plain = subprocess.run([sys.executable, "-m", "expwatch", "status", str(experiments.root)], capture_output=True, text=True)
    assert plain.returncode == 0 and "Traceback" not in plain.stderr
    assert sum("UNREADABLE" in line for line in plain.stdout.splitlines()) == len(BAD) + 1


def test_the_watcher_audits_each_bad_manifest_once_and_serves_the_good_run(experiments):
    plant(experiments)
    watcher = experiments.start_watcher()
    experiments.launch("healthy", items=6)
    wait_for(lambda: experiments.manifest("healthy").completed_at or watcher.poll() is not None, what="healthy completes")
    assert watcher.poll() is None, experiments.stop_watcher(watcher)
    wanted = set(BAD) | {"truncated"}
    wait_for(lambda: {r["run"] for r in experiments.audit(event="manifest unreadable")} == wanted, what="each bad manifest audited")
    assert len(experiments.audit(event="manifest unreadable")) == len(wanted)
    assert not [r for r in experiments.audit(event="run discovered") if r["run"] in wanted]
    experiments.stop_watcher(watcher)
    assert watcher.returncode == 0


@needs_tmux
def test_the_live_table_shows_a_bad_manifest_as_an_unreadable_row_beside_the_runs(experiments):
    plant(experiments)
    experiments.launch("healthy", items=400, delay=0.05)
    pane = Pane([sys.executable, "-m", "expwatch", str(experiments.root)], 120, 30)
    try:
        def rows():
            screen = pane.screen()
            found = table_rows(screen, ["pid", "healthy"])
            return found if any("UNREAD" in r for r in found["pid"]) and any("RUNNING" in r for r in found["healthy"]) else None

        found = wait_for(rows, timeout=20, what="an UNREADABLE row and a RUNNING row")
        assert str(experiments.layout.manifest_path("pid"))[:20] in found["pid"][0]  # the reason, cut to the column
        pane.keys("C-c")
    finally:
        pane.close()


def test_every_manifest_field_has_its_type_check():
    """A field added to RunManifest without a kind would be dropped silently on every read."""
    from dataclasses import fields

    from expwatch.manifest import FIELD_KINDS, RunManifest

    assert set(FIELD_KINDS) == {f.name for f in fields(RunManifest)}
