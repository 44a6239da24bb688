"""One audit record per distinct problem of a run's files, not one per poll.

The watcher re-reads every file on each safety poll; a result file that is a
FIFO stays a FIFO, and a record per poll would bury the audit trail. A
problem is recorded when it appears or changes, and forgotten when the file
reads cleanly again, so it is recorded anew if it comes back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


class RunProblems:
    def __init__(self, record: Callable[..., Any], console: Callable[[str], None]):
        self._record, self._console = record, console
        self._known: dict[tuple[str, str], tuple[str, str]] = {}  # (run, file) -> (event, reason)

    def report(self, event: str, run: str, path: Path | str | None, reason: str) -> None:
        """``path`` None: a problem of the run that no file names (a rule engine refusal)."""
        key = (run, str(path) if path is not None else event)
        if self._known.get(key) == (event, reason):
            return
        self._known[key] = (event, reason)
        self._record(event, run=run, file=str(path) if path is not None else None, error=reason)
        self._console(f"{run}: {event}: {reason}")

    def clear(self, run: str, *paths: Path | str | None) -> None:
        for path in paths:
            if path is not None:
                self._known.pop((run, str(path)), None)

    def of(self, *events: str) -> list[tuple[str, str]]:
        """(run, reason) of the current problems recorded as one of ``events``; safe from a display thread."""
        return [(run, reason) for (run, _), (event, reason) in list(self._known.items()) if event in events]
