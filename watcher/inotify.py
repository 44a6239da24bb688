"""Linux inotify, read by the engine loop itself: a burst of writes becomes one FileChanged per file.

watchdog's inotify observer hands every kernel event through three threads
(reader → emitter → dispatcher, each a Condition handoff) and builds several
Python objects per event. Profiled on 100 logs × 20 lines/s (BENCHMARKS.md,
"Profile"), those threads held 70% of the watcher's Python samples, more
than all the reading and deciding together. A reader thread of our own
still cost a thread wake-up and a queue handoff per write, about as much
as the read itself; so the descriptor is handed to the engine loop, which
waits on it beside its queue (``fileno()``) and, when the kernel has events,
takes every one queued in one ``read`` (``take()``), each distinct path once:
the kernel has already merged identical consecutive events, and the batch
merges the rest.

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
import struct
from pathlib import Path

# <sys/inotify.h>
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x002, 0x004, 0x008
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x040, 0x080, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED, IN_ISDIR = 0x4000, 0x8000, 0x40000000
IN_ONLYDIR, IN_DONT_FOLLOW = 0x01000000, 0x02000000
IN_CLOEXEC, IN_NONBLOCK = 0o2000000, 0o4000

# Events after which the path still names the file already open, only longer (or truncated in place).
APPEND_ONLY = IN_MODIFY | IN_CLOSE_WRITE
WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW)
# A directory the watcher writes its own files in (.expwatch/): only entries coming and going, which is
# how its subdirectories are followed. With writes too, every audit record and SQLite commit woke the
# engine loop to read an event it then ignored, several per incident.
OWN_DIR_MASK = IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW
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
    """Watches directories; the owner waits on ``fileno()`` and calls ``take()`` when it is readable.

    One thread only (the engine loop's) schedules watches and takes events,
    so nothing here is locked.
    """

    def __init__(self, own_dirs: frozenset[str] = frozenset()) -> None:
        """``own_dirs``: directories (as text) whose files only the watcher writes (``OWN_DIR_MASK``)."""
        self._own_dirs = own_dirs
        # (wd, name) -> path text: building a path per event was the reader's largest cost after the read itself.
        self._names: dict[tuple[int, bytes], str] = {}
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
        if fd < 0:
            err = ctypes.get_errno()
            raise InotifyUnavailable(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        self._dirs: dict[int, tuple[str, bool]] = {}  # wd -> (directory, recursive)

    def schedule(self, directory: Path, recursive: bool) -> None:
        """Watch ``directory`` (and, if recursive, every directory below it, now and later)."""
        self._add(os.fspath(directory), recursive, report=False)

    def fileno(self) -> int:
        """Readable when the kernel has events queued."""
        return self._fd

    def take(self) -> dict[str, bool]:
        """The distinct paths (as text) the queued events name, in order of first mention ({} if none).

        Each with whether every event about it was a write (``APPEND_ONLY``):
        then the path still names the file it named, which a reader need not
        check again (a rename, creation or deletion names the path with
        another event). One ``read``: events that did not fit leave the
        descriptor readable, so the owner's next wait returns at once.
        """
        try:
            buf = os.read(self._fd, READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return {}
        changed: dict[str, bool] = {}
        self._paths(buf, changed)
        return changed

    def close(self) -> None:
        os.close(self._fd)

    def _add(self, directory: str, recursive: bool, report: bool) -> list[str]:
        """Add watches; with ``report``, returns the files already inside (created before the watch, unseen)."""
        found: list[str] = []
        pending = [directory]
        while pending:
            current = pending.pop()
            mask = OWN_DIR_MASK if current in self._own_dirs else WATCH_MASK
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(current), mask)
            if wd < 0:
                err = ctypes.get_errno()
                if current == directory and err not in (errno.ENOENT, errno.ENOTDIR):
                    raise OSError(err, f"inotify_add_watch {current}: {os.strerror(err)}")
                continue  # a subdirectory gone or replaced meanwhile
            self._dirs[wd] = (current, recursive)
            if not recursive:
                continue
            try:
                with os.scandir(current) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        elif report:
                            found.append(entry.path)
            except OSError:
                continue
        return found

    def _paths(self, buf: bytes, changed: dict[str, bool]) -> None:
        """Add the paths a buffer of events names to ``changed``, each with whether all its events were writes."""
        offset, size, unpack = 0, HEADER.size, HEADER.unpack_from
        while offset + size <= len(buf):
            wd, mask, _cookie, length = unpack(buf, offset)
            raw = buf[offset + size: offset + size + length].rstrip(b"\0")
            offset += size + length
            appended = not mask & ~APPEND_ONLY
            if raw and not mask & (IN_IGNORED | IN_ISDIR):
                known = self._names.get((wd, raw))
                if known is not None:
                    changed[known] = changed.get(known, True) and appended
                    continue
            where = self._dirs.get(wd)
            if mask & IN_IGNORED:
                self._dirs.pop(wd, None)
                self._names.clear()  # a new directory may get this wd
            if mask & IN_Q_OVERFLOW:
                # Events were lost: name every watched directory; the engine's safety poll rereads the rest.
                changed.update((d, False) for d, _ in self._dirs.values())
                continue
            if where is None:
                continue
            directory, recursive = where
            path = f"{directory}/{os.fsdecode(raw)}" if raw else directory
            changed[path] = changed.get(path, True) and appended
            if raw and not mask & IN_ISDIR:
                if len(self._names) >= NAME_CACHE:
                    self._names.clear()
                self._names[(wd, raw)] = path
            if recursive and raw and mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                changed.update((p, False) for p in self._add(path, True, report=True))
