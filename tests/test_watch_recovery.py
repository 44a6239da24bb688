"""The watcher against real stand-in runs: each failure is recognised and healed, or halted."""

from __future__ import annotations

import json
import signal
import sys
import time


from conftest import fast_rules, wait_for

ALL = [f"item-{i:04d}" for i in range(12)]


def classified(experiments, run: str) -> list[str]:
    return [r["rule"] for r in experiments.audit(run=run, event="incident classified")]


def test_each_first_run_fault_is_classified_by_its_cause_and_the_run_recovers_exactly_once_per_item(experiments):
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules(silent_s=1.5))
    faults = {
        "ratelimit": ("rate_limit@4", "RATE_LIMIT"),
        "dies": ("die@4", "DEAD"),
        "sigkilled": ("sigkill@4", "DEAD"),
        "crash": ("traceback@4", "TRACEBACK"),
        "oom": ("oom@4", "OOM"),
        "proxy": ("proxy@4", "PROXY_DOWN"),
        "hang": ("hang@4", "STALE"),
    }
    watcher = experiments.start_watcher()
    for name, (fault, _) in faults.items():
        experiments.launch(name, "--fault", fault, "--workers", "8")
    experiments.launch("healthy")
    for name in [*faults, "healthy"]:
        wait_for(lambda: experiments.state(name) == "COMPLETE" and experiments.manifest(name).completed_at, timeout=60,
                 what=f"{name} to complete")
    experiments.stop_watcher(watcher)
    for name, (_, rule) in faults.items():
        assert sorted(experiments.items(name)) == ALL, name
        assert classified(experiments, name) == [rule, "COMPLETE"], name
        assert experiments.manifest(name).restarts == 1, name
    assert classified(experiments, "healthy") == ["COMPLETE"]
    assert not [r for r in experiments.audit(run="healthy", event="action started") if r["action"] != "complete"]
    # The 429 crash also printed a traceback; it was one incident, handled as a rate limit.
    rate = experiments.audit(run="ratelimit", event="incident classified")[0]
    assert {"RATE_LIMIT", "TRACEBACK"} <= set(rate["candidates"])
    assert "--workers" in experiments.manifest("ratelimit").argv and "4" in experiments.manifest("ratelimit").argv
    assert experiments.manifest("proxy").env_overrides["GPT4O_USE_TRAPI"] == "1"
    assert experiments.manifest("proxy").profile == "trapi"
    gpu = [r for r in experiments.audit(run="oom", event="action finished") if r["action"] == "free_gpu"]
    assert gpu and gpu[0]["outcome"] == "skipped"
    validation = experiments.root / "healthy.validation.json"
    assert json.loads(validation.read_text())["items"] == 12
    finished = [r for r in experiments.audit(run="healthy", event="action finished") if r["action"] == "complete"]
    assert finished[0]["validation"] == str(validation) and finished[0]["issues"] == []


def test_an_every_run_code_bug_is_halted_after_its_second_occurrence_with_a_diagnosis_bundle(experiments):
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())
    watcher = experiments.start_watcher()
    experiments.launch("bug", "--fault", "traceback:always@5", extra=("--env", "OPENAI_API_KEY=sk-do-not-leak"))
    experiments.launch("deadly", "--fault", "die:always@5")
    for name in ("bug", "deadly"):
        wait_for(lambda: experiments.manifest(name).halted, timeout=30, what=f"{name} halted")
    experiments.wait_settled("bug", "deadly")
    experiments.stop_watcher(watcher)
    assert classified(experiments, "bug") == ["TRACEBACK", "TRACEBACK"]
    assert classified(experiments, "deadly") == ["DEAD", "DEAD"]
    for name in ("bug", "deadly"):
        assert experiments.manifest(name).restarts == 1
        assert experiments.state(name) == "HALTED"
        decisions = [r["decision"] for r in experiments.audit(run=name, event="incident classified")]
        assert decisions == ["act", "halt"]
    bundle = next(experiments.layout.run_files_dir("bug").glob("diagnosis-*.md")).read_text()
    assert "KeyError: 'choices'" in bundle and "Traceback (most recent call last):" in bundle
    assert "expwatch resume bug" in bundle and "## Last 50 log lines" in bundle
    assert "sk-do-not-leak" not in bundle and "OPENAI_API_KEY" in bundle

    # Halted stays halted across a watcher restart ...
    watcher = experiments.start_watcher()
    time.sleep(1.5)
    experiments.stop_watcher(watcher)
    assert experiments.manifest("bug").restarts == 1 and experiments.state("bug") == "HALTED"
    # ... until a human resumes it.
    from expwatch.cli import main as cli

    assert cli(["resume", "bug", "--dir", str(experiments.root)]) == 0
    manifest = experiments.manifest("bug")
    assert manifest.halted is None and manifest.restarts == 2


