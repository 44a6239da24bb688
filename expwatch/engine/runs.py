"""The run table: what the engine loop knows of each watched run.

Only the engine thread touches these objects; displays get ``RunView``
snapshots (``engine/snapshot.py``) and actions read manifests from disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from expwatch.manifest import RunManifest
from expwatch.rules.decide import RunDecisions
from expwatch.rules.facts import RunFacts
from expwatch.watcher.crash import CrashAssembler
from expwatch.watcher.tail import LogTailer


@dataclass
class WatchedRun:
    manifest: RunManifest
    tailer: LogTailer
    facts: RunFacts
    decisions: RunDecisions = field(default_factory=RunDecisions)
    latched_for: tuple[int | None, float | None] | None = None  # (pid, create_time) the latches were judged against
    silence_at: float | None = None
    last_incident: str | None = None  # "RULE: outcome", for displays
    last_incident_id: str | None = None
    last_cause: str | None = None  # the crash behind the last incident, in one line, for displays
    progress_noted: tuple[int, int] | None = None  # (done, restarts) of the last `progress` record
    progress_noted_at: float = 0.0
    crashes: CrashAssembler = field(default_factory=CrashAssembler)  # the log's tracebacks, assembled line by line

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def reads_every_line(self) -> bool:
        """A crash is being assembled or an incident collects evidence: no live line may be skipped."""
        return self.crashes.reading or self.decisions.collecting

    @property
    def finished(self) -> bool:
        m = self.manifest
        return bool(m.halted or m.stopped_at or m.completed_at)


class RunTable:
    """Runs by name, and by each file they own (log, result, checkpoint) for file events."""

    def __init__(self) -> None:
        self._runs: dict[str, WatchedRun] = {}
        self._by_path: dict[str, list[WatchedRun]] | None = None

    def __iter__(self):
        return iter(list(self._runs.values()))

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, name: str) -> bool:
        return name in self._runs

    def get(self, name: str) -> WatchedRun | None:
        return self._runs.get(name)

    def names(self) -> list[str]:
        return list(self._runs)

    def add(self, run: WatchedRun) -> None:
        self._runs[run.name] = run
        self._by_path = None

    def pop(self, name: str) -> WatchedRun:
        self._by_path = None
        return self._runs.pop(name)

    def files_changed(self) -> None:
        """A manifest changed: its paths may have too."""
        self._by_path = None

    def owning(self, path: str) -> list[WatchedRun]:
        if self._by_path is None:
            index: dict[str, list[WatchedRun]] = {}
            for run in self._runs.values():
                for owned in {run.manifest.log, run.manifest.result, run.manifest.checkpoint} - {None}:
                    index.setdefault(owned, []).append(run)
            self._by_path = index
        return self._by_path.get(path, [])
