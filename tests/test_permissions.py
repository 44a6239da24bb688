"""Permissions like OpenSSH's StrictModes: owner-only files, and no file another user can write is acted on."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import time

import pytest

from conftest import wait_for
from expwatch.cli import main as cli

NOBODY = 65534


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_everything_under_expwatch_is_owner_only_even_under_umask_000(experiments):
    os.chmod(experiments.root, 0o777)  # the experiments folder itself is the user's business
    with umask(0o000):
        experiments.launch("r1", items=200, delay=0.05)
        watcher = experiments.start_watcher()
        wait_for(lambda: experiments.audit(run="r1", event="run discovered"), what="run discovered")
        experiments.stop_watcher(watcher)
    layout = experiments.layout
    assert mode(layout.home) == 0o700 and mode(layout.runs_dir) == 0o700
    for path in layout.home.rglob("*"):
        assert mode(path) & 0o077 == 0, f"{path} is {mode(path):04o}"
    assert {p.name for p in layout.home.iterdir()} >= {"audit.jsonl", "state.sqlite3", "watcher.lock", "runs"}


def planted(experiments, name: str, owner: int | None, file_mode: int) -> str:
    """A dead run's manifest whose restart would create a file: acted on, it would run as the watcher's user."""
    proof = experiments.root / f"{name}.pwned"
    experiments.layout.runs_dir.mkdir(parents=True, exist_ok=True)
    path = experiments.layout.manifest_path(name)
    path.write_text(json.dumps({"name": name, "argv": ["/bin/sh", "-c", f"touch {proof}"], "cwd": "/",
                                "log": str(experiments.root / f"{name}.log"), "pid": 999999, "create_time": 1.0}))
    os.chmod(path, file_mode)
    if owner is not None:
        os.chown(path, owner, -1)
    return str(proof)


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")
def test_a_manifest_planted_by_another_user_or_writable_by_others_is_refused_and_never_run(experiments):
    proofs = [planted(experiments, "other", NOBODY, 0o644), planted(experiments, "open", None, 0o666)]
    watcher = experiments.start_watcher()
    wait_for(lambda: {r["run"] for r in experiments.audit(event="manifest refused")} == {"other", "open"}, what="both refused")
    time.sleep(2.5)  # two safety polls: still refused, still not run
    experiments.stop_watcher(watcher)
    assert not any(os.path.exists(p) for p in proofs)
    refused = {r["run"]: r["error"] for r in experiments.audit(event="manifest refused")}
    assert "owned by nobody (uid 65534)" in refused["other"] and "writable by every user" in refused["open"]
    assert not experiments.audit(event="run discovered")
    status = subprocess.run([sys.executable, "-m", "expwatch", "status", str(experiments.root)], capture_output=True, text=True)
    assert status.returncode == 0 and status.stdout.count("UNREADABLE") == 2 and "refused" in status.stdout


def test_rules_init_writes_a_file_only_its_owner_can_write_even_under_umask_000(experiments):
    with umask(0o000):
        assert cli(["rules", "init", str(experiments.root)]) == 0
    assert mode(experiments.root / "expwatch.rules.yaml") == 0o644


def test_a_rules_file_writable_by_others_stops_the_watcher_before_it_starts_with_one_line(experiments):
    rules = experiments.root / "expwatch.rules.yaml"
    assert cli(["rules", "init", str(experiments.root)]) == 0
    os.chmod(rules, 0o666)
    done = subprocess.run([sys.executable, "-m", "expwatch", "watch", "--no-restart", str(experiments.root)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and str(rules) in done.stderr and "writable by every user" in done.stderr
    refused = experiments.audit(event="watcher refused to start")
    assert len(refused) == 1 and "writable by every user" in refused[0]["error"]
    assert not experiments.audit(event="watcher started")


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")
def test_a_settings_file_owned_by_another_user_keeps_the_supervised_watcher_from_starting_audited(experiments):
    os.chown(experiments.root / "expwatch.yaml", NOBODY, -1)
    done = subprocess.run([sys.executable, "-m", "expwatch", "watch", str(experiments.root)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "owned by nobody" in done.stderr
    assert "owned by nobody" in experiments.audit(event="watcher refused to start")[0]["error"]


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")
def test_a_settings_file_owned_by_another_user_is_refused_by_every_command(experiments, capsys):
    settings = experiments.root / "expwatch.yaml"
    os.chown(settings, NOBODY, -1)
    assert cli(["status", str(experiments.root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(settings) in err and "owned by nobody" in err


def test_group_access_makes_expwatch_group_shared_and_status_says_so(experiments, capsys):
    settings = experiments.root / "expwatch.yaml"
    settings.write_text(settings.read_text() + "security: {group_access: true}\n")
    experiments.launch("r1", items=3)
    assert mode(experiments.layout.home) == 0o770 and mode(experiments.layout.runs_dir) == 0o770
    assert mode(experiments.layout.manifest_path("r1")) == 0o660
    os.chmod(experiments.layout.manifest_path("r1"), 0o664)
    capsys.readouterr()
    assert cli(["status", str(experiments.root)]) == 0
    out = capsys.readouterr().out
    assert "UNREADABLE" not in out and "shared with its group" in out
