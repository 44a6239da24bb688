"""The engine's one queue, where a file already waiting to be read is not queued again.

A log written 20 times before the engine thread gets to its first event
needs one read, not 20: the read that event triggers returns every line
written until then. So a FileChanged for a path with a FileChanged still in
the queue is dropped, and the path is free again the moment its event is
taken out (before the read starts, so a write during the read queues a new
event and no line waits for the safety poll). Other events are never merged.
Both checks run under the queue's own mutex (``_put``/``_get`` are called
holding it), so the sources' threads need no lock of their own.
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

from expwatch.watcher.events import FileChanged


class EventQueue(queue.Queue):
    def __init__(self) -> None:
        super().__init__()
        self._waiting: set[Path] = set()
        self.merged = 0  # FileChanged events dropped because the same path was already waiting

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        # Checked before Queue.put, which would wake the engine thread for nothing.
        if isinstance(item, FileChanged):
            with self.mutex:
                if item.path in self._waiting:
                    self.merged += 1
                    return
        super().put(item, block, timeout)

    def put_all(self, items: list[Any]) -> None:
        """Queue a batch under one lock and with one wake-up of the engine thread (this queue is unbounded)."""
        with self.not_full:
            before = self._qsize()
            for item in items:
                self._put(item)
            added = self._qsize() - before
            if added:
                self.unfinished_tasks += added
                self.not_empty.notify()

    def _put(self, item: Any) -> None:
        if isinstance(item, FileChanged):
            if item.path in self._waiting:
                self.merged += 1
                return
            self._waiting.add(item.path)
        self.queue.append(item)

    def _get(self) -> Any:
        item = self.queue.popleft()
        if isinstance(item, FileChanged):
            self._waiting.discard(item.path)
        return item
