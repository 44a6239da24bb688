"""One line per audit record, for a pipe, a file under nohup, or ``--plain``.

Lines are written by a thread of their own: a pipe nobody reads must never
stall the watcher (listeners run on the thread that wrote the record). If
the reader falls behind by ``BACKLOG`` lines, lines are dropped and the
next one written says how many.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any, TextIO

from expwatch.display.records import plain_line
from expwatch.terminal import terminal_text

BACKLOG = 10000
_DONE = object()


class PlainLines:
    def __init__(self, stream: TextIO = sys.stdout):
        self._stream = stream
        self._lines: queue.Queue = queue.Queue(BACKLOG)
        self._dropped = 0
        self._thread = threading.Thread(target=self._loop, name="plain-lines", daemon=True)

    def on_record(self, record: dict[str, Any]) -> None:
        try:
            self._lines.put_nowait(terminal_text(plain_line(record)))
        except queue.Full:
            self._dropped += 1

    def console(self, _text: str) -> None:
        """The watcher's console messages repeat audit records, which are printed already."""

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self._lines.put(_DONE, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            line = self._lines.get()
            if line is _DONE:
                return
            if self._dropped:
                line = f"... {self._dropped} line(s) dropped: stdout was not being read\n{line}"
                self._dropped = 0
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                return  # stdout closed (the reader went away); the audit log has everything
