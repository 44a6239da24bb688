"""The watcher's use of discovery: adopt (or suggest adopting) runs started by hand.

``watcher.discover`` only reads ``/proc``; this is where the ``discover``
setting decides what happens to what it found, and where the effect (a
manifest, which the watcher then picks up like any other) and its audit
record are made. The supervisor calls ``sweep`` on start and on every
safety poll; a scan is bounded by ``discovery.budget_s`` so the engine
thread is never held up long.
"""

from __future__ import annotations

from typing import Any, Callable

from expwatch.adoption import ProcessUnreadable, adopt_command_line, adopt_found
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import discover
from expwatch.settings import Settings, SettingsError
from expwatch.watcher.discover import DiscoveryConfig, scan

MODES = ("adopt", "suggest", "off")


class RunDiscovery:
    def __init__(self, layout: ExperimentsLayout, settings: Settings, record: Callable[..., Any], console: Callable[[str], None]):
        self.layout = layout
        self.settings = settings
        self.mode = settings.get("discover")
        if self.mode not in MODES:
            raise SettingsError(f"settings: field 'discover' must be one of {', '.join(MODES)}, got {self.mode!r}")
        self.config = DiscoveryConfig.from_settings(settings)
        self._record = record
        self._console = console
        self._told: set[tuple[int, float]] = set()  # processes already suggested (or whose adoption failed)

    def sweep(self) -> None:
        if self.mode == "off":
            return
        result = scan(self.layout.root, discover(self.layout), self.config)
        if result.truncated:
            self._record("discovery truncated", budget_s=self.config.budget_s, found=len(result.found))
        for found in result.found:
            key = (found.pid, found.create_time)
            if found.waiting or key in self._told:
                continue
            if self.mode == "suggest":
                self._told.add(key)
                line = adopt_command_line(self.layout, found)
                self._record("run suggested", pid=found.pid, command=line, inferred=found.fields())
                self._console(f"found a run started by hand (pid {found.pid}); to watch it: {line}")
                continue
            try:
                manifest, path = adopt_found(self.layout, self.settings, found)
            except ProcessUnreadable as exc:
                self._told.add(key)
                self._record("run not adopted", pid=found.pid, reason=str(exc))
                continue
            self._record("run adopted", run=manifest.name, pid=found.pid, argv=list(manifest.argv), cwd=manifest.cwd,
                         manifest=str(path), inferred=found.fields(), via="discovery")
            self._console(f"{manifest.name}: adopted pid {found.pid} (log {manifest.log}, expected {manifest.expected or '?'})")
