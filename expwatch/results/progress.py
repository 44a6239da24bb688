"""Reading evaluation result and checkpoint files, whatever state they are in.

Evaluation scripts are not ours: any field of their output may be missing or
of an unexpected type, and the files are read while the script rewrites
them. So parsing is tolerant field by field (a missing field becomes
``None``), while a file that cannot be parsed at all is reported as
``NotReadyYet`` for the caller to retry, never as a crash.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from expwatch.files import NotReadyYet, read_json


@dataclass(frozen=True)
class ItemRecord:
    """One evaluated item, as the script reported it."""

    id: str | None
    response: Any
    answer: Any
    correct: bool | None
    task_type: str | None
    null_reason: str | None
    max_time: float | None
    realtime: float | None
    raw: dict = field(compare=False, repr=False)

    @classmethod
    def from_json(cls, data: dict, fallback_id: Any = None) -> ItemRecord:
        return cls(
            id=_text(data.get("id", fallback_id)),
            response=data.get("response"),
            answer=data.get("answer"),
            correct=_flag(data.get("correct")),
            task_type=_text(data.get("task_type")),
            null_reason=_text(data.get("null_reason")),
            max_time=_number(data.get("max_time")),
            realtime=_number(data.get("realtime")),
            raw=data,
        )


@dataclass(frozen=True)
class ResultSnapshot:
    """What a result (and/or checkpoint) file says at one moment."""

    items: tuple[ItemRecord, ...]
    config: dict
    completed_ids: frozenset[str]

    @property
    def done(self) -> int:
        """Distinct completed items.

        Items without an id cannot be told apart, so each counts on its own;
        a checkpoint may list more ``completed_ids`` than it keeps records for.
        """
        ids = {item.id for item in self.items if item.id is not None}
        anonymous = sum(1 for item in self.items if item.id is None)
        return max(len(ids) + anonymous, len(self.completed_ids))

    @property
    def correct(self) -> int:
        return sum(1 for item in self.items if item.correct)

    @property
    def null_count(self) -> int:
        return sum(1 for item in self.items if item.response is None)

    @property
    def null_reasons(self) -> dict[str, int]:
        reasons = Counter(item.null_reason or "unknown" for item in self.items if item.response is None)
        return dict(reasons)


def checkpoint_path_for(result_path: Path) -> Path:
    """``out.json`` -> ``out_checkpoint.json`` (the eval scripts' convention)."""
    result_path = Path(result_path)
    return result_path.with_name(f"{result_path.stem}_checkpoint{result_path.suffix or '.json'}")


def read_result(path: Path) -> ResultSnapshot:
    """Parse a result or checkpoint file.

    Raises FileNotFoundError when absent and NotReadyYet when it cannot be
    parsed, including valid JSON that is not an object: a script that is
    mid-write can leave e.g. a bare list behind.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise NotReadyYet(path, f"top level is {type(data).__name__}, not an object")
    config = data.get("config")
    return ResultSnapshot(
        items=tuple(_items(data.get("per_item"))),
        config=config if isinstance(config, dict) else {},
        completed_ids=frozenset(_ids(data.get("completed_ids"))),
    )


def read_progress(result: Path | None, checkpoint: Path | None) -> ResultSnapshot | None:
    """The best picture of a run's progress from whichever files exist.

    The result file is authoritative for the items it holds; the checkpoint
    adds the items and completed ids the result does not have yet (scripts
    often write the checkpoint often and the result only at the end).
    Returns None when neither file exists; NotReadyYet propagates so the
    caller retries instead of reporting a progress drop.
    """
    snapshots = [snap for snap in (_read_if_present(result), _read_if_present(checkpoint)) if snap]
    if not snapshots:
        return None
    if len(snapshots) == 1:
        return snapshots[0]
    primary, secondary = snapshots
    known = {item.id for item in primary.items}
    extra = tuple(
        item
        for item in secondary.items
        # Id-less checkpoint records cannot be matched against the result's.
        if (item.id is not None and item.id not in known) or (item.id is None and not primary.items)
    )
    return ResultSnapshot(
        items=primary.items + extra,
        config=primary.config or secondary.config,
        completed_ids=primary.completed_ids | secondary.completed_ids,
    )


def _read_if_present(path: Path | None) -> ResultSnapshot | None:
    if path is None:
        return None
    try:
        return read_result(path)
    except FileNotFoundError:
        return None


def _items(per_item: Any) -> Iterable[ItemRecord]:
    # Some scripts key per_item by item id instead of listing it.
    if isinstance(per_item, dict):
        for key, data in per_item.items():
            if isinstance(data, dict):
                yield ItemRecord.from_json(data, fallback_id=key)
    elif isinstance(per_item, list):
        for data in per_item:
            if isinstance(data, dict):
                yield ItemRecord.from_json(data)


def _ids(values: Any) -> Iterable[str]:
    if isinstance(values, (list, tuple, dict)):
        for value in values:
            text = _text(value)
            if text is not None:
                yield text


def _text(value: Any) -> str | None:
    # Ids are sometimes integers; one spelling keeps them comparable.
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
