"""File changes → FileChanged events on the one queue.

The handler only enqueues paths; reading files happens on the engine
thread, so a burst of writes never races a rotation check. Local paths are
watched with our own one-thread inotify reader (watcher/inotify.py: one
event per changed file per kernel read, where watchdog's observer spent
three thread handoffs per write); inotify does not see writes made on other
machines to a network filesystem, so such paths are watched by watchdog's
polling observer instead.
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
    def __init__(self, events: EventQueue, ignore: Callable[[Path], bool]):
        self._events, self._ignore = events, ignore
        self._ignored: dict[Path, bool] = {}  # ``ignore`` is a pure function of the path: asked once per path

    def paths(self, paths: list[Path]) -> None:
        """InotifyWatch's sink: the distinct paths of one kernel read, queued together."""
        events = []
        for path in paths:
            ignored = self._ignored.get(path)
            if ignored is None:
                if len(self._ignored) >= 4096:
                    self._ignored.clear()
                ignored = self._ignored[path] = self._ignore(path)
            if not ignored:
                events.append(FileChanged(path))
        self._events.put_all(events)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                path = Path(os.fsdecode(raw))
                if not self._ignore(path):
                    self._events.put(FileChanged(path))


class DirectoryWatch:
    """One observer for inotify paths and one for polled paths, started lazily."""

    def __init__(self, events: EventQueue, mode: str, polling_interval_s: float, ignore: Callable[[Path], bool] = lambda p: False,
                 gather_s: float = 0.0):
        """``ignore``: paths whose events are dropped at the source (the watcher's own writes).
        ``gather_s``: inotify events of one burst are read together after this long (watch.inotify_gather_s)."""
        self._handler = _Enqueue(events, ignore)
        self._mode = mode
        self._inotify = InotifyWatch(self._handler.paths, gather_s)
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

    def start(self) -> None:
        self._inotify.start()
        self._polling.start()
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._inotify.stop()
            self._polling.stop()
            self._polling.join(timeout=5)
