"""The checks that let a pipeline move on, each a ``Decision`` with the numbers behind it.

Before a phase: the plan still holds (the files it names exist; what was
committed since the plan was written is shown, since a commit can change
what a phase measures) and the phase's config has not drifted from the
baseline on a cache-key field it did not declare. After a phase: the config
its result records has not drifted either, its result validates, and its verdict against the baseline's recorded noise floor is
not a regression. The checks reuse ``validate``, ``drift`` and ``verdict``
code, so the pipeline is never more lenient than those commands.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

from expwatch.files import NotReadyYet
from expwatch.pipeline.plan import Phase, Plan
from expwatch.results.config import ValidationSettings
from expwatch.results.drift import ConfigError, compare_fields, load_config_file, render_value
from expwatch.results.noise import GAIN, NOISE, NoiseError, judge_candidate, task_mismatch
from expwatch.results.progress import read_result
from expwatch.results.validation import validate_result
from expwatch.settings import deep_merge


@dataclass(frozen=True)
class Decision:
    gate: str  # plan | drift | validate | verdict
    ok: bool
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)


def plan_validity(plan: Plan) -> Decision:
    missing = [str(path) for path in plan.named_files() if not path.is_file()]
    commits = commits_since(plan.path)
    numbers = {"missing": missing, "commits_since_plan": commits}
    if missing:
        return Decision("plan", False, f"files the plan names are gone: {', '.join(missing)}", numbers)
    note = f"; {len(commits)} commit(s) since the plan file changed" if commits else ""
    return Decision("plan", True, f"the plan's files exist{note}", numbers)


def commits_since(plan_path: Path) -> list[str]:
    """``git log --oneline`` of the commits newer than the plan file, when it lies in a git work tree."""
    cwd = plan_path.parent
    try:
        inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=cwd, capture_output=True,
                                text=True, timeout=10)
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return []
        since = int(plan_path.stat().st_mtime)
        log = subprocess.run(["git", "log", "--oneline", f"--since=@{since}"], cwd=cwd, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in log.stdout.splitlines() if line.strip()] if log.returncode == 0 else []


def phase_config(plan: Plan, phase: Phase) -> dict[str, Any]:
    """The baseline config with the phase's ``set`` overrides on top (raises ConfigError)."""
    return reduce(deep_merge, [o.as_layer() for o in phase.overrides], load_config_file(plan.baseline.config))


def drift_gate(plan: Plan, phase: Phase, settings: ValidationSettings) -> Decision:
    try:
        baseline, current = load_config_file(plan.baseline.config), phase_config(plan, phase)
    except ConfigError as exc:
        return Decision("drift", False, str(exc))
    drifts = compare_fields(baseline, current, settings.drift_fields)
    undeclared = [d for d in drifts if d.field not in phase.changes]
    numbers = {
        "drifted": {d.field: [render_value(d.old), render_value(d.new)] for d in drifts},
        "declared": sorted(phase.changes),
        "undeclared": [d.field for d in undeclared],
    }
    if undeclared:
        shown = "; ".join(str(d) for d in undeclared)
        return Decision("drift", False, f"cache-key drift the phase does not declare in `changes`: {shown}", numbers)
    shown = "; ".join(str(d) for d in drifts) or "none"
    return Decision("drift", True, f"cache-key changes: {shown}", numbers)


def result_drift_gate(plan: Plan, phase: Phase, settings: ValidationSettings) -> Decision:
    """The config each run recorded in its result, compared like ``drift_gate``.

    The plan's ``set`` is what the phase meant to run; the result's
    ``config`` is what the script says it ran (a flag in ``command`` can
    change the model without any ``set``). Results without a config pass.
    """
    try:
        baseline, current = read_result(plan.baseline.result).config, read_result(phase.result).config
    except (OSError, ValueError) as exc:
        return Decision("result-drift", False, f"result cannot be read: {exc}")
    if not baseline or not current:
        return Decision("result-drift", True, "no config recorded in the results; nothing to compare")
    drifts = compare_fields(baseline, current, settings.drift_fields)
    undeclared = [d for d in drifts if d.field not in phase.changes]
    numbers = {"drifted": {d.field: [render_value(d.old), render_value(d.new)] for d in drifts},
               "undeclared": [d.field for d in undeclared]}
    if undeclared:
        shown = "; ".join(str(d) for d in undeclared)
        return Decision("result-drift", False, f"the run recorded an undeclared cache-key change: {shown}", numbers)
    return Decision("result-drift", True, f"recorded config: {len(drifts)} declared change(s)", numbers)


def validate_gate(phase: Phase, settings: ValidationSettings) -> Decision:
    try:
        report = validate_result(phase.result, log_path=phase.log, expected=phase.expected, settings=settings)
    except (OSError, ValueError, NotReadyYet) as exc:  # NotReadyYet: a torn result, or a file that is not one (Unreadable)
        return Decision("validate", False, f"result cannot be validated: {exc}")
    numbers = {"items": report.items, "raw_acc": report.raw_acc, "valid_acc": report.valid_acc,
               "null_rate": report.null_rate, "issues": list(report.issues)}
    if report.issues:
        return Decision("validate", False, f"{len(report.issues)} validation issue(s): {'; '.join(report.issues)}", numbers)
    return Decision("validate", True, "no validation issues", numbers)


def verdict_gate(plan: Plan, phase: Phase, settings: ValidationSettings) -> Decision:
    try:
        verdict = judge_candidate(plan.baseline.result, phase.result, plan.baseline.criteria)
    except (OSError, ValueError, NoiseError) as exc:
        return Decision("verdict", False, f"no verdict: {exc}")
    numbers = {"verdict": verdict.verdict, "delta": verdict.delta, "noise_floor": verdict.noise_floor,
               "baseline_macro_acc": verdict.baseline.points, "candidate_macro_acc": verdict.candidate.points}
    mismatch = task_mismatch(verdict.baseline, verdict.candidate)
    if mismatch:
        # `expwatch verdict` only warns; unattended, a macro over other task types must not decide.
        return Decision("verdict", False, f"not comparable with the baseline: {mismatch}", numbers)
    goes_on = verdict.verdict == GAIN or (verdict.verdict == NOISE and settings.pipeline.noise_goes_on)
    text = (f"{verdict.verdict}: macro accuracy {verdict.candidate.points:.2f} vs baseline {verdict.baseline.points:.2f}"
            f" ({verdict.delta:+.2f} points, noise floor {verdict.noise_floor:.2f})")
    return Decision("verdict", goes_on, text, numbers)
