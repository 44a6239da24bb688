"""Finished runs let go of their descriptors and memory, and come back when their files change.

An experiments folder keeps every run it ever had: a lab's holds thousands
of COMPLETE, STOPPED and HALTED runs beside a few live ones. Watched like
live runs, each held its log open (the watcher died with EMFILE at about a
thousand under ``ulimit -n 1024``), its facts and durable-rules session in
memory, and cost a read of every file at every safety poll (issue 16).

A finished run with no incident in hand, finished for at least
``watch.release_finished_s`` (counted from the time its manifest records,
so a run that completed before the watcher started is released at once),
is *released*: its read position is saved as on shutdown, its tailer,
exit watch and rules session are dropped, and only what brings it back is
kept here: the paths of its files, its manifest's stat signature, and its
last row for the live display. A change to one of its files (an inotify
event, or a new manifest signature at a safety poll, as ``expwatch resume``
writes) revives it: it is added back with the manifest it slept with,
resuming from the saved position, and then sees the new manifest as any
watched run would (so a resumed halted run has its guard reset).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from expwatch.layout import ExperimentsLayout
from expwatch.manifest import RunManifest


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def finished_at(manifest: RunManifest, default: float) -> float:
    """When the manifest says the run finished (completed, stopped or halted); ``default`` if it cannot tell."""
    stamp = manifest.completed_at or manifest.stopped_at or (manifest.halted.at if manifest.halted else None)
    if not stamp:
        return default
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


@dataclass(frozen=True)
class DormantRun:
    manifest: RunManifest  # as it was when released: a revival starts from it, then sees what changed
    files: frozenset[str]  # log, result, checkpoint: a change to any of them revives the run
    manifest_signature: tuple[int, int, int] | None
    view: Any  # the run's last RunView, shown by displays while it sleeps


class Dormancy:
    """The released runs of one watcher; owned by the engine thread like the rest of its state."""

    def __init__(self, layout: ExperimentsLayout, release_after_s: float):
        self.layout = layout
        self.release_after_s = release_after_s
        self._dormant: dict[str, DormantRun] = {}
        self._by_file: dict[str, str] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._dormant

    def __len__(self) -> int:
        return len(self._dormant)

    def due(self, manifest: RunManifest, idle: bool, now: float) -> bool:
        """Whether a run may be released now: finished, nothing in hand, finished long enough ago."""
        finished = bool(manifest.halted or manifest.stopped_at or manifest.completed_at)
        return finished and idle and now - finished_at(manifest, now) >= self.release_after_s

    def release(self, manifest: RunManifest, view: Any) -> None:
        files = frozenset(p for p in (manifest.log, manifest.result, manifest.checkpoint) if p)
        self._dormant[manifest.name] = DormantRun(manifest, files, _signature(self.layout.manifest_path(manifest.name)), view)
        for path in files:
            self._by_file[path] = manifest.name

    def wake(self, name: str) -> None:
        """Forget a released run (it is being watched again, or it is gone)."""
        run = self._dormant.pop(name, None)
        if run is not None:
            for path in run.files:
                if self._by_file.get(path) == name:
                    del self._by_file[path]

    def manifest(self, name: str) -> RunManifest:
        return self._dormant[name].manifest

    def owner(self, path: str) -> str | None:
        """The released run one of whose files is ``path``."""
        return self._by_file.get(path)

    def views(self) -> list[Any]:
        return [run.view for run in self._dormant.values()]

    def unchanged(self, name: str, info: os.stat_result) -> bool:
        """A released run whose manifest's stat (``info``) is as it slept: its JSON need not be parsed again.

        In a lab's folder that spares thousands of parses per safety poll.
        """
        asleep = self._dormant.get(name)
        return asleep is not None and (info.st_ino, info.st_size, info.st_mtime_ns) == asleep.manifest_signature

    def forget_missing(self, names: set[str]) -> None:
        """Released runs whose manifest is gone from disk are forgotten.

        ``names``: those a survey listed. One taken in steps listed the folder
        when it began, so a run not listed is looked for before it is forgotten.
        """
        for gone in set(self._dormant) - names:
            if not self.layout.manifest_path(gone).exists():
                self.wake(gone)
