"""A fallback backend is not stampeded: a profile's max_runs holds for launch and for switch_profile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime

import yaml

from conftest import fast_rules, wait_for
from endpoint import ModelEndpoint
from fleet import ts_seconds
from expwatch.actions.config import switch_profile
from expwatch.actions.context import ActionContext
from expwatch.audit.log import AuditLog
from expwatch.cli import main as cli
from expwatch.profile_slots import runs_using
from expwatch.runners.registry import Runners
from expwatch.settings import load_settings

SLEEPER = (sys.executable, "-c", "import time; time.sleep(60)")


def _fast_slots(experiments) -> None:
    path = experiments.root / "expwatch.yaml"
    settings = yaml.safe_load(path.read_text())
    settings.setdefault("launch", {})["slot_poll_s"] = 0.05
    path.write_text(yaml.safe_dump(settings))


def _launch_argv(experiments, name: str, profile: str, *options: str) -> list[str]:
    return ["launch", "--yes", *options, "--name", name, "--profile", profile, "--log", str(experiments.root / f"{name}.log"),
            "--dir", str(experiments.root), "--", *SLEEPER]


def _end(experiments, name: str) -> None:
    os.killpg(experiments.manifest(name).pgid, signal.SIGKILL)
    wait_for(lambda: experiments.state(name) == "DEAD", what=f"{name} dead")


def _users(experiments, profile: str) -> list[str]:
    settings = load_settings(experiments.layout)
    return runs_using(experiments.layout, Runners(settings), profile)


def test_launch_onto_a_full_profile_refuses_and_queue_waits_for_the_slot(experiments, capsys):
    _fast_slots(experiments)
    assert cli(_launch_argv(experiments, "first", "trapi")) == 0
    assert cli(_launch_argv(experiments, "second", "trapi")) == 1
    err = capsys.readouterr().err
    assert "profile 'trapi' is full (max_runs 1; used by first)" in err and "--queue" in err
    assert not experiments.layout.manifest_path("second").exists()
    assert cli(_launch_argv(experiments, "other", "default")) == 0  # an uncapped profile is not affected
    queued = subprocess.Popen([sys.executable, "-m", "expwatch", *_launch_argv(experiments, "second", "trapi", "--queue")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = queued.stdout.readline()
    while line and "waiting for a slot" not in line:
        line = queued.stdout.readline()
    assert "waiting for a slot on profile 'trapi' (max_runs 1; used by first)" in line
    assert queued.poll() is None and not experiments.layout.manifest_path("second").exists()
    _end(experiments, "first")
    out, _ = queued.communicate(timeout=30)
    assert queued.returncode == 0, out
    assert _users(experiments, "trapi") == ["second"]


def test_ctrl_c_while_queued_launches_nothing(experiments):
    _fast_slots(experiments)
    assert cli(_launch_argv(experiments, "holder", "trapi")) == 0
    queued = subprocess.Popen([sys.executable, "-m", "expwatch", *_launch_argv(experiments, "later", "trapi", "--queue")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = queued.stdout.readline()
    while line and "waiting for a slot" not in line:
        line = queued.stdout.readline()
    queued.send_signal(signal.SIGINT)
    _, err = queued.communicate(timeout=30)
    assert queued.returncode == 130 and "nothing launched" in err
    assert not experiments.layout.manifest_path("later").exists()


def _context(experiments, name: str, stop: threading.Event) -> ActionContext:
    settings = load_settings(experiments.layout)
    return ActionContext(layout=experiments.layout, settings=settings, runners=Runners(settings),
                         audit=AuditLog(experiments.layout.audit_path), run=name, incident=f"inc-{name}", rule="PROXY_DOWN",
                         evidence={}, stop=stop, console=lambda line: None)


def test_switch_profile_onto_a_full_profile_waits_for_a_slot_and_status_shows_it(experiments):
    _fast_slots(experiments)
    assert cli(_launch_argv(experiments, "holder", "trapi")) == 0
    assert cli(_launch_argv(experiments, "mover", "proxy", "--skip-probe")) == 0
    stop = threading.Event()
    results = []
    thread = threading.Thread(target=lambda: results.append(switch_profile(_context(experiments, "mover", stop), "trapi")))
    thread.start()
    wait_for(lambda: experiments.manifest("mover").waiting_for_slot == "trapi", what="switch waiting")
    waits = experiments.audit(run="mover", event="waiting for profile slot")
    assert waits and waits[0]["holders"] == ["holder"] and waits[0]["max_runs"] == 1
    status = subprocess.run([sys.executable, "-m", "expwatch", "status", str(experiments.root)],
                            capture_output=True, text=True, check=True).stdout
    assert "mover: switch_profile is waiting for a slot on profile 'trapi'" in status.splitlines()
    assert experiments.manifest("mover").profile == "proxy"
    _end(experiments, "holder")
    thread.join(timeout=10)
    assert results[0].outcome == "profile switched" and results[0].details["waited_s"] > 0
    moved = experiments.manifest("mover")
    assert (moved.profile, moved.waiting_for_slot, moved.env_overrides["GPT4O_USE_TRAPI"]) == ("trapi", None, "1")


def test_ten_dead_runs_switching_at_once_take_the_one_slot_in_turn(experiments):
    _fast_slots(experiments)
    names = [f"run{i}" for i in range(10)]
    for name in names:
        assert cli(_launch_argv(experiments, name, "proxy", "--skip-probe")) == 0
        os.killpg(experiments.manifest(name).pgid, signal.SIGKILL)  # what a proxy outage's kill step leaves
    wait_for(lambda: all(experiments.state(n) == "DEAD" for n in names), what="all dead")
    stop = threading.Event()
    results: dict[str, str] = {}
    threads = [threading.Thread(target=lambda n=n: results.update({n: switch_profile(_context(experiments, n, stop), "trapi").outcome}))
               for n in names]
    for thread in threads:
        thread.start()
    wait_for(lambda: sum(experiments.manifest(n).waiting_for_slot == "trapi" for n in names) == 9, what="nine waiting")
    moved = [n for n in names if experiments.manifest(n).profile == "trapi"]
    assert len(moved) == 1 and _users(experiments, "trapi") == moved  # switched, not yet relaunched: holds the slot
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(results.values()) == ["interrupted"] * 9 + ["profile switched"]


def test_a_proxy_outage_moves_runs_onto_the_capped_fallback_one_at_a_time(experiments, monkeypatch):
    _fast_slots(experiments)
    with ModelEndpoint() as proxy:
        path = experiments.root / "expwatch.yaml"
        settings = yaml.safe_load(path.read_text())
        settings["profiles"] = {"proxy": {"probe": {"url": "${ML_PROXY_BASE}/v1/models", "every_s": 0.2, "timeout_s": 1}}}
        path.write_text(yaml.safe_dump(settings))
        experiments.layout.rules_path.write_text(fast_rules().replace("probe_failing_s: 60", "probe_failing_s: 0.5"))
        monkeypatch.setenv("ML_PROXY_BASE", f"http://127.0.0.1:{proxy.port}")
        for name in ("a", "b"):
            experiments.launch(name, items=40, delay=0.1, extra=("--profile", "proxy"))
        watcher = experiments.start_watcher()
        proxy.healthy = False
        waits = wait_for(lambda: experiments.audit(event="waiting for profile slot"), timeout=20, what="a run waiting for trapi")
        waiting, first = waits[0]["run"], ({"a", "b"} - {waits[0]["run"]}).pop()
        assert waits[0]["holders"] == [first] and experiments.manifest(waiting).profile == "proxy"
        for name in ("a", "b"):
            wait_for(lambda n=name: experiments.manifest(n).completed_at, timeout=60, what=f"{name} to complete on trapi")
        experiments.stop_watcher(watcher)
        switched = {r["run"]: r for r in experiments.audit(event="action finished") if r["action"] == "switch_profile"}
        # The waiting run moved only once the first had finished (completed, or its process ended): never two at once.
        ended = json.loads(experiments.layout.exit_path(first).read_text())["ended_at"]
        finished = min(ended, datetime.fromisoformat(experiments.manifest(first).completed_at).timestamp())
        assert ts_seconds(switched[waiting]["ts"]) >= finished
        assert all(experiments.manifest(n).profile == "trapi" for n in ("a", "b"))


def test_a_bad_max_runs_or_fallback_is_refused_with_the_field_named(experiments, capsys):
    path = experiments.root / "expwatch.yaml"
    base = path.read_text()
    for bad, message in (("profiles:\n  trapi: {max_runs: 0}\n", f"{path}:{base.count(chr(10)) + 2}: field 'profiles.trapi.max_runs' must be at least 1, got 0"),
                         ("profiles:\n  proxy: {fallback: tarpi}\n", "profiles: profile 'proxy': field 'fallback': unknown profile 'tarpi'")):
        path.write_text(base + bad)
        assert cli(_launch_argv(experiments, "bad", "default")) == 2
        assert message in capsys.readouterr().err