def test_sigkill_of_the_watcher_during_a_wait_leads_to_exactly_one_restart(experiments):
    (experiments.root / "expwatch.rules.yaml").write_text(
        "replace: true\nrules:\n"
        "  - {name: DEAD, when: {process_dead: true}, actions: [{wait: 2.5}, restart]}\n"
        "  - {name: COMPLETE, when: {complete: true}, actions: [complete]}\n"
    )
    watcher = experiments.start_watcher()
    experiments.launch("victim", "--fault", "die@4")
    wait_for(lambda: [r for r in experiments.audit(run="victim", event="action started") if r["action"] == "wait"],
             what="wait step")
    experiments.stop_watcher(watcher, signal.SIGKILL)
    time.sleep(0.5)
    assert experiments.manifest("victim").restarts == 0
    watcher = experiments.start_watcher()
    wait_for(lambda: experiments.state("victim") == "COMPLETE", timeout=30, what="completion")
    experiments.wait_settled("victim")
    experiments.stop_watcher(watcher)
    assert experiments.manifest("victim").restarts == 1
    assert sorted(experiments.items("victim")) == ALL
    resumed = experiments.audit(run="victim", event="incident resumed")
    assert len(resumed) == 1 and resumed[0]["step_was_started"] is True
    restarts = [r for r in experiments.audit(run="victim", event="action finished") if r["action"] == "restart"]
    assert len(restarts) == 1


def test_dry_run_records_what_would_be_done_and_does_nothing(experiments):
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())
    watcher = experiments.start_watcher("--dry-run")
    experiments.launch("dry", "--fault", "die@3")
    wait_for(lambda: [r for r in experiments.audit(run="dry", event="action finished") if r["action"] == "restart"],
             what="dry-run restart record")
    experiments.stop_watcher(watcher)
    record = [r for r in experiments.audit(run="dry", event="action finished") if r["action"] == "restart"][0]
    assert record["dry_run"] is True
    assert experiments.manifest("dry").restarts == 0 and experiments.state("dry") == "DEAD"


def test_a_restart_whose_executable_is_gone_fails_audited_then_halts(experiments, tmp_path):
    script = tmp_path / "eval.sh"
    script.write_text("#!/bin/sh\necho starting\nexit 3\n")
    script.chmod(0o755)
    from expwatch.cli import main as cli

    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())
    cli(["launch", "--name", "gone", "--log", str(experiments.root / "gone.log"), "--expected", "5",
         "--dir", str(experiments.root), "--", str(script)])
    script.unlink()
    watcher = experiments.start_watcher()
    wait_for(lambda: experiments.manifest("gone").halted, what="halt")
    experiments.stop_watcher(watcher)
    failed = experiments.audit(run="gone", event="action failed")
    assert failed and failed[0]["action"] == "restart" and "not found" in failed[0]["error"]
    assert experiments.manifest("gone").restarts == 0


