"""Checks on a finished evaluation result: is this number safe to report?

Each check is a pure function of the result's items (and the log's text), so
the watcher, the ``validate`` command and the tests share one implementation.
``validate_result`` runs them all and returns a ``ValidationReport`` whose
``issues`` say, in words, what would make the headline accuracy misleading.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from expwatch.results.fields import FieldMap
from expwatch.results.logcounts import count_log_lines
from expwatch.results.progress import ItemRecord, ResultSnapshot, field_map_for, read_result
from expwatch.results.config import ValidationSettings, load_validation_settings

UNKNOWN_TASK = "unknown"


@dataclass(frozen=True)
class TaskAccuracy:
    """One task type: the seed's figure over valid (non-null) items, and the raw one over all."""

    correct: int
    n_valid: int
    n: int

    @property
    def acc_valid(self) -> float:
        return self.correct / self.n_valid if self.n_valid else 0.0

    @property
    def acc_raw(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def to_json(self) -> dict[str, Any]:
        # `n`/`acc` keep their old place and mean the valid-item figures, as in the seed's report.
        return {"correct": self.correct, "n": self.n_valid, "acc": self.acc_valid, "n_valid": self.n_valid,
                "acc_valid": self.acc_valid, "n_raw": self.n, "acc_raw": self.acc_raw}


@dataclass(frozen=True)
class AnswerBias:
    """The single answer that dominates the valid responses."""

    answer: Any
    share: float
    count: int
    valid: int


@dataclass(frozen=True)
class ValidationReport:
    result_path: Path
    log_path: Path | None
    items: int
    done: int
    expected: int | None
    correct: int
    null_count: int
    null_rate: float
    null_reasons: dict[str, int]
    raw_acc: float
    valid_acc: float | None  # None when every response is null
    per_task: dict[str, TaskAccuracy]
    answer_bias: AnswerBias | None
    leaked_ids: tuple[str, ...]
    duplicate_ids: tuple[str, ...]
    log_counts: dict[str, int]
    issues: tuple[str, ...]
    field_map: FieldMap

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def acc_gap_points(self) -> float | None:
        """How much the nulls pull raw accuracy below valid accuracy."""
        return None if self.valid_acc is None else (self.valid_acc - self.raw_acc) * 100

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for ``--json`` and the report stored beside the result)."""
        return {
            "result": str(self.result_path),
            "log": str(self.log_path) if self.log_path else None,
            "ok": self.ok,
            "items": self.items,
            "done": self.done,
            "expected": self.expected,
            "correct": self.correct,
            "null_count": self.null_count,
            "null_rate": self.null_rate,
            "null_reasons": dict(self.null_reasons),
            "raw_acc": self.raw_acc,
            "valid_acc": self.valid_acc,
            "acc_gap_points": self.acc_gap_points,
            "per_task": {task: t.to_json() for task, t in self.per_task.items()},
            "answer_bias": asdict(self.answer_bias) if self.answer_bias else None,
            "leaked_ids": list(self.leaked_ids),
            "duplicate_ids": list(self.duplicate_ids),
            "log_counts": dict(self.log_counts),
            "issues": list(self.issues),
            "fields": self.field_map.to_json(),
        }


def validate_result(
    result_path: Path,
    log_path: Path | None = None,
    expected: int | None = None,
    settings: ValidationSettings | None = None,
    field_overrides: dict[str, str | None] | None = None,
) -> ValidationReport:
    """Read and check one result file (and its log), through the run's field map.

    Raises FileNotFoundError / NotReadyYet for the result, FieldMapError for a
    bad map and FileNotFoundError / Unreadable for the log: an unreadable
    input is the caller's to report, not an issue found.
    """
    settings = settings or load_validation_settings()
    fmap = field_map_for(Path(result_path), field_overrides, settings)
    snapshot = read_result(Path(result_path), fmap, settings)
    log_counts = count_log_lines(log_path, settings.log_patterns) if log_path else {}
    return check_snapshot(
        snapshot, Path(result_path), settings, log_path=log_path, log_counts=log_counts, expected=expected, fmap=fmap
    )


def check_snapshot(
    snapshot: ResultSnapshot,
    result_path: Path,
    settings: ValidationSettings,
    log_path: Path | None = None,
    log_counts: dict[str, int] | None = None,
    expected: int | None = None,
    fmap: FieldMap | None = None,
) -> ValidationReport:
    items = snapshot.items
    valid = [item for item in items if item.response is not None]
    report = ValidationReport(
        result_path=result_path,
        log_path=Path(log_path) if log_path else None,
        items=len(items),
        done=snapshot.done,
        expected=expected,
        correct=snapshot.correct,
        null_count=snapshot.null_count,
        null_rate=snapshot.null_count / len(items) if items else 0.0,
        null_reasons=snapshot.null_reasons,
        raw_acc=accuracy(items),
        valid_acc=accuracy(valid) if valid else None,
        per_task=per_task_accuracy(items),
        answer_bias=answer_bias(valid, settings.bias_max_share),
        leaked_ids=leaked_ids(items, settings.backward_task_types, settings.leak_tolerance),
        duplicate_ids=duplicate_ids(items),
        log_counts=log_counts or {},
        issues=(),
        field_map=fmap or settings.field_map,
    )
    return _with_issues(report, settings)


def accuracy(items: Iterable[ItemRecord]) -> float:
    items = list(items)
    return sum(1 for item in items if item.correct) / len(items) if items else 0.0


def per_task_accuracy(items: Iterable[ItemRecord]) -> dict[str, TaskAccuracy]:
    """Per task type; a null is never correct, so ``correct`` counts the same items for both views."""
    correct: dict[str, int] = defaultdict(int)
    valid: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for item in items:
        task = item.task_type or UNKNOWN_TASK
        total[task] += 1
        if item.response is not None:
            valid[task] += 1
            correct[task] += bool(item.correct)
    return {task: TaskAccuracy(correct=correct[task], n_valid=valid[task], n=total[task]) for task in sorted(total)}


def answer_bias(valid: list[ItemRecord], max_share: float) -> AnswerBias | None:
    """The most common response when it exceeds ``max_share`` of the valid responses.

    It counts what the model said (the map's ``response``), never the gold:
    in the seed's files ``answer`` is the gold label, and counting it hid a
    model that answered "A" 80% of the time.
    """
    if not valid:
        return None
    chosen = [item.response for item in valid]
    counts = Counter(_hashable(value) for value in chosen)
    key, count = counts.most_common(1)[0]
    share = count / len(valid)
    if share <= max_share:
        return None
    answer = next(value for value in chosen if _hashable(value) == key)
    return AnswerBias(answer=answer, share=share, count=count, valid=len(valid))


def leaked_ids(items: Iterable[ItemRecord], backward: frozenset[str], tolerance: float) -> tuple[str, ...]:
    """Backward items whose cut-off time is missing or not the item's real time.

    Backward tasks ask about the past at ``realtime``; without a ``max_time``
    equal to it, the model is shown video after the question and the score
    is inflated.
    """
    leaked = []
    for index, item in enumerate(items):
        if item.task_type not in backward:
            continue
        # Written as "not <=" so that a NaN max_time or realtime (json accepts NaN) counts as off, not as a match.
        off = item.max_time is None or not math.isfinite(item.max_time) or (
            item.realtime is not None and not abs(item.max_time - item.realtime) <= tolerance
        )
        if off:
            leaked.append(item_label(item, index))
    return tuple(leaked)


def duplicate_ids(items: Iterable[ItemRecord]) -> tuple[str, ...]:
    counts = Counter(item.id for item in items if item.id is not None)
    return tuple(sorted(item_id for item_id, n in counts.items() if n > 1))


def item_label(item: ItemRecord, index: int) -> str:
    return item.id if item.id is not None else f"#{index}"


def id_list(ids: Iterable[str], limit: int = 10) -> str:
    ids = list(ids)
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def _with_issues(report: ValidationReport, settings: ValidationSettings) -> ValidationReport:
    issues = []
    if not report.items:
        issues.append("no per-item records in the result")
    if report.null_rate > settings.null_warn_rate:
        valid = "n/a" if report.valid_acc is None else f"{report.valid_acc:.1%} ({report.acc_gap_points:+.1f} points)"
        issues.append(
            f"null rate {report.null_rate:.1%} ({report.null_count}/{report.items}) above"
            f" {settings.null_warn_rate:.0%}: raw accuracy {report.raw_acc:.1%}, valid accuracy {valid}"
        )
    if report.answer_bias:
        bias = report.answer_bias
        issues.append(
            f"answer bias: {bias.answer!r} is {bias.share:.1%} of {bias.valid} valid responses"
            f" (above {settings.bias_max_share:.0%})"
        )
    if report.leaked_ids:
        issues.append(
            f"data leak: {len(report.leaked_ids)} backward items without a max_time matching realtime:"
            f" {id_list(report.leaked_ids)}"
        )
    if report.duplicate_ids:
        issues.append(f"duplicate ids: {len(report.duplicate_ids)} ({id_list(report.duplicate_ids)})")
    if report.expected is not None and report.done != report.expected:
        if report.done < report.expected:
            missing = report.expected - report.done
            issues.append(f"incomplete: {report.done} of {report.expected} items ({missing} missing)")
        else:
            issues.append(f"more items than expected: {report.done} of {report.expected}")
    return replace(report, issues=tuple(issues))


def _hashable(value: Any) -> Any:
    # Answers may be lists or dicts (multi-select tasks); compare them by content.
    try:
        hash(value)
        return value
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)
