"""The live table on a terminal: plain ANSI escapes, a thread of its own, little CPU.

The screen is redrawn at most ``MAX_RATE_HZ`` times a second, when a record
arrived or the size changed, and once a second otherwise (log ages tick);
a frame equal to the last one is not written at all, and only the lines
that changed are. The size is asked of the terminal on every frame, so a
tmux resize is picked up even where SIGWINCH is not delivered to us, and
SIGWINCH only makes it immediate.
"""

from __future__ import annotations

import os
import signal
import sys
import termios
import threading
import time
from collections import deque
from typing import Any, Callable, TextIO

from expwatch.display.records import FEED_SKIPPED, rings_bell
from expwatch.display.table import ProgressRates, render_frame

MAX_RATE_HZ = 2.0
TICK_S = 1.0
FEED_KEPT = 200

ENTER = "\033[?1049h\033[?25l\033[?7l\033[2J"  # alternate screen, hide cursor, no autowrap, clear
LEAVE = "\033[?7h\033[?25h\033[?1049l"


def terminal_wanted(stream: TextIO, plain: bool, environ: dict[str, str] | None = None) -> bool:
    """The live table only for a real terminal that can take it; a pipe or nohup gets lines."""
    env = os.environ if environ is None else environ
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and not plain and env.get("TERM", "dumb") not in ("dumb", "")


class LiveView:
    def __init__(self, title: str, views: Callable[[], list[Any]], stream: TextIO = sys.stdout, colour: bool = True):
        self.title = title
        self._views = views
        self._stream = stream
        self._fd = stream.fileno()
        self._colour = colour
        self._ascii = "utf" not in (getattr(stream, "encoding", "") or "").lower()
        self._records: deque[dict[str, Any]] = deque(maxlen=FEED_KEPT)
        self._rates = ProgressRates()
        self._bell = False  # an alert's bell, rung with the next frame
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-view", daemon=True)
        self._shown: list[str] = []
        self._size: tuple[int, int] | None = None
        self._saved_tty: list[Any] | None = None
        self._old_winch: Any = None
        self.frames = 0

    # ----- inputs (any thread) ------------------------------------------------------

    def on_record(self, record: dict[str, Any]) -> None:
        if record.get("event") in FEED_SKIPPED:
            return  # kept out of the buffer too, or a quiet night of progress records would push incidents out
        self._records.append(record)
        self._bell = self._bell or rings_bell(record)
        self._wake.set()

    def console(self, _text: str) -> None:
        """The watcher's console messages repeat audit records, which the feed already shows."""

    # ----- lifecycle (main thread) --------------------------------------------------

    def start(self) -> None:
        self._quiet_keyboard()
        self._old_winch = signal.signal(signal.SIGWINCH, lambda *_: self._wake.set())
        self._write(ENTER)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        signal.signal(signal.SIGWINCH, self._old_winch or signal.SIG_DFL)
        self._write(LEAVE)
        if self._saved_tty is not None:
            try:
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._saved_tty)
            except (termios.error, OSError, ValueError):
                pass

    def _quiet_keyboard(self) -> None:
        """Keys typed at the table must not be echoed into it; Ctrl-C still works (ISIG stays on)."""
        try:
            fd = sys.stdin.fileno()
            if not os.isatty(fd):
                return
            self._saved_tty = termios.tcgetattr(fd)
            quiet = termios.tcgetattr(fd)
            quiet[3] &= ~(termios.ECHO | termios.ICANON)
            termios.tcsetattr(fd, termios.TCSADRAIN, quiet)
        except (termios.error, OSError, ValueError):
            self._saved_tty = None

    # ----- drawing (own thread) -----------------------------------------------------

    def _loop(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            wait = 1.0 / MAX_RATE_HZ - (time.monotonic() - last)
            if wait > 0 and self._stop.wait(wait):
                return
            last = time.monotonic()
            try:
                self.draw()
            except Exception:  # a display bug must not take the watcher down; the next tick tries again
                pass

    def draw(self) -> None:
        try:
            size = os.get_terminal_size(self._fd)
        except OSError:
            return
        width, height = size.columns, size.lines
        now = time.time()
        try:
            views = self._views()
        except (AttributeError, RuntimeError):
            views = None  # the engine is still starting, or changed a run under us: next frame
        if views is None:
            return
        for view in views:
            self._rates.observe(view.name, view.done, now)
        lines = render_frame(self.title, views, self._rates, list(self._records), width, height, now, self._colour, self._ascii)
        resized = (width, height) != self._size
        bell, self._bell = self._bell, False
        if not resized and lines == self._shown:
            if bell:
                self._write("\a")
            return
        parts = ["\a"] * bell + (["\033[2J"] if resized else [])
        for row, line in enumerate(lines):
            if resized or row >= len(self._shown) or self._shown[row] != line:
                parts.append(f"\033[{row + 1};1H\033[2K{line}")  # erase first: with autowrap off, a trailing erase would eat column N
        if len(lines) < len(self._shown) or resized:
            parts.append(f"\033[{len(lines) + 1};1H\033[J")
        self._write("".join(parts))
        self._shown, self._size = lines, (width, height)
        self.frames += 1

    def _write(self, text: str) -> None:
        data = text.encode(getattr(self._stream, "encoding", None) or "utf-8", errors="replace")
        while data:
            try:
                written = os.write(self._fd, data)
            except InterruptedError:
                continue
            except OSError:
                return  # the terminal went away (tmux pane killed); nothing to draw on
            data = data[written:]