def test_a_second_watcher_on_the_same_directory_exits_with_a_clear_message(experiments):
    watcher = experiments.start_watcher()
    import subprocess
    import sys

    second = subprocess.run([sys.executable, "-m", "expwatch", str(experiments.root)], capture_output=True, text=True, timeout=20)
    experiments.stop_watcher(watcher)
    assert second.returncode == 3 and "already watching" in second.stderr


def test_a_run_without_an_expected_count_that_exits_cleanly_is_complete_not_dead(experiments, capsys):
    from expwatch.cli import main as cli

    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())
    watcher = experiments.start_watcher()
    result = experiments.root / "open.json"
    assert cli(["launch", "--name", "open", "--log", str(experiments.root / "open.log"), "--result", str(result),
                "--dir", str(experiments.root), "--", sys.executable, "-m", "expwatch.demo.fake_eval", "--items", "5",
                "--output", str(result), "--delay", "0.05"]) == 0
    wait_for(lambda: experiments.manifest("open").completed_at, what="completion")
    experiments.stop_watcher(watcher)
    assert classified(experiments, "open") == ["COMPLETE"]
    capsys.readouterr()
    assert cli(["status", str(experiments.root)]) == 0
    assert "COMPLETE" in capsys.readouterr().out


def test_a_launch_whose_command_fails_at_once_reports_it(experiments, capsys):
    from expwatch.cli import main as cli

    settings = experiments.root / "expwatch.yaml"
    settings.write_text(settings.read_text().replace("check_after_s: 0.05", "check_after_s: 1.0"))
    assert cli(["launch", "--name", "broken", "--log", str(experiments.root / "broken.log"), "--dir", str(experiments.root),
                "--", sys.executable, "-c", "raise SystemExit(4)"]) == 1
    assert "exited with code 4" in capsys.readouterr().err


def test_resume_and_stop_by_hand_are_incidents_with_the_same_records_as_a_rules(experiments):
    from expwatch.cli import main as cli

    experiments.launch("hand", "--fault", "hang@2", items=5)
    assert cli(["stop", "hand", "--dir", str(experiments.root)]) == 0
    assert cli(["resume", "hand", "--dir", str(experiments.root)]) == 0
    for kind, action, outcome in (("MANUAL_STOP", "kill", "killed"), ("MANUAL_RESUME", "restart", "restarted")):
        classified = [r for r in experiments.audit(run="hand", event="incident classified") if r["rule"] == kind]
        assert len(classified) == 1 and classified[0]["rules_digest"]
        incident = classified[0]["incident"]
        story = [(r["event"], r.get("action"), r.get("outcome")) for r in experiments.audit(run="hand") if r.get("incident") == incident]
        assert story == [("incident classified", None, None), ("action planned", action, None), ("action started", action, None),
                         ("action finished", action, outcome), ("incident closed", None, "restarted" if action == "restart" else "done")]
        assert all(r["rules_digest"] == classified[0]["rules_digest"] for r in experiments.audit(run="hand") if r.get("incident") == incident)
    assert experiments.manifest("hand").restarts == 1 and experiments.manifest("hand").stopped_at is None



