"""The audit trail: one JSON line per thing expwatch saw, decided or did.

Every stage writes here and nothing reads it back while running; it exists
so that after a night of unattended runs a person can reconstruct what
happened and why. That makes two properties non-negotiable:

* **Every acknowledged record is a complete line**, even if the watcher is
  SIGKILLed mid-run. Records are written with a single ``os.write`` of the
  finished line on an ``O_APPEND`` descriptor; nothing is buffered in Python,
  so a kill between records loses nothing. A kill *during* a write of more
  than a page can cut it (Linux stops copying pages when a fatal signal is
  pending and returns what it wrote), so each writer starts its record on a
  fresh line when the file does not end with one: the torn record stays a
  line of its own, which readers skip and count, and cannot swallow the next.
* **Secrets never reach the file.** Redaction is a processor in the chain,
  before rendering, not an option callers must remember.

Records are built the structlog way: a dict passes through
stamp → redact → render, and the rendered line goes to our own append-only
writer (not stdlib logging, whose handlers buffer and lock per process).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import structlog

from expwatch import crashpoints
from expwatch.redact import redact_secrets
from expwatch.trust import PRIVATE_DIR, file_mode

# Fields that link records across stages; written first so raw lines read left to right.
LINK_FIELDS = ("event", "run", "rule", "incident")


def stamp_record(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: add ``ts`` and put the linking fields first.

    ``ts`` is the writer's clock in UTC with milliseconds: several records per
    second are normal (match → plan → start) and must sort. Linking fields
    passed as ``None`` are dropped, so callers can pass what they have
    without branching.
    """
    stamped: dict[str, Any] = {
        "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    }
    for key in LINK_FIELDS:
        if event_dict.get(key) is not None:
            stamped[key] = event_dict[key]
    for key, value in event_dict.items():
        if key not in LINK_FIELDS and key != "ts":
            stamped[key] = value
    return stamped


class _AppendOnlyFile:
    """The structlog "logger" at the end of the chain: appends whole lines, rotates by size.

    Not thread-safe on its own; ``AuditLog`` serialises calls.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int):
        self.path = path
        self._max_bytes = max_bytes
        self._backups = backups
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = self._open()
        self._end = -1  # the file's size right after our last record: then it ends with our newline

    def _open(self) -> int:
        # Recreated when someone removes .expwatch/ under a running watcher (issue 15).
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        # Read too: the last byte says whether a killed writer left a torn line (``write``).
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, file_mode(self.path.parent))
        st = os.fstat(fd)
        self._identity = (st.st_dev, st.st_ino)  # of the file our descriptor appends to; it never changes
        return fd

    def write(self, line: str) -> str:
        if self._fd is None:
            raise ValueError(f"{self.path}: audit log is closed")
        data = (line + "\n").encode("utf-8")
        size = self._follow_rotation()
        if self._rotate_if_full(len(data), size):
            size = 0
        # Writers hold ``exclusive()``, so no one appends between the stat and the write.
        if size and size != self._end and os.pread(self._fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a writer killed mid-record left a torn line: ours starts after it
        # No fsync: it would cost milliseconds per record on busy runs, and the
        # guarantee we need is "no acknowledged record torn", which O_APPEND + one
        # write gives against process death. Only a kernel crash can lose the tail.
        written = os.write(self._fd, data)
        if written != len(data):
            raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes); disk full?")
        self._end = size + written
        return line

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the file against the other processes that append to it while a record is stamped and written.

        Without it a CLI command's record stamped a millisecond before the
        watcher's could land after it, and the trail would go back in time.
        The lock is the descriptor's own (flock), so a writer that dies
        holding it releases it; a descriptor replaced by a rotation meanwhile
        was closed, which released it too.
        """
        if self._fd is None:
            raise ValueError(f"{self.path}: audit log is closed")
        fd = self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if self._fd == fd:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _follow_rotation(self) -> int:
        """Reopen if another process rotated the file under our descriptor; return its size.

        Several processes append to one audit file (``expwatch resume`` writes
        while the watcher runs). Without this, a writer would keep appending
        to ``audit.jsonl.1`` forever after someone else rotated.
        """
        assert self._fd is not None
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            on_disk = None
        if on_disk is None or (on_disk.st_dev, on_disk.st_ino) != self._identity:
            os.close(self._fd)
            self._fd = None
            self._fd = self._open()
            return os.fstat(self._fd).st_size
        # The stat of the path just taken has the size too: no second fstat per record.
        return on_disk.st_size

    def _rotate_if_full(self, incoming: int, size: int) -> bool:
        """audit.jsonl → .1 → .2 … → .{backups}, dropping the oldest, then a fresh file; True if it rotated.

        Rotation is done by whichever writer notices the size, without a
        cross-process lock. If two processes rotate at once, one may shift a
        nearly empty fresh file into ``.1``: records are never torn or lost
        (beyond the oldest backup falling off), but one backup is wasted and
        a record can land in ``.1`` slightly out of order. Accepted: the other
        writers are short-lived CLI commands writing a record or two.
        """
        assert self._fd is not None
        # An empty file takes any record, even one larger than max_bytes.
        if size == 0 or size + incoming <= self._max_bytes:
            return False
        os.close(self._fd)
        self._fd = None
        for index in range(self._backups - 1, 0, -1):
            _replace_if_present(self._backup(index), self._backup(index + 1))
        if self._backups > 0:
            _replace_if_present(self.path, self._backup(1))
        else:
            self.path.unlink(missing_ok=True)
        self._fd = self._open()
        return True

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _replace_if_present(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except FileNotFoundError:
        pass  # another writer rotated it first


class AuditLog:
    """Thread-safe, append-only, size-rotated JSON-lines audit log."""

    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024, backups: int = 5):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file = _AppendOnlyFile(self.path, max_bytes, backups)
        self._log = structlog.wrap_logger(
            self._file,
            processors=[
                stamp_record,
                redact_secrets,
                # str() for anything JSON cannot hold (paths, datetimes, exceptions):
                # an odd-looking value beats a lost record.
                structlog.processors.JSONRenderer(default=str),
            ],
            wrapper_class=structlog.BoundLogger,
            context_class=dict,
        ).bind()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener(record)`` after each record is written (console, live view, notifications).

        Listeners run on the writing thread and must not block; an exception
        in one is ignored, so a display bug never costs an audit record.
        """
        self._listeners.append(listener)

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one record; return it as written (with ``ts``, after redaction)."""
        # The whole chain runs under the locks so ``ts`` order matches file order, across processes too.
        with self._lock, self._file.exclusive():
            line = self._log.write(event, **fields)
        crashpoints.passed(f"audit:{event}")
        written = json.loads(line)
        for listener in self._listeners:
            try:
                listener(written)
            except Exception:  # a broken display or notifier must never stop the audit trail
                pass
        return written

    def close(self) -> None:
        with self._lock:
            self._file.close()
