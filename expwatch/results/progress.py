"""Reading evaluation result and checkpoint files, whatever state they are in.

Evaluation scripts are not ours: their files come in several shapes, any
field may be missing, be named otherwise (see ``fields.FieldMap``) or be of an
unexpected type, and the files are read while the script rewrites them. So
parsing is tolerant field by field (a missing field becomes ``None``), while a
file that cannot be parsed at all is reported as ``NotReadyYet`` for the
caller to retry, never as a crash.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from expwatch.files import NotReadyYet, read_json, read_json_lines
from expwatch.results.config import ValidationSettings, shipped_validation_settings
from expwatch.results.fields import FieldMap, FieldMapError, Normalisation, lookup, read_sidecar, sidecar_path


@dataclass(frozen=True)
class ItemRecord:
    """One evaluated item, as the script reported it, read through a ``FieldMap``.

    ``response`` is what the model said (None: a null) and ``gold`` the
    expected answer; ``correct`` is the script's own flag, or response vs
    gold when the script writes none.
    """

    id: str | None
    response: Any
    gold: Any
    correct: bool | None
    task_type: str | None
    null_reason: str | None
    max_time: float | None
    realtime: float | None
    raw: dict = field(compare=False, repr=False)

    @classmethod
    def from_json(cls, data: dict, fmap: FieldMap, normalise: Normalisation, fallback_id: Any = None) -> ItemRecord:
        response, gold = lookup(data, fmap.response), lookup(data, fmap.gold)
        flag = lookup(data, fmap.correct)
        correct = _flag(flag)
        if flag is None and gold is not None:
            correct = response is not None and normalise.same(response, gold)
        item_id = lookup(data, fmap.id)
        return cls(
            id=_text(fallback_id if item_id is None else item_id),
            response=response,
            gold=gold,
            correct=correct,
            task_type=_text(lookup(data, fmap.task_type)),
            null_reason=_text(lookup(data, fmap.null_reason)),
            max_time=_number(lookup(data, fmap.max_time)),
            realtime=_number(lookup(data, fmap.realtime)),
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


def field_map_for(result_path: Path | None, overrides: dict[str, str | None] | None = None,
                  settings: ValidationSettings | None = None) -> FieldMap:
    """Shipped map, then the run's ``STEM.fields.yaml``, then ``overrides`` (``--field``)."""
    settings = settings or shipped_validation_settings()
    fmap = settings.field_map
    if result_path is not None:
        sidecar = sidecar_path(result_path)
        if named := read_sidecar(sidecar):  # nearly every run has none
            fmap = fmap.with_overrides(named, str(sidecar))
    return fmap.with_overrides(overrides or {}, "--field")


def read_result(path: Path, fmap: FieldMap | None = None, settings: ValidationSettings | None = None) -> ResultSnapshot:
    """Parse a result or checkpoint file of any supported shape.

    Shapes: JSON Lines (``readers.jsonl_suffixes``, one item per line), a
    top-level list of items, or an object with the items under the first of
    ``readers.item_keys`` that holds a list (``per_item`` may also map ids to items) and optionally
    ``config`` and ``completed_ids``. Raises FileNotFoundError when absent
    and NotReadyYet when it cannot be parsed (yet), including a top level that
    holds no items: a script that is mid-write can leave that behind.
    """
    settings = settings or shipped_validation_settings()
    fmap = fmap or field_map_for(path, settings=settings)
    data = read_json_lines(path) if path.suffix in settings.jsonl_suffixes else read_json(path)
    config: Any = {}
    completed: Any = None
    if isinstance(data, list):
        records = data
        if records and not any(isinstance(record, dict) for record in records):
            raise NotReadyYet(path, "top level is a list without item objects")
    elif isinstance(data, dict):
        config, completed = data.get("config"), data.get("completed_ids")
        records = _item_list(data, settings.item_keys)
    else:
        raise NotReadyYet(path, f"top level is {type(data).__name__}, not an object or a list")
    return ResultSnapshot(
        items=tuple(_items(records, fmap, settings.normalise)),
        config=config if isinstance(config, dict) else {},
        completed_ids=frozenset(_ids(completed)),
    )


def read_progress(result: Path | None, checkpoint: Path | None) -> ResultSnapshot | None:
    """The best picture of a run's progress from whichever files exist.

    The result file is authoritative for the items it holds; the checkpoint
    adds the items and completed ids the result does not have yet (scripts
    often write the checkpoint often and the result only at the end). Both
    are read with the result's field map, the one ``validate`` uses.
    Returns None when neither file exists; NotReadyYet propagates so the
    caller retries instead of reporting a progress drop.
    """
    named = result if result is not None else checkpoint
    try:
        fmap = field_map_for(named)
    except FieldMapError as exc:
        # The watcher and status retry NotReadyYet and show its reason; a bad map must not stop them.
        raise NotReadyYet(Path(named or "."), str(exc)) from exc
    snapshots = [snap for snap in (_read_if_present(result, fmap), _read_if_present(checkpoint, fmap)) if snap]
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


def _read_if_present(path: Path | None, fmap: FieldMap) -> ResultSnapshot | None:
    if path is None:
        return None
    try:
        return read_result(path, fmap)
    except FileNotFoundError:
        return None


def _item_list(data: dict, item_keys: tuple[str, ...]) -> Any:
    for key in item_keys:
        value = data.get(key)
        # Only the seed's per_item may map ids to items: lm-eval's aggregate
        # ``results`` maps task names to metrics, which are not items.
        if isinstance(value, list) or (key == "per_item" and isinstance(value, dict)):
            return value
    return None


def _items(records: Any, fmap: FieldMap, normalise: Normalisation) -> Iterable[ItemRecord]:
    if isinstance(records, dict):
        for key, data in records.items():
            if isinstance(data, dict):
                yield ItemRecord.from_json(data, fmap, normalise, fallback_id=key)
    elif isinstance(records, list):
        for data in records:
            if isinstance(data, dict):
                yield ItemRecord.from_json(data, fmap, normalise)


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
