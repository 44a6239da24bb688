"""The engine's one queue, where a file already waiting to be read is not queued again.

A log written 20 times before the engine thread gets to its first event
needs one read, not 20: the read that event triggers returns every line
written until then. So a FileChanged for a path with a FileChanged still in
the queue is dropped, and the path is free again the moment its event is
taken out (before the read starts, so a write during the read queues a new
event and no line waits for the safety poll). Other events are never merged.
Both checks run under the queue's own mutex (``_put``/``_get`` are called
holding it), so the sources' threads need no lock of their own.

The engine loop waits on more than this queue (inotify's descriptor,
watcher/inotify.py), so it does not block in ``get``: it waits in
``poll`` on ``wake_fd`` beside the others (engine/inbox.py), an eventfd
every ``put`` signals, and then takes what is queued with ``get_nowait``.
"""

from __future__ import annotations

import os
import queue
from pathlib import Path
from typing import Any

from expwatch.watcher.events import FileChanged


class EventQueue(queue.Queue):
    def __init__(self) -> None:
        super().__init__()
        self._waiting: set[Path] = set()
        self.merged = 0  # FileChanged events dropped because the same path was already waiting
        self.wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    def woken(self) -> None:
        """Reset ``wake_fd`` before taking what is queued (a put after this signals it again)."""
        try:
            os.eventfd_read(self.wake_fd)
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Close ``wake_fd``; later puts (a source's thread outliving the loop) still queue, unsignalled."""
        with self.mutex:
            if self.wake_fd >= 0:
                os.close(self.wake_fd)
                self.wake_fd = -1

    def _put(self, item: Any) -> None:
        if isinstance(item, FileChanged):
            if item.path in self._waiting:
                self.merged += 1
                return
            self._waiting.add(item.path)
        self.queue.append(item)
        if self.wake_fd >= 0:
            os.eventfd_write(self.wake_fd, 1)

    def _get(self) -> Any:
        item = self.queue.popleft()
        if isinstance(item, FileChanged):
            self._waiting.discard(item.path)
        return item
