"""Noise floors and verdicts: is a difference in accuracy bigger than chance?

Two identical baseline runs already differ (sampling, API non-determinism),
so ``derive_criteria`` measures that difference once and writes the floor to
a criteria file; ``judge_candidate`` only ever reads the floor back, so every
later verdict is held to the same, recorded bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from expwatch.files import atomic_write_text
from expwatch.results.progress import read_result
from expwatch.results.validation import per_task_accuracy
from expwatch.results.config import NoiseRule

# Deltas are differences of sums of float fractions; rounding keeps a delta
# that is exactly the floor on paper from landing a hair outside it.
PRECISION = 6

NOISE, GAIN, REGRESSION = "noise", "gain", "regression"


class NoiseError(ValueError):
    """An input that cannot be scored or a criteria file that cannot be used (names file and field)."""


@dataclass(frozen=True)
class MacroAccuracy:
    """Mean of per-task-type accuracies, in points, so small task types weigh as much as large ones."""

    path: Path
    points: float
    tasks: frozenset[str]


@dataclass(frozen=True)
class NoiseCriteria:
    baseline: MacroAccuracy
    rerun: MacroAccuracy
    observed_delta: float
    noise_floor: float
    derivation: str
    rule: NoiseRule

    def to_yaml(self) -> str:
        data: dict[str, Any] = {
            "baseline": str(self.baseline.path.resolve()),
            "rerun": str(self.rerun.path.resolve()),
            "baseline_macro_acc": self.baseline.points,
            "rerun_macro_acc": self.rerun.points,
            "observed_delta": self.observed_delta,
            "noise_floor": self.noise_floor,
            "derivation": self.derivation,
            "rule": {"min_points": self.rule.min_points, "factor": self.rule.factor},
            "task_types": sorted(self.baseline.tasks | self.rerun.tasks),
        }
        header = "# Noise floor for `expwatch verdict` (accuracy points, macro over task types).\n"
        return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@dataclass(frozen=True)
class Verdict:
    baseline: MacroAccuracy
    candidate: MacroAccuracy
    delta: float
    noise_floor: float
    verdict: str


def macro_accuracy(path: Path) -> MacroAccuracy:
    """Raises FileNotFoundError / NotReadyYet when unreadable, NoiseError when there is nothing to score."""
    per_task = per_task_accuracy(read_result(path).items)
    if not per_task:
        raise NoiseError(f"{path}: no per-item records to score")
    # The seed's per-task figures: accuracy over valid items.
    points = 100 * sum(t.acc_valid for t in per_task.values()) / len(per_task)
    return MacroAccuracy(path=Path(path), points=round(points, PRECISION), tasks=frozenset(per_task))


def derive_criteria(baseline_path: Path, rerun_path: Path, rule: NoiseRule) -> NoiseCriteria:
    baseline, rerun = macro_accuracy(baseline_path), macro_accuracy(rerun_path)
    delta = round(rerun.points - baseline.points, PRECISION)
    return NoiseCriteria(
        baseline=baseline,
        rerun=rerun,
        observed_delta=delta,
        noise_floor=round(rule.floor(delta), PRECISION),
        derivation=rule.explain(delta),
        rule=rule,
    )


def write_criteria(path: Path, criteria: NoiseCriteria) -> None:
    atomic_write_text(Path(path), criteria.to_yaml())


def read_noise_floor(path: Path) -> float:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NoiseError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: PyYAML's chr() of an escape past U+10FFFF
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise NoiseError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    floor = data.get("noise_floor") if isinstance(data, dict) else None
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or floor < 0:
        raise NoiseError(f"{path}: noise_floor: must be a non-negative number, got {floor!r}")
    return float(floor)


def judge(delta: float, noise_floor: float) -> str:
    if abs(delta) <= noise_floor:
        return NOISE
    return GAIN if delta > 0 else REGRESSION


def judge_candidate(baseline_path: Path, candidate_path: Path, criteria_path: Path) -> Verdict:
    floor = read_noise_floor(criteria_path)
    baseline, candidate = macro_accuracy(baseline_path), macro_accuracy(candidate_path)
    delta = round(candidate.points - baseline.points, PRECISION)
    return Verdict(baseline=baseline, candidate=candidate, delta=delta, noise_floor=floor, verdict=judge(delta, floor))


def task_mismatch(a: MacroAccuracy, b: MacroAccuracy) -> str | None:
    """Macro accuracies over different task types are not comparable; say which differ."""
    if a.tasks == b.tasks:
        return None
    only_a, only_b = sorted(a.tasks - b.tasks), sorted(b.tasks - a.tasks)
    return f"task types differ: only in {a.path}: {only_a or '-'}; only in {b.path}: {only_b or '-'}"
