"""One watcher per experiments directory: an flock on ``.expwatch/watcher.lock`` holding its pid.

A second watcher would read the same logs and decide every failure twice;
flock is released by the kernel however the holder dies, so a SIGKILLed
watcher never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os

from expwatch.layout import ExperimentsLayout
from expwatch.trust import make_home


class AlreadyWatched(Exception):
    pass


class DirectoryLock:
    def __init__(self, layout: ExperimentsLayout, group_access: bool):
        self._layout, self._group_access = layout, group_access
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (once; again is a no-op) or raise AlreadyWatched naming the holder's pid."""
        if self._fd is not None:
            return
        make_home(self._layout, self._group_access)
        fd = os.open(self._layout.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyWatched(f"another expwatch (pid {holder}) is already watching {self._layout.root}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
