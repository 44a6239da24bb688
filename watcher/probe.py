"""Health probes: an HTTP GET of a backend's URL every N seconds.

A probe never decides that a proxy is down; it reports each attempt, and
the rules judge "failing for T".
"""

from __future__ import annotations

import os
import queue
import threading
import urllib.error
import urllib.request

from expwatch.watcher.events import ProbeResult


def expand(url: str) -> str | None:
    """Expand ${VARS}; None when a variable is unset (no probe rather than a bogus URL)."""
    expanded = os.path.expandvars(url)
    return None if "$" in expanded else expanded


def probe_once(url: str, timeout_s: float) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 400, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, str(getattr(exc, "reason", exc))[:200]


class Prober:
    def __init__(self, events: queue.Queue, profile: str, url: str, every_s: float, timeout_s: float):
        self._events, self.profile, self.url, self._every, self._timeout = events, profile, url, every_s, timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"probe-{profile}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._timeout + 1)

    def _loop(self) -> None:
        while not self._stop.is_set():
            ok, detail = probe_once(self.url, self._timeout)
            self._events.put(ProbeResult(self.profile, self.url, ok, detail))
            self._stop.wait(self._every)
