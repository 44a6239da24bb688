"""`expwatch pipeline`: a serial ablation over the stand-in evaluation, run by real processes.

Macro accuracies (mean over task types of correct/valid, 12 items, task types
cycling EPM ASI HLD QA OCR) of the stand-in's seeded answers, counted from its
per-task figures:
  seed 3 (baseline): ASI 3/3 EPM 3/3 HLD 1/2 OCR 2/2 QA 1/2 -> (1+1+.5+1+.5)/5 = 80.00 (a phase on it: noise)
  seed 6:            ASI 3/3 EPM 2/3 HLD 2/2 OCR 1/2 QA 2/2 -> (1+2/3+1+.5+1)/5 = 83.33 (+3.33: gain)
  seed 1:            ASI 2/3 EPM 1/3 HLD 1/2 OCR 2/2 QA 1/2 -> (2/3+1/3+.5+1+.5)/5 = 60.00 (-20: regression)
Two identical baseline runs differ by 0, so the recorded floor is the minimum, 2 points.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import fast_rules, wait_for
from expwatch.cli import main
from expwatch.pipeline.state import load_state
from expwatch.pipeline.watcher_keeper import watcher_holder
from expwatch.results.progress import read_progress

ITEMS = 12


def fake_eval(seed: int, delay: float) -> list[str]:
    return [sys.executable, "-m", "expwatch.demo.fake_eval", "--items", str(ITEMS), "--delay", str(delay),
            "--seed", str(seed), "--output", "{result}"]


def phase(name: str, seed: int, delay: float = 0.02, **extra) -> dict:
    return {"name": name, "command": fake_eval(seed, delay), "result": f"{name}.json", "log": f"{name}.log",
            "expected": ITEMS, "smoke": 2, **extra}


@pytest.fixture
def ablation(experiments, tmp_path):
    """A baseline (seed 3) with its criteria file, and fast pipeline settings."""
    root = experiments.root
    (root / "expwatch.rules.yaml").write_text(fast_rules(silent_s=10))
    for name in ("e0", "e0-rerun"):
        subprocess.run(fake_eval(3, 0)[:-1] + [str(root / f"{name}.json")], check=True, capture_output=True, timeout=60)
    assert main(["noise", str(root / "e0.json"), str(root / "e0-rerun.json"), "--out", str(root / "criteria.yaml")]) == 0
    config = json.loads((root / "e0.json").read_text())["config"]
    (root / "base.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "fast.yaml").write_text("pipeline: {poll_s: 0.1, watcher_start_timeout_s: 20}\n")
    yield experiments
    # The pipeline starts `expwatch watch DIR`: a restarting parent and its watcher. The parent goes first, or it
    # starts a new watcher for each one killed (left running, they outlived the suite by hours).
    pid = watcher_holder(experiments.layout)
    if pid is not None:
        try:
            watcher = psutil.Process(pid)
            parent = watcher.parent()
            for proc in ([parent] if parent and "watch" in parent.cmdline() else []) + [watcher]:
                proc.kill()
        except psutil.NoSuchProcess:
            pass
        wait_for(lambda: watcher_holder(experiments.layout) is None, what="watcher gone")


def write_plan(root: Path, phases: list[dict], name: str = "abl") -> Path:
    plan = {"name": name, "baseline": {"config": "base.yaml", "result": "e0.json", "criteria": "criteria.yaml"},
            "phases": phases}
    path = root / f"{name}.plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def start_pipeline(exp, plan: Path, tmp_path: Path, out: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "expwatch", "pipeline", str(plan), "--dir", str(exp.root), "--settings", str(tmp_path / "fast.yaml"), *extra],
        stdout=open(tmp_path / out, "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def decisions(exp, gate: str) -> list[dict]:
    return [r for r in exp.audit(event="pipeline decision") if r["gate"] == gate]


def three_phases(fps_declared: bool) -> list[dict]:
    return [
        phase("e1", seed=6, delay=0.4, set={"mode.summary_prompt_variant": "v2"}, changes=["mode.summary_prompt_variant"]),
        # e2 moves pipeline.fps; until the plan declares it, that is drift. The stand-in's `answer`
        # is the model's parsed answer, not the gold: the phase says so for its run.
        phase("e2", seed=3, set={"pipeline.fps": 2}, changes=["pipeline.fps"] if fps_declared else [], fields={"gold": None}),
        phase("e3", seed=1),
    ]


def test_three_phases_gain_drift_regression_with_killed_pipelines_and_watcher_never_launching_twice(ablation, tmp_path):
    exp = ablation
    plan = write_plan(exp.root, three_phases(fps_declared=False))

    def done(name: str) -> int:
        snap = read_progress(exp.root / f"{name}.json", None)
        return snap.done if snap else 0

    # 1. The pipeline is killed while `expwatch launch` is still in e1's smoke run.
    first = start_pipeline(exp, plan, tmp_path, "first.out")
    wait_for(lambda: (s := load_state(exp.layout, "abl")) and s.phase("e1").launch_pid, timeout=60, what="e1 launching")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    assert not exp.layout.manifest_path("e1").exists()
    # 2. The next pipeline waits for that launch instead of launching again.
    second = start_pipeline(exp, plan, tmp_path, "second.out")
    wait_for(lambda: load_state(exp.layout, "abl").phase("e1").status == "running", timeout=60, what="e1 launched")
    assert main(["pipeline", str(plan), "--dir", str(exp.root)]) == 3  # one driver per pipeline
    # 3. Mid-phase, the watcher and the pipeline are SIGKILLed together.
    wait_for(lambda: done("e1") >= 3, timeout=30, what="e1 mid-phase")
    # The pipeline's own record of the watcher it started, not the lock alone: a watcher takes the lock a
    # moment before the pipeline that started it sees so and records it.
    started_by_second = wait_for(lambda: exp.audit(event="pipeline started watcher"), what="the watcher the pipeline started")
    watcher = started_by_second[0]["watcher_pid"]
    assert watcher == watcher_holder(exp.layout)
    os.kill(watcher, signal.SIGKILL)
    os.kill(second.pid, signal.SIGKILL)
    second.wait(timeout=10)
    assert done("e1") < ITEMS  # truly mid-phase: the run goes on unwatched for a while
    # 4. The third pipeline restarts the watcher, judges e1 a gain, and stops before launching e2 (drift).
    third = start_pipeline(exp, plan, tmp_path, "third.out")
    assert third.wait(timeout=90) == 1, (tmp_path / "third.out").read_text()
    state = load_state(exp.layout, "abl")
    assert [(p.name, p.status, p.verdict) for p in state.phases] == [
        ("e1", "passed", "gain"), ("e2", "stopped", None), ("e3", "pending", None)]
    assert state.phase("e1").delta == pytest.approx(10 / 3, abs=1e-5)
    assert state.phase("e2").reason == "cache-key drift the phase does not declare in `changes`: pipeline.fps: 1 -> 2"
    assert not exp.layout.manifest_path("e2").exists()
    # 5. The human declares the change and retries: e2 is noise (goes on), e3 regresses (stops).
    write_plan(exp.root, three_phases(fps_declared=True))
    fourth = start_pipeline(exp, plan, tmp_path, "fourth.out", "--retry")
    assert fourth.wait(timeout=90) == 1, (tmp_path / "fourth.out").read_text()

    state = load_state(exp.layout, "abl")
    assert [(p.name, p.status, p.verdict) for p in state.phases] == [
        ("e1", "passed", "gain"), ("e2", "passed", "noise"), ("e3", "stopped", "regression")]
    assert state.status == "stopped"
    assert (state.phase("e2").delta, state.phase("e3").delta) == (0.0, -20.0)
    verdict = decisions(exp, "verdict")[-1]["numbers"]
    assert (verdict["baseline_macro_acc"], verdict["candidate_macro_acc"], verdict["noise_floor"]) == (80.0, 60.0, 2.0)
    assert "pipeline abl stopped at phase e3: regression: macro accuracy 60.00 vs baseline 80.00 (-20.00 points" in (tmp_path / "fourth.out").read_text()
    # One launch per phase, across the killed pipelines and watcher; one e1 process only.
    assert [r["phase"] for r in exp.audit(event="pipeline phase launching")] == ["e1", "e2", "e3"]
    assert [r["phase"] for r in exp.audit(event="pipeline awaits earlier launch")] == ["e1"]
    assert len({r["pid"] for r in exp.audit(run="e1", event="run discovered")}) == 1
    assert exp.manifest("e1").restarts == 0 and sorted(set(exp.items("e1"))) == exp.items("e1") and len(exp.items("e1")) == ITEMS
    # The killed watcher came back: restarted by its own restarting parent (`expwatch watch` respawns a watcher
    # that dies abnormally), or, had that parent died too, started again by the pipeline.
    started = exp.audit(event="pipeline started watcher")
    restarted = exp.audit(event="watcher restarted")
    lifecycle = [(r["event"], r.get("watcher_pid") or r.get("previous_pid") or r.get("pid"))
                 for r in exp.audit() if "watcher" in r["event"]]
    assert (len(started) == 2 and started[1]["watcher_pid"] != watcher) or (len(started) == 1 and restarted), lifecycle
    assert decisions(exp, "drift")[0]["numbers"]["drifted"] == {"mode.summary_prompt_variant": ["v1", "v2"]}
    assert [d["ok"] for d in decisions(exp, "drift") if d["phase"] == "e2"] == [False, True]
    assert [r["gate"] for r in exp.audit(run="e3", event="pipeline decision")] == ["plan", "drift", "result-drift", "validate", "verdict"]

    # The run's field map was written beside its result, and the watcher's validation read through it.
    assert yaml.safe_load((exp.root / "e2.fields.yaml").read_text()) == {"gold": None}
    assert json.loads((exp.root / "e2.validation.json").read_text())["fields"]["gold"] is None

    status = subprocess.run([sys.executable, "-m", "expwatch", "status", str(exp.root)], capture_output=True, text=True, timeout=60)
    assert "pipeline abl: STOPPED" in status.stdout
    assert "e1                   passed    gain +3.33 points" in status.stdout
    assert "e3                   stopped   regression -20.00 points - regression: macro accuracy 60.00" in status.stdout
    # A stopped pipeline run again says so and launches nothing.
    again = subprocess.run([sys.executable, "-m", "expwatch", "pipeline", str(plan), "--dir", str(exp.root)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "is stopped at e3" in again.stdout
    assert len(exp.audit(event="pipeline phase launching")) == 3


def test_a_phase_that_drifts_stops_before_launch_and_dry_run_says_so(ablation, tmp_path, capsys):
    exp = ablation
    plan = write_plan(exp.root, [phase("d1", seed=6, set={"pipeline.fps": 2, "workers": 8}), phase("d2", seed=3)])
    subprocess.run(["git", "init", "-q"], cwd=exp.root, check=True)
    subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-q", "--allow-empty",
                    "-m", "tweak the prompt after the plan was written"], cwd=exp.root, check=True)

    assert main(["pipeline", str(plan), "--dir", str(exp.root), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "phase d1: drift STOP: cache-key drift the phase does not declare in `changes`: pipeline.fps: 1 -> 2" in dry
    assert not exp.layout.runs_dir.exists() and load_state(exp.layout, "abl") is None

    assert main(["pipeline", str(plan), "--dir", str(exp.root), "--settings", str(tmp_path / "fast.yaml")]) == 1
    out = capsys.readouterr().out
    assert "commit since the plan changed:" in out and "tweak the prompt" in out
    drift = decisions(exp, "drift")[0]
    assert (drift["ok"], drift["numbers"]["undeclared"], drift["numbers"]["drifted"]) == (False, ["pipeline.fps"], {"pipeline.fps": ["1", "2"]})
    assert exp.audit(event="pipeline phase launching") == []
    assert not exp.layout.runs_dir.exists()
    assert [p.status for p in load_state(exp.layout, "abl").phases] == ["stopped", "pending"]
    status = subprocess.run([sys.executable, "-m", "expwatch", "status", str(exp.root)], capture_output=True, text=True, timeout=60)
    assert "pipeline abl: STOPPED" in status.stdout and "d1                   stopped   - cache-key drift" in status.stdout


def test_plan_errors_name_the_file_line_and_field(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("baseline: {config: a.yaml, result: r.json, criteria: c.yaml}\nphases:\n"
                    "  - name: e1\n    command: [python, eval.py, --out, '{reslt}']\n    result: e1.json\n    log: e1.log\n"
                    "    expected: 3\n")
    assert main(["pipeline", str(plan), "--dry-run"]) == 2
    assert f"{plan}:4: phases[0].command: '{{reslt}}': unknown placeholder 'reslt'" in capsys.readouterr().err
    plan.write_text("baseline: {config: a.yaml, result: r.json, criteria: c.yaml}\nphases:\n"
                    "  - name: e1\n    command: [python]\n    result: e1.json\n    log: e1.log\n    expected: 3\n    chnages: [x]\n")
    assert main(["pipeline", str(plan)]) == 2
    assert f"{plan}:8: phases[0].chnages: unknown key" in capsys.readouterr().err


def test_missing_baseline_files_and_a_failed_smoke_run_stop_without_launching(ablation, tmp_path, capsys):
    exp = ablation
    plan = write_plan(exp.root, [phase("s1", seed=6, command=fake_eval(6, 0.02) + ["--null-rate", "1"])])
    criteria = (exp.root / "criteria.yaml").read_text()
    (exp.root / "criteria.yaml").unlink()
    assert main(["pipeline", str(plan), "--dir", str(exp.root), "--settings", str(tmp_path / "fast.yaml")]) == 1
    assert f"files the plan names are gone: {exp.root / 'criteria.yaml'}" in capsys.readouterr().out
    (exp.root / "criteria.yaml").write_text(criteria)
    # Every smoke item is a content-policy null: `expwatch launch --smoke` refuses, and nothing runs.
    assert main(["pipeline", str(plan), "--dir", str(exp.root), "--settings", str(tmp_path / "fast.yaml"), "--retry"]) == 1
    stopped = load_state(exp.layout, "abl").phase("s1")
    assert stopped.status == "stopped" and stopped.reason.startswith("launch failed")
    launch = [d for d in exp.audit(event="pipeline decision") if d["gate"] == "launch"][0]
    assert "smoke run on 2 items failed; nothing launched" in launch["message"] and "2 of 2 items have a null response" in launch["message"]
    assert not exp.layout.manifest_path("s1").exists()


def test_a_run_that_records_an_undeclared_cache_key_change_stops_after_it_completes(ablation, tmp_path):
    exp = ablation
    settings = tmp_path / "fast.yaml"
    settings.write_text(settings.read_text() + "drift:\n  fields: [model.name, pipeline.fps]\n")
    # Nothing in `set`: the plan's config does not drift, but the command's --model does.
    plan = write_plan(exp.root, [phase("m1", seed=3, command=fake_eval(3, 0.01) + ["--model", "o3"])])
    assert main(["pipeline", str(plan), "--dir", str(exp.root), "--settings", str(settings)]) == 1
    gate = [d for d in exp.audit(event="pipeline decision") if d["gate"] == "result-drift"][0]
    assert (gate["ok"], gate["numbers"]["drifted"]) == (False, {"model.name": ["gpt-4o", "o3"]})
    assert load_state(exp.layout, "abl").phase("m1").reason == \
        "the run recorded an undeclared cache-key change: model.name: gpt-4o -> o3"


def test_noise_stops_when_the_setting_says_so_and_other_task_types_are_not_comparable(ablation, tmp_path):
    exp = ablation
    settings = tmp_path / "strict.yaml"
    settings.write_text((tmp_path / "fast.yaml").read_text().replace("poll_s", "noise_goes_on: false, poll_s"))
    noisy = write_plan(exp.root, [phase("n1", seed=3)], name="noisy")  # the baseline's own seed: delta 0
    assert main(["pipeline", str(noisy), "--dir", str(exp.root), "--settings", str(settings)]) == 1
    assert load_state(exp.layout, "noisy").phase("n1").reason.startswith("noise: macro accuracy 80.00 vs baseline 80.00 (+0.00 points")
    # Two task types only: a macro over QA and OCR is no measure against one over five.
    tasks = write_plan(exp.root, [phase("t1", seed=3, command=fake_eval(3, 0.01) + ["--task-types", "QA,OCR"])], name="tasks")
    assert main(["pipeline", str(tasks), "--dir", str(exp.root), "--settings", str(tmp_path / "fast.yaml")]) == 1
    assert load_state(exp.layout, "tasks").phase("t1").reason.startswith("not comparable with the baseline: task types differ")


def test_a_phase_whose_run_is_halted_stops_the_pipeline(ablation, tmp_path):
    exp = ablation
    # A genuine bug at item 6 on every run: the watcher's rules retry it, then its guard halts the run.
    plan = write_plan(exp.root, [phase("h1", seed=3, command=fake_eval(3, 0.02) + ["--fault", "traceback:always@6"]),
                                 phase("h2", seed=3)], name="halts")
    assert main(["pipeline", str(plan), "--dir", str(exp.root), "--settings", str(tmp_path / "fast.yaml")]) == 1
    state = load_state(exp.layout, "halts")
    assert [p.status for p in state.phases] == ["stopped", "pending"]
    assert state.phase("h1").reason == f"run HALTED: {exp.manifest('h1').halted.reason}"
    assert "TRACEBACK fired 2 times in a row with no progress" in state.phase("h1").reason
    assert [r["phase"] for r in exp.audit(event="pipeline phase launching")] == ["h1"]


def test_a_phase_whose_script_is_gone_stops_at_the_plan_gate_before_launching(ablation, tmp_path, capsys):
    exp = ablation
    script = exp.root / "eval_gone.py"
    script.write_text("print('never run')\n")
    plan = write_plan(exp.root, [phase("g1", seed=2, command=[sys.executable, str(script), "--output", "{result}"])])
    script.unlink()
    assert main(["pipeline", str(plan), "--dir", str(exp.root), "--settings", str(tmp_path / "fast.yaml")]) == 1
    assert f"files the plan names are gone: {script}" in capsys.readouterr().out
    assert not exp.layout.manifest_path("g1").exists()
