"""What the engine loop waits on: inotify's descriptor, the queue's wake-up, and the next timer.

Threaded sources put events on the ``EventQueue``, whose eventfd wakes the
loop; inotify's descriptor is read here on the loop's own thread, since a
reader thread handing each write over cost a wake-up and a queue round trip
as large as reading the file. One ``epoll`` waits for both, bounded by the
earliest timer, so an idle watcher sleeps. With ``watch.read_interval_s``
above 0, reads of the files are at least that far apart and writes arriving
meanwhile are read together; by default (0) files are read as soon as
inotify says, since the sleep's timer wake-up cost this machine more than
the per-write wake-ups it saved (BENCHMARKS.md, session 22).
"""

from __future__ import annotations

import queue
import select
import time
from typing import Any

from expwatch.engine.timers import Timers
from expwatch.watcher.coalesce import EventQueue
from expwatch.watcher.observer import DirectoryWatch


class Inbox:
    def __init__(self, files: DirectoryWatch, events: EventQueue, timers: Timers, read_interval_s: float = 0.0):
        self._files, self._events, self._timers = files, events, timers
        self._interval = read_interval_s
        self._read_at = 0.0  # when the last wait that found files began its read
        self._files_fd = files.fileno()
        # epoll: the two descriptors are registered once, not on every wait as poll(2) does.
        self._poll = select.epoll()
        self._poll.register(self._files_fd, select.EPOLLIN)
        self._poll.register(events.wake_fd, select.EPOLLIN)

    def wait(self) -> tuple[list[tuple[str, bool]], list[Any]]:
        """Block until something arrives or the next timer is due: (changed files, queued events).

        Files come first: a process exit queued after its last write then
        finds those lines already read. Either list may be empty (a timer).
        """
        timeout = self._timers.timeout()
        rest = self._read_at + self._interval - time.monotonic()
        if rest > 0:
            time.sleep(rest if timeout is None else min(rest, timeout))
            timeout = self._timers.timeout()
        try:
            ready = self._poll.poll(-1 if timeout is None else timeout)
        except InterruptedError:
            return [], []
        files: list[tuple[str, bool]] = []
        events: list[Any] = []
        for fd, _ in ready:
            if fd == self._files_fd:
                self._read_at = time.monotonic()
                files = self._files.take()
            else:
                self._events.woken()
                while True:
                    try:
                        events.append(self._events.get_nowait())
                    except queue.Empty:
                        break
        return files, events
