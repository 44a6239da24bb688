"""File changes → FileChanged events on the one queue.

Reading files happens on the engine thread, so a burst of writes never
races a rotation check. Local paths are watched with our own inotify reader
(watcher/inotify.py), whose descriptor the engine loop waits on beside its
queue: one event per changed file per kernel read, with no thread between
the kernel and the read, where watchdog's observer spent three thread
handoffs per write. inotify does not see writes made on other machines to a
network filesystem, so such paths are watched by watchdog's polling
observer instead, whose thread puts its events on the engine's queue.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.polling import PollingObserver

from expwatch.watcher.coalesce import EventQueue
from expwatch.watcher.events import FileChanged
from expwatch.watcher.inotify import InotifyWatch

# watchdog logs an error when an emitter thread is stopped mid-read
# ("queue_events() called when the thread is inactive"); it is harmless at
# shutdown and would otherwise land on the user's terminal.
logging.getLogger("watchdog").addHandler(logging.NullHandler())
logging.getLogger("watchdog").propagate = False

NETWORK_FS = ("nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "fuse.sshfs", "beegfs", "ceph", "fuse.glusterfs")


def filesystem_type(path: Path) -> str:
    """The mount type holding ``path`` (longest matching mount point in /proc/mounts)."""
    best, fstype = "", ""
    target = str(Path(path).resolve())
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and (target == parts[1] or target.startswith(parts[1].rstrip("/") + "/")) and len(parts[1]) > len(best):
                    best, fstype = parts[1], parts[2]
    except OSError:
        return ""
    return fstype


def wants_polling(path: Path, mode: str) -> bool:
    if mode == "polling":
        return True
    if mode == "inotify":
        return False
    return filesystem_type(path) in NETWORK_FS


class _Enqueue(FileSystemEventHandler):
    def __init__(self, events: EventQueue, ignore: Callable[[str], bool]):
        self._events, self._ignore = events, ignore
        self._ignored: dict[str, bool] = {}  # ``ignore`` is a pure function of the path: asked once per path

    def changes(self, paths: dict[str, bool]) -> list[tuple[str, bool]]:
        """The distinct paths of one inotify read (with whether they were only written), less those ignored."""
        kept = []
        for path, appended in paths.items():
            ignored = self._ignored.get(path)
            if ignored is None:
                if len(self._ignored) >= 4096:
                    self._ignored.clear()
                ignored = self._ignored[path] = self._ignore(path)
            if not ignored:
                kept.append((path, appended))
        return kept

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                path = os.fsdecode(raw)
                if not self._ignore(path):
                    self._events.put(FileChanged(Path(path)))


class DirectoryWatch:
    """inotify for local paths (read by the owner's thread), watchdog's polling observer for the rest."""

    def __init__(self, events: EventQueue, mode: str, polling_interval_s: float, ignore: Callable[[str], bool] = lambda p: False,
                 own_dirs: frozenset[str] = frozenset()):
        """``ignore``: paths (as text) whose events are dropped at the source (the watcher's own writes);
        ``own_dirs``: directories whose files are all such (inotify is not told of writes there at all)."""
        self._handler = _Enqueue(events, ignore)
        self._mode = mode
        self._inotify = InotifyWatch(own_dirs)
        self._polling = PollingObserver(timeout=polling_interval_s)
        self._watched: dict[Path, bool] = {}
        self._started = False

    def watch(self, directory: Path, recursive: bool) -> str:
        """Watch a directory (idempotent); returns "inotify" or "polling"."""
        directory = directory.resolve()
        if directory in self._watched and (self._watched[directory] or not recursive):
            return "polling" if wants_polling(directory, self._mode) else "inotify"
        if any(recursive_parent and directory.is_relative_to(parent) for parent, recursive_parent in self._watched.items()):
            return "polling" if wants_polling(directory, self._mode) else "inotify"
        polling = wants_polling(directory, self._mode)
        if polling:
            self._polling.schedule(self._handler, str(directory), recursive=recursive)
        else:
            self._inotify.schedule(directory, recursive)
        self._watched[directory] = recursive
        return "polling" if polling else "inotify"

    def fileno(self) -> int:
        """Readable when inotify has events for ``take()``."""
        return self._inotify.fileno()

    def take(self) -> list[tuple[str, bool]]:
        """The local files changed since the last call, each once, with whether they were only written
        (``FileChanged.appended``; call when ``fileno()`` is readable)."""
        return self._handler.changes(self._inotify.take())

    def start(self) -> None:
        self._polling.start()
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._polling.stop()
            self._polling.join(timeout=5)
        self._inotify.close()
