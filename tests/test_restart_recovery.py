"""A restart interrupted between launching and recording finds its launch instead of starting a second copy."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import psutil

from conftest import wait_for

from expwatch.actions.context import ActionContext
from expwatch.actions.process import restart
from expwatch.audit.log import AuditLog
from expwatch.manifest import RunManifest, save_manifest
from expwatch.runners.base import LaunchSpec
from expwatch.runners.registry import Runners
from expwatch.settings import load_settings


def context(experiments, step_info: dict) -> ActionContext:
    settings = load_settings(experiments.layout)
    return ActionContext(layout=experiments.layout, settings=settings, runners=Runners(settings),
                         audit=AuditLog(experiments.layout.audit_path), run="twice", incident="i-test", rule="DEAD",
                         evidence={}, stop=threading.Event(), console=print, step_info=step_info)


def test_a_resumed_restart_adopts_the_process_it_launched_before_the_watcher_died(experiments):
    argv = (sys.executable, "-c", "import time; time.sleep(60)")
    manifest = RunManifest(name="twice", argv=argv, cwd=str(experiments.root), log=str(experiments.root / "twice.log"))
    save_manifest(experiments.layout, manifest)
    # What the dead watcher did: persisted its token, launched, and died before writing the manifest.
    ctx = context(experiments, {"restarts_before": 0, "launch_token": "i-test-abc"})
    launched = ctx.runners.local.launch(LaunchSpec(name="twice", argv=argv, cwd=str(experiments.root), log=manifest.log,
                                                   env={}, exit_record=str(experiments.layout.exit_path("twice")),
                                                   launch_token="i-test-abc"))
    try:
        result = restart(ctx, None)
        recorded = experiments.manifest("twice")
        assert result.details["launched_before_watcher_restart"] is True
        assert (recorded.pid, recorded.restarts) == (launched.pid, 1)
        time.sleep(0.5)  # a second launch, had there been one, would be running by now
        copies = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == list(argv)]
        assert len(copies) == 1
    finally:
        ctx.runners.local.kill(experiments.manifest("twice"), grace_s=1)


def test_a_resumed_restart_whose_launch_never_happened_launches_once(experiments):
    argv = (sys.executable, "-c", "import time; time.sleep(60)")
    save_manifest(experiments.layout, RunManifest(name="twice", argv=argv, cwd=str(experiments.root),
                                                  log=str(experiments.root / "twice.log")))
    ctx = context(experiments, {"restarts_before": 0, "launch_token": "i-test-never"})
    try:
        result = restart(ctx, None)
        assert "recovered" not in result.details and experiments.manifest("twice").restarts == 1
    finally:
        ctx.runners.local.kill(experiments.manifest("twice"), grace_s=1)


def test_a_resumed_restart_whose_launch_already_ended_records_it_instead_of_launching_again(experiments):
    argv = (sys.executable, "-c", "raise SystemExit(3)")
    manifest = RunManifest(name="twice", argv=argv, cwd=str(experiments.root), log=str(experiments.root / "twice.log"))
    save_manifest(experiments.layout, manifest)
    ctx = context(experiments, {"restarts_before": 0, "launch_token": "i-test-ended"})
    exit_record = experiments.layout.exit_path("twice")
    launched = ctx.runners.local.launch(LaunchSpec(name="twice", argv=argv, cwd=str(experiments.root), log=manifest.log,
                                                   env={}, exit_record=str(exit_record), launch_token="i-test-ended"))
    wait_for(exit_record.exists, what="the launched copy to end")
    result = restart(ctx, None)
    recorded = experiments.manifest("twice")
    assert result.details["launched_before_watcher_restart"] is True and (recorded.pid, recorded.restarts) == (launched.pid, 1)
    assert json.loads(exit_record.read_text())["launch_token"] == "i-test-ended"


def test_a_launch_whose_launcher_died_before_reading_the_pid_is_still_found_by_its_token(tmp_path):
    """The shim outlives a launcher SIGKILLed mid-launch: it still waits and records the exit with the token."""
    import os
    import signal

    from expwatch.runners.base import LaunchSpec
    from expwatch.runners.local import LocalRunner, shim_argv

    record = tmp_path / "r.exit.json"
    read, write = os.pipe()
    os.close(read)  # the launcher is gone before the shim reports the pid
    argv = shim_argv(str(record), ("true",), pid_fd=write)
    env = {**os.environ, "EXPWATCH_LAUNCH_TOKEN": "tok-dead-launcher"}
    proc = subprocess.Popen(argv, env=env, pass_fds=(write,), start_new_session=True)
    os.close(write)
    assert proc.wait(timeout=20) == 0 and proc.returncode != -signal.SIGPIPE
    spec = LaunchSpec(name="r", argv=("true",), cwd=str(tmp_path), log=str(tmp_path / "r.log"), env={},
                      exit_record=str(record), launch_token="tok-dead-launcher")
    found = LocalRunner().find_launched(spec)
    assert found is not None and found.pid == proc.pid
