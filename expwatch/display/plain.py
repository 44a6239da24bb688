"""One line per audit record, for a pipe, a file under nohup, or ``--plain``.

Lines are written by a thread of their own: a pipe nobody reads must never
stall the watcher (listeners run on the thread that wrote the record). If
the reader falls behind by ``BACKLOG`` records, records are dropped and the
next write says how many.

The writing thread is woken once per batch, not once per record, and
formats and writes a batch in one ``write``: at 100 chatty runs, a wake-up,
a format and a flush per record cost the engine thread more than reading
the logs (BENCHMARKS.md, issue 16). ``gather_s`` (``audit.console_gather_s``)
is how long a batch collects after its first record.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from expwatch.display.records import plain_line, rings_bell, shown
from expwatch.terminal import terminal_text

BACKLOG = 10000


class PlainLines:
    def __init__(self, stream: TextIO = sys.stdout, gather_s: float = 0.0):
        self._stream = stream
        self.gather_s = gather_s
        self._pending: list[dict[str, Any]] = []
        self._dropped = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="plain-lines", daemon=True)

    def on_record(self, record: dict[str, Any]) -> None:
        if not shown(record):
            return
        with self._lock:
            if len(self._pending) >= BACKLOG:
                self._dropped += 1
                return
            self._pending.append(record)
            first = len(self._pending) == 1
        if first:
            self._ready.set()

    def console(self, _text: str) -> None:
        """The watcher's console messages repeat audit records, which are printed already."""

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Print what is pending, then end the writing thread (waiting at most ``timeout`` for a stuck reader)."""
        self._stopping = True
        self._ready.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            self._ready.wait()
            if not self._stopping and self.gather_s > 0:
                time.sleep(self.gather_s)
            with self._lock:
                records, self._pending = self._pending, []
                dropped, self._dropped = self._dropped, 0
                self._ready.clear()
                stopping = self._stopping
            lines = [terminal_text(plain_line(record)) + "\a" * rings_bell(record) for record in records]
            if dropped:
                lines.append(f"... {dropped} line(s) dropped: stdout was not being read")
            try:
                if lines:
                    self._stream.write("\n".join(lines) + "\n")
                    self._stream.flush()
            except (OSError, ValueError):
                return  # stdout closed (the reader went away); the audit log has everything
            if stopping:
                return
