"""The engine loop's timers: one heap, consulted by the queue's ``get(timeout=...)``.

Re-arming a (run, purpose) timer makes the earlier one stale instead of
searching the heap for it; a stale deadline is dropped when it comes due.
"""

from __future__ import annotations

import heapq
import itertools
import time

from expwatch.watcher.events import Deadline


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._tokens: dict[tuple[str, str], int] = {}

    def arm(self, run: str, purpose: str, delay: float) -> None:
        token = self._tokens.get((run, purpose), 0) + 1
        self._tokens[(run, purpose)] = token
        heapq.heappush(self._heap, (time.time() + delay, next(self._seq), Deadline(run, purpose, token)))

    def timeout(self) -> float | None:
        """Seconds until the next deadline (None: sleep until an event)."""
        return max(0.0, self._heap[0][0] - time.time()) if self._heap else None

    def due(self) -> list[Deadline]:
        """Current deadlines that came due, earliest first."""
        now, fired = time.time(), []
        while self._heap and self._heap[0][0] <= now:
            _, _, deadline = heapq.heappop(self._heap)
            if self._tokens.get((deadline.run, deadline.purpose)) == deadline.token:
                fired.append(deadline)
        return fired
