"""Linux inotify in one thread: a burst of writes becomes one FileChanged per file.

watchdog's inotify observer hands every kernel event through three threads
(reader → emitter → dispatcher, each a Condition handoff) and builds several
Python objects per event. Profiled on 100 logs × 20 lines/s (BENCHMARKS.md,
"Profile"), those threads held 70% of the watcher's Python samples, more
than all the reading and deciding together. Here one thread blocks in
``select`` on the inotify descriptor, reads every event the kernel has queued
in one ``read``, and reports each distinct path once per read: the kernel has
already merged identical consecutive events, and the batch merges the rest.

Same contract as watchdog's handler (``watcher/observer.py`` used it): any
create/modify/attribute change/move/delete under a watched directory names
the path (both paths of a move); recursive watches follow new
subdirectories. Facts from inotify(7) (man-pages): ``struct inotify_event``
is ``int wd; uint32_t mask, cookie, len; char name[len]`` (name NUL-padded),
and IN_Q_OVERFLOW means events were lost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading
import time
from pathlib import Path
from typing import Callable

# <sys/inotify.h>
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x002, 0x004, 0x008
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x040, 0x080, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED, IN_ISDIR = 0x4000, 0x8000, 0x40000000
IN_ONLYDIR, IN_DONT_FOLLOW = 0x01000000, 0x02000000
IN_CLOEXEC, IN_NONBLOCK = 0o2000000, 0o4000

WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW)
HEADER = struct.Struct("iIII")
READ_BYTES = 1 << 16
NAME_CACHE = 4096


class InotifyUnavailable(OSError):
    pass


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    return libc


class InotifyWatch:
    """Watches directories; calls ``sink(paths)`` on its own thread with the distinct paths of one kernel read."""

    def __init__(self, sink: Callable[[list[Path]], None], gather_s: float = 0.0):
        """``gather_s``: after the first event of a quiet spell, wait this long so a burst is read as one batch."""
        self._sink = sink
        self._gather_s = gather_s
        # (wd, name) -> Path: building a Path per event was the reader's largest cost after the read itself.
        self._names: dict[tuple[int, bytes], Path] = {}
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
        if fd < 0:
            err = ctypes.get_errno()
            raise InotifyUnavailable(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._lock = threading.Lock()  # watches are added by the engine thread and by the reader
        self._dirs: dict[int, tuple[Path, bool]] = {}  # wd -> (directory, recursive)
        self._thread = threading.Thread(target=self._run, name="inotify", daemon=True)
        self._stopping = False

    def schedule(self, directory: Path, recursive: bool) -> None:
        """Watch ``directory`` (and, if recursive, every directory below it, now and later)."""
        self._add(Path(directory), recursive, report=False)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)

    def _add(self, directory: Path, recursive: bool, report: bool) -> list[Path]:
        """Add watches; with ``report``, returns the files already inside (created before the watch, unseen)."""
        found: list[Path] = []
        pending = [directory]
        while pending:
            current = pending.pop()
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(current), WATCH_MASK)
            if wd < 0:
                err = ctypes.get_errno()
                if current == directory and err not in (errno.ENOENT, errno.ENOTDIR):
                    raise OSError(err, f"inotify_add_watch {current}: {os.strerror(err)}")
                continue  # a subdirectory gone or replaced meanwhile
            with self._lock:
                self._dirs[wd] = (current, recursive)
            if not recursive:
                continue
            try:
                with os.scandir(current) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(Path(entry.path))
                        elif report:
                            found.append(Path(entry.path))
            except OSError:
                continue
        return found

    def _run(self) -> None:
        while not self._stopping:
            try:
                ready, _, _ = select.select([self._fd, self._wake_r], [], [])
            except InterruptedError:
                continue
            if self._wake_r in ready:
                return
            if self._gather_s:
                time.sleep(self._gather_s)
            try:
                buf = os.read(self._fd, READ_BYTES)
            except BlockingIOError:
                continue
            except OSError:
                return
            paths = self._paths(buf)
            if paths:
                self._sink(list(paths))

    def _paths(self, buf: bytes) -> dict[Path, None]:
        """The distinct paths a buffer of events names, in order of first mention."""
        changed: dict[Path, None] = {}
        offset, size, unpack = 0, HEADER.size, HEADER.unpack_from
        while offset + size <= len(buf):
            wd, mask, _cookie, length = unpack(buf, offset)
            raw = buf[offset + size: offset + size + length].rstrip(b"\0")
            offset += size + length
            if raw and not mask & (IN_IGNORED | IN_ISDIR):
                known = self._names.get((wd, raw))
                if known is not None:
                    changed[known] = None
                    continue
            with self._lock:
                where = self._dirs.get(wd)
                if mask & IN_IGNORED:
                    self._dirs.pop(wd, None)
                    self._names.clear()  # a new directory may get this wd
            if mask & IN_Q_OVERFLOW:
                # Events were lost: name every watched directory; the engine's safety poll rereads the rest.
                with self._lock:
                    changed.update((d, None) for d, _ in self._dirs.values())
                continue
            if where is None:
                continue
            directory, recursive = where
            path = directory / os.fsdecode(raw) if raw else directory
            changed[path] = None
            if raw and not mask & IN_ISDIR:
                if len(self._names) >= NAME_CACHE:
                    self._names.clear()
                self._names[(wd, raw)] = path
            if recursive and raw and mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                changed.update((p, None) for p in self._add(path, True, report=True))
        return changed
