"""Health probes per backend profile, and since when each has been failing.

The probes themselves run on threads of their own (``watcher/probe.py``);
this keeps which profiles are probed and turns their results into "failing
since" times for the runs' facts.
"""

from __future__ import annotations

import queue
import time
from typing import Callable

from expwatch.settings import Settings, SettingsError
from expwatch.watcher.events import ProbeResult
from expwatch.watcher.probe import Prober, expand


class ProbeBoard:
    def __init__(self, events: queue.Queue, settings: Settings, record: Callable[..., None]):
        self._events, self._settings, self._record = events, settings, record
        self._probers: dict[str, Prober] = {}
        self._failing: dict[str, float] = {}
        self._unprobed: set[str] = set()

    def ensure(self, profile_name: str | None) -> None:
        """Start probing the run's profile, once per profile, if it has a probe URL."""
        try:
            profile = self._settings.profile(profile_name)
        except SettingsError:
            return
        if not profile.probe_url or profile.name in self._probers or profile.name in self._unprobed:
            return
        url = expand(profile.probe_url)
        if url is None:
            self._record("probe skipped", profile=profile.name, reason=f"unset variable in {profile.probe_url}")
            self._unprobed.add(profile.name)
            return
        prober = Prober(self._events, profile.name, url, profile.probe_every_s, profile.probe_timeout_s)
        self._probers[profile.name] = prober
        prober.start()

    def on_result(self, event: ProbeResult) -> tuple[float | None, bool]:
        """(failing since, whether it just started failing) for the event's profile."""
        was = self._failing.get(event.profile)
        if event.ok and was is not None:
            del self._failing[event.profile]
            self._record("probe recovered", profile=event.profile, url=event.url, detail=event.detail)
        elif not event.ok and was is None:
            self._failing[event.profile] = time.time()
            self._record("probe failed", profile=event.profile, url=event.url, detail=event.detail)
        since = self._failing.get(event.profile)
        return since, since is not None and was is None

    def stop(self) -> None:
        for prober in self._probers.values():
            prober.stop()