def test_a_halted_run_fixed_and_resumed_under_a_live_watcher_is_restarted_once_not_also_as_dead(experiments):
    # The crash sweep's resume story: the halt was cleared before the relaunch, and the live watcher
    # took the old, dead process of the run it saw resumed for a death to heal (a second restart).
    import shlex

    from expwatch.cli import main as cli

    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())
    result, script = experiments.root / "bug.json", experiments.root / "bug.sh"
    command = [sys.executable, "-m", "expwatch.demo.fake_eval", "--items", "8", "--output", str(result), "--delay", "0.2"]
    script.write_text("exec " + shlex.join(command + ["--fault", "traceback:always@3"]) + "\n")
    watcher = experiments.start_watcher()
    assert cli(["launch", "--yes", "--name", "bug", "--log", str(experiments.root / "bug.log"), "--result", str(result),
                "--expected", "8", "--dir", str(experiments.root), "--", "sh", str(script)]) == 0
    wait_for(lambda: experiments.manifest("bug").halted, timeout=30, what="bug halted")
    experiments.wait_settled("bug")
    script.write_text("exec " + shlex.join(command) + "\n")  # the bug fixed
    assert cli(["resume", "bug", "--dir", str(experiments.root)]) == 0
    wait_for(lambda: experiments.manifest("bug").completed_at, timeout=30, what="bug to complete")
    experiments.wait_settled("bug")
    experiments.stop_watcher(watcher)
    assert classified(experiments, "bug") == ["TRACEBACK", "TRACEBACK", "MANUAL_RESUME", "COMPLETE"]
    assert experiments.manifest("bug").restarts == 2
    assert (experiments.root / "bug.log").read_text().count("Starting evaluation") == 3
    assert sorted(experiments.items("bug")) == [f"item-{i:04d}" for i in range(8)]


def test_a_run_that_crashed_before_any_watcher_read_its_log_is_decided_by_its_crash_not_as_dead(experiments):
    # The crash sweep's rate-limit, oom, proxy-down and crash-always stories with the watcher killed right
    # after discovering the run: its whole log was history on the next start, so only DEAD fired.
    (experiments.root / "expwatch.rules.yaml").write_text(fast_rules())
    for name, fault in (("limited", "rate_limit@2"), ("buggy", "traceback@2")):
        experiments.launch(name, "--fault", fault, items=6)
    for name in ("limited", "buggy"):
        wait_for(lambda: "Error" in (experiments.root / f"{name}.log").read_text(), timeout=20, what=f"{name} to crash")
    time.sleep(0.5)
    watcher = experiments.start_watcher()
    for name in ("limited", "buggy"):
        wait_for(lambda: experiments.manifest(name).completed_at, timeout=30, what=f"{name} to complete")
    experiments.wait_settled("limited", "buggy")
    experiments.stop_watcher(watcher)
    assert classified(experiments, "limited") == ["RATE_LIMIT", "COMPLETE"]
    assert classified(experiments, "buggy") == ["TRACEBACK", "COMPLETE"]


def test_a_watcher_starting_while_a_resume_by_hand_acts_leaves_its_incident_to_it_until_its_owner_is_gone(experiments):
    """The command's incident is in the shared state store; resumed by the watcher too, a run could restart twice."""
    import subprocess

    import psutil

    from expwatch.engine.recording import CLASSIFIED
    from expwatch.state import StateStore

    experiments.launch("owned")
    owner = subprocess.Popen(["sleep", "60"])  # stands for the `expwatch resume` process, alive and acting
    try:
        store = StateStore(experiments.layout.state_db)
        plan = [{"name": "alert", "arg": "resumed by the watcher"}]
        store.open_incident("i-byhand0001", "owned", "MANUAL_RESUME", plan,
                            {"reason": "resume by hand", "owner": {"pid": owner.pid, "create_time": psutil.Process(owner.pid).create_time()},
                             CLASSIFIED: {"decision": "act", "candidates": ["MANUAL_RESUME"]}})
        store.close()
        watcher = experiments.start_watcher()
        wait_for(lambda: experiments.audit(event="incident left to its owner"), what="the incident left to its owner")
        experiments.stop_watcher(watcher)
        assert not [r for r in experiments.audit(event="action started") if r.get("incident") == "i-byhand0001"]
    finally:
        owner.kill()
        owner.wait()
    watcher = experiments.start_watcher()  # the owner died mid-way: the next watcher finishes what it began
    wait_for(lambda: [r for r in experiments.audit(event="incident closed") if r.get("incident") == "i-byhand0001"],
             what="the incident resumed")
    experiments.stop_watcher(watcher)
    assert [r["action"] for r in experiments.audit(event="action started") if r.get("incident") == "i-byhand0001"] == ["alert"]
