"""The watcher's use of discovery: adopt (or suggest adopting) runs started by hand.

``watcher.discover`` only reads ``/proc``; this is where the ``discover``
setting decides what happens to what it found, and where the effect (a
manifest, which the watcher then picks up like any other) and its audit
record are made. The engine loop calls ``sweep`` once on start (before it
reads the manifests), then ``start``: a thread of its own sweeps every
``watch.safety_poll_s``, so a scan (bounded by ``discovery.budget_s``) never
holds up the engine thread.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from typing import Any, Callable

from expwatch.adoption import ProcessUnreadable, adopt_command_line, adopt_found, adopt_job, slurm_environment
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import ManifestCache, RunManifest, discover
from expwatch.settings import Settings
from expwatch.watcher.discover import DiscoveryConfig, WatcherSelf, scan
from expwatch.watcher.discover_slurm import SlurmUnavailable, scan_jobs



class RunDiscovery:
    def __init__(self, layout: ExperimentsLayout, settings: Settings, record: Callable[..., Any], console: Callable[[str], None]):
        self.layout = layout
        self.settings = settings
        self.mode = settings.discover  # one of adopt | suggest | off (configs/settings.schema.json)
        self.config = DiscoveryConfig.from_settings(settings)
        self._record = record
        self._console = console
        self._told: set[tuple[int, float]] = set()  # (pid, create_time) already suggested, or not adoptable
        self._quiet: dict[int, float] = {}  # pid found writing nothing under DIR (and old enough) -> when
        self._me: tuple[WatcherSelf, float] | None = None  # the watcher's own process, and when it was read
        self._told_jobs: set[str] = set()  # SLURM job ids already suggested
        self._resume_at = 0  # the pid a scan cut short by the time budget stopped at
        self._slurm_down_at: float | None = None  # when SLURM last could not be asked
        self._job_seen: dict[str, float] = {}  # job id -> when first found, to wait a while for its result file
        self._slurm_env = slurm_environment(settings)
        self._manifests = ManifestCache()  # each sweep parses only the manifests that changed
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self, every_s: float) -> None:
        """Sweep every ``every_s`` on a thread of its own.

        A /proc scan takes up to ``discovery.budget_s``; on the engine thread it
        held up every other run's lines that long. An adopted run's manifest
        reaches the engine loop as any other manifest does (a file event).
        """
        if self.mode == "off":
            return
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._every, args=(every_s,), name="discovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout=self.config.budget_s + 5)

    def _every(self, every_s: float) -> None:
        while not self._stopping.wait(every_s):
            try:
                self.sweep()
            except Exception as exc:  # discovery must never end: the next sweep tries again
                self._record("discovery failed", error=f"{type(exc).__name__}: {exc}")

    def sweep(self, manifests: list[RunManifest] | None = None) -> None:
        """``manifests``: the directory's, already read by the caller (start-up's survey), so not parsed twice."""
        if self.mode == "off":
            return
        manifests = discover(self.layout, self._manifests) if manifests is None else manifests
        self._sweep_processes(manifests)
        self._sweep_jobs(manifests)

    def _sweep_processes(self, manifests: list[RunManifest]) -> None:
        now = time.monotonic()
        self._quiet = {pid: at for pid, at in self._quiet.items() if now - at < self.config.recheck_s}
        if self._me is None or now - self._me[1] >= self.config.recheck_s:
            self._me = (WatcherSelf.read(), now)
        result = scan(self.layout.root, manifests, self.config, skip=frozenset(self._told), resume_at=self._resume_at,
                      quiet=frozenset(self._quiet), watcher=self._me[0])
        self._quiet.update(dict.fromkeys(result.quiet, now))
        if result.truncated and not self._resume_at:
            self._record("discovery truncated", budget_s=self.config.budget_s, stopped_at_pid=result.stopped_at,
                         note="the rest is read by the next safety polls")
        self._resume_at = result.stopped_at or 0
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
            env = {"value": {"overrides": sorted(manifest.env_overrides), "unset": list(manifest.env_unset)},
                   "source": f"/proc/{found.pid}/environ, as its difference from the watcher's"}
            self._record("run adopted", run=manifest.name, pid=found.pid, argv=list(manifest.argv), cwd=manifest.cwd,
                         manifest=str(path), inferred={**found.fields(), "env": env}, via="discovery")
            self._console(f"{manifest.name}: adopted pid {found.pid} (log {manifest.log}, expected {manifest.expected or '?'})")

    def _sweep_jobs(self, manifests: list[RunManifest]) -> None:
        """SLURM jobs with StdOut under DIR; skipped without squeue, and for a while after SLURM did not answer."""
        retry = self.settings.discovery["squeue_retry_s"]
        if shutil.which("squeue", path=self._slurm_env.get("PATH")) is None:
            return
        if self._slurm_down_at is not None and time.monotonic() - self._slurm_down_at < retry:
            return
        try:
            jobs = scan_jobs(self.layout.root, manifests, self.config, self._slurm_env,
                             self.settings.discovery["squeue_timeout_s"])
        except SlurmUnavailable as exc:
            if self._slurm_down_at is None:
                self._record("discovery: slurm unavailable", error=str(exc), retry_s=retry)
            self._slurm_down_at = time.monotonic()
            return
        self._slurm_down_at = None
        now = time.monotonic()
        for job in jobs:
            first = self._job_seen.setdefault(job.job_id, now)
            if job.job_id in self._told_jobs or self._result_pending(job.expected.value, job.result.value, now - first):
                continue
            if self.mode == "suggest":
                self._told_jobs.add(job.job_id)
                line = adopt_command_line(self.layout, job)
                self._record("run suggested", job_id=job.job_id, command=line, inferred=job.fields())
                self._console(f"found SLURM job {job.job_id} submitted by hand; to watch it: {line}")
                continue
            manifest, path = adopt_job(self.layout, self.settings, job)
            self._record("run adopted", run=manifest.name, job_id=job.job_id, job_state=job.state, argv=list(manifest.argv),
                         cwd=manifest.cwd, manifest=str(path), inferred=job.fields(), via="discovery")
            self._console(f"{manifest.name}: adopted SLURM job {job.job_id} (log {manifest.log})")

    def _result_pending(self, expected: int | None, result: str | None, waited_s: float) -> bool:
        """A job's item count may be in a result file it has not written yet: wait for it a while."""
        return expected is None and bool(result) and not os.path.exists(result) and waited_s < self.config.result_wait_s
