"""Which runs the engine loop watches: added as manifests appear, lost as they go, released when long finished.

A manifest's arrival, change or removal changes the run table; a finished
run with nothing in hand is released (expwatch/dormancy.py) and comes back
when its files change. Unusable manifests are audited once per reason and
never acted on. Everything here runs on the engine thread.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from expwatch.engine.reading import history_end
from expwatch.engine.runs import WatchedRun
from expwatch.engine.snapshot import view_of
from expwatch.files import NotReadyYet
from expwatch.manifest import ManifestCache, ManifestError, RunManifest, SurveyRound
from expwatch.processes import verified_process
from expwatch.rules.facts import RunFacts
from expwatch.trust import UntrustedFile
from expwatch.watcher.crash import CrashAssembler
from expwatch.watcher.tail import LogTailer

if TYPE_CHECKING:
    from expwatch.engine.loop import EngineLoop


class RunMembership:
    def __init__(self, loop: "EngineLoop"):
        self.loop = loop
        self._manifests = ManifestCache()  # the safety poll's survey parses only the manifests that changed
        self._inside: dict[str, bool] = {}  # a run file's folder -> whether it resolves inside DIR (else watched on its own)

    def add(self, manifest: RunManifest) -> None:
        self.loop.dormancy.wake(manifest.name)
        position = self.loop.persist.saved_position(manifest.name)
        tailer = LogTailer(Path(manifest.log), position, int(self.loop.settings.tail.max_line_bytes))
        now = time.time()
        decisions, latched_for = self.loop.persist.restore(manifest)
        run = WatchedRun(manifest, tailer, RunFacts(self.loop.decider.ruleset, started_at=now), decisions, latched_for,
                         crashes=CrashAssembler(self.loop.crash_limits))
        self.loop.runs.add(run)
        self.loop.recovery.claim(run, self.loop.decider)
        for folder in {os.path.dirname(p) for p in (manifest.log, manifest.result, manifest.checkpoint) if p}:
            if folder in self._inside:
                continue  # resolved and, outside DIR, watched once per folder: a lab's runs share a few
            inside = Path(folder).resolve().is_relative_to(self.loop.layout.root)
            if not inside:
                Path(folder).mkdir(parents=True, exist_ok=True)
                self.loop.files.watch(Path(folder), recursive=False)
            self._inside[folder] = inside
        run.facts.expected = manifest.expected
        run.facts.alive = self.alive(run)
        self.loop.audit.record("run discovered", run=manifest.name, pid=manifest.pid, job_id=manifest.job_id,
                          job_state=run.facts.job_state, alive=run.facts.alive, log=manifest.log,
                          resumed_at_offset=position.offset if position else None,
                          halted=manifest.halted.reason if manifest.halted else None)
        if position is None:
            # No watcher has read this log: what is in it is history, up to a crash it ends inside.
            until = history_end(manifest.log, self.loop.crash_limits, int(self.loop.settings.crash["ending_read_bytes"]))
            replayed = self.loop.read_log(run, replay=True, until=until)
            if replayed:
                self.loop.audit.record("history read", run=manifest.name, lines=replayed, note="old lines rebuild counters, trigger nothing")
        self.loop.read_log(run)
        if run.facts.alive:
            try:
                run.facts.last_log_at = os.stat(manifest.log).st_mtime
            except OSError:  # not yet written, or not to be looked at (a symlink loop): its silence starts now
                run.facts.last_log_at = now
            self.watch_exit(run)
        elif not run.finished:
            # It died while no watcher ran: nothing more will be written, so a traceback its log ends
            # with is complete, and it is the cause (found by the crash sweep: it was decided as a bare DEAD).
            for crash in run.crashes.flush():
                self.loop.on_crash(run, crash)
        self.loop.read_progress(run)
        self.loop.probes.ensure(manifest.profile)
        self.loop.evaluate(run)
        self.loop.arm_silence(run)


    def alive(self, run: WatchedRun) -> bool:
        """Local runs: the process lives. SLURM runs: assumed alive until squeue (asked off this thread) says otherwise."""
        m = run.manifest
        if m.job_id:
            self.loop.slurm.poll([run])
            return True
        return verified_process(m.pid, m.create_time) is not None if m.pid else False


    def watch_exit(self, run: WatchedRun) -> None:
        m = run.manifest
        if m.job_id:
            self.loop.exits.forget(m.name)
            self.loop.slurm.follow_completions()
        else:
            self.loop.exits.watch(m.name, m.pid, m.create_time, self.loop.layout.exit_path(m.name))


    def survey(self) -> list[RunManifest]:
        """The usable manifests, all at once."""
        whole = self.survey_round()
        whole.take()
        return self.surveyed(whole)

    def survey_round(self) -> SurveyRound:
        """A pass over the manifests to take in steps; released runs' manifests are parsed only when they changed."""
        return SurveyRound(self.loop.layout, skip=self.loop.dormancy.unchanged, cache=self._manifests)

    def surveyed(self, done: SurveyRound) -> list[RunManifest]:
        """A finished pass's usable manifests; each unusable one is audited once per reason."""
        self.loop.dormancy.forget_missing(done.seen)
        for bad in done.broken:
            self.loop.problems.report("manifest refused" if bad.untrusted else "manifest unreadable", bad.name, bad.path, bad.reason)
        for manifest in done.found:
            self.loop.problems.clear(manifest.name, self.loop.layout.manifest_path(manifest.name))
        return done.found


    def release_if_due(self, name: str, batch: dict[str, dict] | None = None) -> None:
        """A run finished long enough ago, with nothing in hand, lets go of its files and memory (expwatch/dormancy.py).

        Its state (what a revival resumes from) is saved now, or put in ``batch`` for the caller's ``save_released``.
        """
        run = self.loop.runs.get(name)
        if run is None or not self.loop.dormancy.due(run.manifest, run.decisions.incident is None and not run.decisions.side_incidents, time.time()):
            return
        state = self.loop.persist.state_of(run)
        marker = self.loop.asleep.marker(run.manifest, run.last_incident, run.last_cause)
        if marker is not None:
            state["asleep"] = marker  # the next start need not read it while its files stay as they are
        if batch is None:
            self.loop.store.save_released({name: state})
        else:
            batch[name] = state
        run.tailer.close()
        self.loop.runs.pop(name)
        self.loop.exits.forget(name)
        self.loop.dormancy.release(run.manifest, view_of(run, time.time(), self.loop.stale_after_s()))
        self.loop.audit.record("run released", run=name, note="finished; watched again when its files change")


    def lose(self, name: str) -> None:
        self.loop.runs.pop(name)
        self.loop.exits.forget(name)
        self.loop.audit.record("run lost", run=name)


    def on_manifest(self, path: Path) -> None:
        """A manifest was written, replaced or removed, or may have been (an incident closed: a restart rewrites it).

        Read through the survey's cache: a manifest whose file is unchanged
        since it was last read is the run's own, and nothing follows from it
        (each closed incident read and parsed it again, most of an informational
        incident's cost at 100 chatty runs).
        """
        name = path.stem
        try:
            manifest = self._manifests.load(str(path))
        except FileNotFoundError:
            if name in self.loop.runs:
                self.lose(name)
            return
        except (NotReadyYet, ManifestError) as exc:
            # Never acted on; retried on the next event or safety poll. A watched run keeps its last good manifest.
            self.loop.problems.report("manifest refused" if isinstance(exc, UntrustedFile) else "manifest unreadable", name, path, str(exc))
            return
        self.loop.problems.clear(name, path)
        if name in self.loop.dormancy:
            self.add(self.loop.dormancy.manifest(name))  # revived as it slept; the new manifest is compared below
        run = self.loop.runs.get(manifest.name)
        if run is None:
            self.add(manifest)
            return
        if manifest is run.manifest:
            return
        old, run.manifest = run.manifest, manifest
        self.loop.runs.files_changed()
        run.facts.expected = manifest.expected
        if (manifest.pid, manifest.create_time, manifest.job_id) != (old.pid, old.create_time, old.job_id) and (manifest.pid or manifest.job_id):
            run.facts.new_process(time.time())
            self.loop.decider.new_process(run.decisions)
            run.facts.alive = self.alive(run)
            self.watch_exit(run)
            self.loop.arm_silence(run)
        if old.halted and not manifest.halted:
            self.loop.decider.resumed(run.decisions)
            self.loop.audit.record("run resumed", run=run.name)
        self.loop.probes.ensure(manifest.profile)
        self.loop.persist.save(run)

