"""Actions on real processes: kill reaches the whole tree and never a reused pid; probes and alerts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from conftest import fast_rules, wait_for
from endpoint import ModelEndpoint
from expwatch.cli import main as cli
from expwatch.manifest import RunManifest, save_manifest
from expwatch.runners.local import LocalRunner

TREE = """
import os, subprocess, sys, time
# a child that leaves the process group (setsid) and one that stays
subprocess.Popen([sys.executable, "-c", "import os,time; os.setsid(); time.sleep(300)"])
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
time.sleep(300)
"""


def test_kill_ends_the_whole_tree_including_children_that_left_the_group(experiments):
    assert cli(["launch", "--name", "tree", "--log", str(experiments.root / "tree.log"), "--dir", str(experiments.root),
                "--", sys.executable, "-c", TREE]) == 0
    manifest = experiments.manifest("tree")
    leader = psutil.Process(manifest.pid)

    def tree_with_an_escapee():
        procs = leader.children(recursive=True)
        return len(procs) >= 3 and any(os.getpgid(p.pid) != manifest.pgid for p in procs) and procs

    procs = wait_for(tree_with_an_escapee, what="a tree with a child outside the group")
    report = LocalRunner().kill(manifest, grace_s=2)
    assert not report.skipped
    gone, alive = psutil.wait_procs([leader, *procs], timeout=5)
    assert not alive


def test_a_pid_reused_by_an_unrelated_process_is_never_signalled(experiments, capsys):
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        real = psutil.Process(bystander.pid)
        stale = RunManifest(name="reused", argv=("sleep", "60"), cwd="/", log=str(experiments.root / "r.log"),
                            pid=bystander.pid, create_time=real.create_time() - 3600, pgid=bystander.pid)
        save_manifest(experiments.layout, stale)
        report = LocalRunner().kill(stale, grace_s=1)
        assert "another process" in report.skipped
        assert cli(["stop", "reused", "--dir", str(experiments.root)]) == 0
        time.sleep(0.3)
        assert bystander.poll() is None
    finally:
        bystander.kill()


def test_a_failing_proxy_probe_switches_the_run_to_trapi_and_restarts_it(experiments, monkeypatch):
    with ModelEndpoint() as proxy:
        (experiments.root / "expwatch.yaml").write_text(
            (experiments.root / "expwatch.yaml").read_text()
            + "profiles:\n  proxy:\n    probe: {url: 'http://127.0.0.1:${PROXY_PORT}/v1/models', every_s: 0.2, timeout_s: 1}\n"
        )
        (experiments.root / "expwatch.rules.yaml").write_text(fast_rules().replace("probe_failing_s: 60", "probe_failing_s: 0.5"))
        monkeypatch.setenv("PROXY_PORT", str(proxy.port))
        experiments.launch("probed", items=400, delay=0.05, extra=("--profile", "proxy"))
        watcher = subprocess.Popen([sys.executable, "-m", "expwatch", str(experiments.root)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, env={**os.environ}, start_new_session=True)
        experiments.watchers.append(watcher)
        time.sleep(1.0)
        assert not experiments.audit(run="probed", event="rule matched")
        proxy.healthy = False
        wait_for(lambda: experiments.manifest("probed").profile == "trapi" and experiments.manifest("probed").restarts == 1,
                 timeout=20, what="switch to trapi")
        experiments.stop_watcher(watcher)
        assert experiments.audit(event="probe failed")[0]["detail"] == "HTTP 503"
        assert [r["rule"] for r in experiments.audit(run="probed", event="incident classified")] == ["PROXY_DOWN"]
        assert experiments.manifest("probed").env_overrides["GPT4O_USE_TRAPI"] == "1"


def test_high_null_alerts_through_the_users_command_and_keeps_the_run_going(experiments, tmp_path):
    out = tmp_path / "alert.txt"
    script = tmp_path / "notify.sh"
    script.write_text(f'#!/bin/sh\necho "$EXPWATCH_RULE $EXPWATCH_RUN $EXPWATCH_MESSAGE" >> {out}\n')
    script.chmod(0o755)
    rules = fast_rules().replace(
        'actions: [{alert: "null rate above 5%"}]',
        f'actions: [{{alert: {{message: "null rate above 5%", argv: ["{script}"]}}}}]',
    ).replace("min_items: 20", "min_items: 4")
    (experiments.root / "expwatch.rules.yaml").write_text(rules)
    watcher = experiments.start_watcher()
    experiments.launch("nulls", "--null-rate", "0.5", items=12)
    wait_for(lambda: experiments.manifest("nulls").completed_at, timeout=30, what="completion")
    experiments.stop_watcher(watcher)
    assert out.read_text().splitlines() == ["HIGH_NULL nulls null rate above 5%"]
    assert experiments.manifest("nulls").restarts == 0
    assert [r["rule"] for r in experiments.audit(run="nulls", event="incident classified")] == ["HIGH_NULL", "COMPLETE"]
