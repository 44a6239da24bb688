"""A run's progress in four figures, remembered across ``status`` calls by each file's signature.

``status`` shows done, accuracy and nulls for every run, and a lab keeps
thousands of finished runs whose result files never change again: 500 items
take about 5 ms to read, so 11,000 such runs were a minute per ``status``.
``ProgressCache`` keeps each run's figures beside the (inode, size, mtime,
ctime) of its result, checkpoint and field file, the test ``ManifestCache``
uses, in ``.expwatch/progress-cache.json``; a run whose files all match is
not read again. A starting watcher, which reads every long-finished run,
leaves its figures here too. Two writers may race; the file is replaced
whole, so the loser's entries are only read again next time. The cache
only ever saves reading: a missing, torn, foreign or unknown-version file
is ignored and rewritten, and one that cannot be written is not written.

Two rules keep it from ever showing old figures. Each file is stat'ed
before it is read, so figures are filed under a signature no newer than
their content (a change in between only makes the entry miss next time).
And figures of a file changed in the last ``watch.status_cache_after_s``
are not kept: file times tick coarsely (a jiffy on Linux, a second on some
network filesystems), and a same-size rewrite within one tick would keep
its signature (git's "racily clean" entries).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expwatch.files import NotReadyYet, atomic_write_text, read_json
from expwatch.layout import ExperimentsLayout
from expwatch.results import fields, progress
from expwatch.results.config import shipped_validation_settings
from expwatch.results.fields import sidecar_text
from expwatch.results.progress import ResultSnapshot, read_progress
from expwatch.trust import check_trusted, file_mode


@dataclass(frozen=True)
class ProgressFigures:
    """What ``status`` shows of a run's results: distinct items done, correct ones, nulls by reason."""

    done: int
    correct: int
    null_count: int
    null_reasons: dict[str, int]

    @classmethod
    def of(cls, snapshot: ResultSnapshot) -> "ProgressFigures":
        return cls(snapshot.done, snapshot.correct, snapshot.null_count, snapshot.null_reasons)

    def to_json(self) -> list[Any]:
        return [self.done, self.correct, self.null_count, self.null_reasons]

    @classmethod
    def from_json(cls, data: Any) -> "ProgressFigures | None":
        """None unless ``data`` is exactly what ``to_json`` writes."""
        if not (isinstance(data, list) and len(data) == 4 and all(_count(n) for n in data[:3]) and isinstance(data[3], dict)):
            return None
        if not all(isinstance(k, str) and _count(v) for k, v in data[3].items()):
            return None
        return cls(data[0], data[1], data[2], data[3])


def read_figures(result: str | None, checkpoint: str | None) -> ProgressFigures | None:
    """The figures of a run's files as they are now (``read_progress``; raises as it does), None when neither exists."""
    snapshot = read_progress(Path(result) if result else None, Path(checkpoint) if checkpoint else None)
    return ProgressFigures.of(snapshot) if snapshot is not None else None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def figures_digest() -> str:
    """What the figures of unchanged files depend on besides the files: the readers' code and the shipped field map."""
    settings = shipped_validation_settings()
    h = hashlib.sha256(repr((settings.field_map, settings.normalise, settings.item_keys, settings.jsonl_suffixes)).encode())
    for module in (progress, fields):
        with open(module.__file__, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:16]


def file_signature(path: str | None, racy_after_ns: int) -> tuple[str | None, bool]:
    """(signature or None when absent, whether it changed too recently to be trusted).

    Text, not four integers: the cache's integers pass through the JSON reader's digit bound, one Python call each.
    """
    if path is None:
        return None, False
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None, False
    except OSError:  # a symlink loop, no permission: never kept, and the read that follows says why
        return None, True
    return f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}", max(info.st_mtime_ns, info.st_ctime_ns) > racy_after_ns


def figures_signatures(result: str | None, checkpoint: str | None, racy_after_ns: int) -> list[tuple[str | None, bool]]:
    """``file_signature`` of each file a run's figures come from: its result, its checkpoint and the result's field file."""
    named = result if result is not None else checkpoint
    return [file_signature(p, racy_after_ns) for p in (result, checkpoint, sidecar_text(named) if named else None)]


class ProgressCache:
    """The figures of one call over many runs: loaded from the layout's cache file, saved back after.

    Keyed by run name; saved with the runs asked about and those others that still have a manifest.
    """

    def __init__(self, layout: ExperimentsLayout, settled_after_s: float):
        """``settled_after_s``: how long a file must be unchanged before its figures are kept."""
        self._layout, self._settled_ns = layout, int(settled_after_s * 1e9)
        self._path, self._home = layout.home / "progress-cache.json", layout.home
        self._digest = figures_digest()
        self._known = self._load()
        self._used: dict[str, list[Any]] = {}
        self._changed = False

    def _load(self) -> dict[str, Any]:
        try:
            data = read_json(self._path, lambda p, info: check_trusted(p, info, self._home))
        except (OSError, NotReadyYet):
            return {}
        if not isinstance(data, dict) or data.get("digest") != self._digest or not isinstance(data.get("runs"), dict):
            return {}
        return data["runs"]

    def figures(self, run: str, result: str | None, checkpoint: str | None) -> ProgressFigures | None:
        """``read_progress``'s figures for run ``run``'s files, read only if one changed; raises as it does."""
        signatures = figures_signatures(result, checkpoint, time.time_ns() - self._settled_ns)
        entry: list[Any] = [result, checkpoint, [sig for sig, _ in signatures]]
        known = self._known.get(run)
        if isinstance(known, list) and len(known) == 4 and known[:3] == entry:
            figures = ProgressFigures.from_json(known[3])
            if figures is not None:
                self._used[run] = known
                return figures
        figures = read_figures(result, checkpoint)
        if figures is not None and not any(racy for _, racy in signatures):
            self._used[run] = [*entry, figures.to_json()]
        if self._used.get(run) is not known:
            self._changed = True
        return figures

    def remember(self, run: str, result: str | None, checkpoint: str | None, signatures: list[str | None],
                 figures: ProgressFigures | None) -> None:
        """Keep figures another reader took: ``signatures`` (result, checkpoint, field file) stat'ed before its read, none too recent.

        A starting watcher reads every long-finished run's result (engine/asleep.py); kept here, the first ``status`` after it reads none.
        """
        if figures is None:
            return
        entry = [result, checkpoint, signatures, figures.to_json()]
        if self._known.get(run) != entry:
            self._changed = True
        self._used[run] = entry

    def save(self) -> None:
        """Write the cache back if anything changed; silently not, if it cannot be written."""
        others = {name: entry for name, entry in self._known.items()
                  if name not in self._used and os.path.exists(self._layout.manifest_path(name))}
        if not (self._changed or len(others) + len(self._used) != len(self._known)) or not self._home.is_dir():
            return
        text = json.dumps({"digest": self._digest, "runs": {**others, **self._used}}, separators=(",", ":"))
        try:
            atomic_write_text(self._path, text + "\n", file_mode(self._home))
        except OSError:
            pass  # a read-only or foreign .expwatch/: the next call reads the files again
