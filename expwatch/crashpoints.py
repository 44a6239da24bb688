"""Named crash points: every place the watcher persists or acts, and a test-only way to die at one.

Random kill times find the holes in crash recovery only by luck; the
databases trusted with data crash at every point where they persist
something and check their invariants after recovery. Each write of the
watcher (an audit record, a state-store write, a manifest write) and each
effect (a launch, a kill) calls ``passed(NAME)`` right after it happened.

Off unless armed, and only the watcher arms it, from the test-only settings
``testing.crash_at`` (``"POINT"`` or ``"POINT#N"``: SIGKILL this process
right after the N-th pass, default the first) and ``testing.crash_trace``
(a file that gets one line per point passed, so a sweep can list the points
a story goes through). The shipped settings leave both null.
"""

from __future__ import annotations

import os
import signal
import threading

_lock = threading.Lock()
_target: str | None = None
_after = 0
_count = 0
_trace: int | None = None


def arm(crash_at: str | None, trace_path: str | None) -> None:
    """Set from the settings at watcher start; ``None`` for both leaves every point a no-op."""
    global _target, _after, _count, _trace
    with _lock:
        _target, _after, _count = None, 0, 0
        if crash_at:
            point, _, nth = str(crash_at).partition("#")
            _target, _after = point, int(nth or 1)
        _trace = os.open(trace_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if trace_path else None


def passed(point: str) -> None:
    """The write or effect named ``point`` has just happened."""
    global _count
    if _target is None and _trace is None:
        return
    with _lock:
        if _trace is not None:
            os.write(_trace, (point + "\n").encode())
        if point == _target:
            _count += 1
            if _count == _after:
                os.kill(os.getpid(), signal.SIGKILL)
