"""Runs found long finished at start go straight to sleep, and are not read at all while nothing changed.

A lab's folder keeps thousands of runs that finished days ago. Each used to
be watched like a live run for a moment (its facts and rules session, a
history read, a result read, four audit records) and released right after
(expwatch/dormancy.py): about a millisecond of every start per finished run,
again at every restart. 10,000 such runs were 8 s of a start and 40,000
audit lines, of which the release kept nothing but a read position.

A run is admitted asleep when its manifest says it finished at least
``watch.release_finished_s`` ago and no incident a previous watcher left
half done names it:

- **first sight** (no watcher saved any state for it): its read position
  is found from the log's end (``reading.history_position``), its figures
  are read once for its row, its state is saved, and one ``run discovered``
  record says ``asleep``;
- **released before and unchanged**: the manifest, log, result, checkpoint
  and field file all have the signatures its release saved. Nothing is
  read or recorded for it; the start's ``runs asleep`` record counts it.

Both leave the figures for ``status`` (``results/figures.ProgressCache``),
so the first ``status`` after a start reads no finished run's files either.

Anything else (a file changed while no watcher ran, a log whose end cannot
tell the position, a result not readable as it is) is watched and then
released as before, so what a revival resumes from is the same either way.

Signatures are those ``status`` trusts (``results/figures.file_signature``),
taken before the figures are read and saved with the digest of the code and
field map those come from. None is saved while a file changed in the last
``watch.status_cache_after_s`` (file times tick coarsely), and any save
while the run is watched drops them (``state_of`` never writes them).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from expwatch.engine.reading import history_position
from expwatch.engine.snapshot import asleep_view
from expwatch.files import NotReadyYet
from expwatch.manifest import RunManifest
from expwatch.results.figures import (ProgressCache, ProgressFigures, figures_digest, figures_signatures, file_signature,
                                      read_figures)

if TYPE_CHECKING:
    from expwatch.engine.loop import EngineLoop


class StartAsleep:
    """Admits the finished runs of one start; owned by the engine thread."""

    def __init__(self, loop: "EngineLoop"):
        self.loop = loop
        self.unchanged = 0  # released by an earlier watcher, nothing changed since
        self.first_seen = 0
        self._figures_digest: str | None = None  # the figure readers' code and field map: figures saved under another are read again
        self._status: ProgressCache | None = None  # status's figures, left for its next call (loaded at the first run admitted)

    def admit(self, manifest: RunManifest, batch: dict[str, dict]) -> bool:
        """Register ``manifest``'s run asleep if it may be (see the module); False: watch it as usual.

        Its state, if it has to be saved, goes into ``batch`` for the caller's ``save_released``.
        """
        loop, now = self.loop, time.time()
        if not loop.dormancy.due(manifest, not loop.recovery.holds(manifest.name), now):
            return False
        saved = loop.store.run_data(manifest.name)
        asleep = saved.get("asleep")
        if asleep is not None:
            if asleep.get("digest") != self._digest() or self.signatures(manifest) != asleep.get("files"):
                return False
            figures = ProgressFigures.from_json(asleep.get("figures"))
            self._sleep(manifest, figures, now, asleep.get("last_incident"), asleep.get("last_cause"))
            self._for_status(manifest, asleep["files"], figures)
            self.unchanged += 1
            return True
        if saved:
            return False  # watched before and never released unchanged: read as a revival would be
        signatures = self.signatures(manifest)  # before the reads, so they are no newer than what those read
        crash = loop.settings.crash
        position = history_position(manifest.log, loop.crash_limits, int(crash["ending_read_bytes"]),
                                    int(loop.settings.tail.max_line_bytes))
        if position is None:
            return False
        try:
            figures = read_figures(manifest.result, manifest.checkpoint)
        except NotReadyYet:  # Unreadable too: the watched path reports why
            return False
        state = loop.persist.first_state(manifest, position)
        if signatures is not None:
            state["asleep"] = self._marker(signatures, figures, None, None)
            self._for_status(manifest, signatures, figures)
        batch[manifest.name] = state
        self._sleep(manifest, figures, now, None, None)
        loop.audit.record("run discovered", run=manifest.name, pid=manifest.pid, job_id=manifest.job_id, log=manifest.log,
                          asleep=True, done=figures.done if figures else None, expected=manifest.expected,
                          halted=manifest.halted.reason if manifest.halted else None)
        self.first_seen += 1
        return True

    def signatures(self, manifest: RunManifest) -> list[str | None] | None:
        """The run's files' signatures now; None if one changed too recently to be trusted."""
        racy_after = time.time_ns() - int(self.loop.settings.watch.status_cache_after_s * 1e9)
        found = [file_signature(path, racy_after) for path in (str(self.loop.layout.manifest_path(manifest.name)), manifest.log)]
        found += figures_signatures(manifest.result, manifest.checkpoint, racy_after)  # [2:]: what ProgressCache files figures under
        return None if any(racy for _, racy in found) else [signature for signature, _ in found]

    def marker(self, manifest: RunManifest, last_incident: str | None, last_cause: str | None) -> dict[str, Any] | None:
        """What a release saves so that the next start need not read the run.

        None when a file changed too recently, or the figures cannot be read as they are.
        """
        signatures = self.signatures(manifest)
        if signatures is None:
            return None
        try:
            figures = read_figures(manifest.result, manifest.checkpoint)
        except NotReadyYet:
            return None
        return self._marker(signatures, figures, last_incident, last_cause)

    def recorded(self) -> None:
        """The start's one line for every run admitted asleep."""
        count = self.first_seen + self.unchanged
        if self._status is not None:
            self._status.save()
        if count:
            self.loop.audit.record("runs asleep", count=count, unchanged=self.unchanged,
                                   note="finished long ago; watched again when their files change")

    def _for_status(self, manifest: RunManifest, signatures: list[str | None], figures: ProgressFigures | None) -> None:
        if self._status is None:
            self._status = ProgressCache(self.loop.layout, self.loop.settings.watch.status_cache_after_s)
        self._status.remember(manifest.name, manifest.result, manifest.checkpoint, signatures[2:], figures)

    def _digest(self) -> str:
        if self._figures_digest is None:
            self._figures_digest = figures_digest()
        return self._figures_digest

    def _marker(self, signatures: list[str | None], figures: ProgressFigures | None, last_incident: str | None,
                last_cause: str | None) -> dict[str, Any]:
        return {"files": signatures, "digest": self._digest(), "figures": figures.to_json() if figures else None,
                "last_incident": last_incident, "last_cause": last_cause}

    def _sleep(self, manifest: RunManifest, figures: ProgressFigures | None, now: float,
               last_incident: str | None, last_cause: str | None) -> None:
        view = asleep_view(manifest, figures, now, self.loop.stale_after_s(), last_incident, last_cause)
        self.loop.dormancy.release(manifest, view)

