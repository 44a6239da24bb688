"""The engine loop: events in, the Decider decides, decisions out to actions.

Every threaded source (pidfd exits, probes, squeue, the polling observer,
incident threads, signals) only puts typed events on ``self.events``; file
changes seen by inotify are read by this loop itself (``Inbox``). This loop
is the only code that touches the Decider or changes per-run state, so none
of it needs locks and durable-rules is only ever called from here. Timers
(silence, settle windows, the safety poll) bound the Inbox's wait, so an
idle watcher sleeps. Anything that can block (dmesg, squeue, sbatch,
scancel, HTTP) runs on another thread and comes back as an event.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from expwatch import crashpoints
from expwatch.actions.context import ActionContext
from expwatch.autoadopt import RunDiscovery
from expwatch.actions.executor import IncidentClosed, IncidentExecutor
from expwatch.audit.log import AuditLog
from expwatch.engine.asleep import StartAsleep
from expwatch.engine.inbox import Inbox
from expwatch.engine.lock import DirectoryLock
from expwatch.engine.membership import RunMembership
from expwatch.engine.persist import RunStatePersistence
from expwatch.engine.probes import ProbeBoard
from expwatch.engine.reading import LogRead, log_lines, progress_of, quiet_lines
from expwatch.engine.progress_log import note_progress
from expwatch.engine.recording import DecisionRecorder
from expwatch.engine.recovery import Recovery
from expwatch.engine.reload import RulesReloader
from expwatch.engine.runs import RunTable, WatchedRun
from expwatch.engine.safety_poll import ROUND, STEP, SafetyPoll
from expwatch.engine.slurm_runs import SlurmRuns
from expwatch.engine.snapshot import PublishedViews, RunView, unreadable_views, views_of
from expwatch.engine.timers import Timers
from expwatch.files import Unreadable
from expwatch.layout import ExperimentsLayout
from expwatch.dormancy import Dormancy
from expwatch.problems import RunProblems
from expwatch.rules.decide import NOTHING, Decider, DecisionPolicy, Outcome
from expwatch.rules.engine import EngineError
from expwatch.rules.loader import load_rules
from expwatch.runners.registry import Runners
from expwatch.settings import Settings, load_settings
from expwatch.state import StateStore
from expwatch.watcher.coalesce import EventQueue
from expwatch.watcher.crash import CrashLimits
from expwatch.watcher.events import Crash, Deadline, FileChanged, LogLine, ProbeResult, ProcessExit, Progress, Shutdown
from expwatch.watcher.exits import ExitWaiter
from expwatch.watcher.observer import DirectoryWatch


class EngineLoop:
    def __init__(self, root: Path, dry_run: bool = False, console: Callable[[str], None] = print, settings: Settings | None = None):
        self.layout = ExperimentsLayout.at(root)
        self.settings = settings or load_settings(self.layout)
        self.dry_run = dry_run
        self.console = console
        self.events = EventQueue()  # a file already waiting to be read is not queued twice
        self.runs = RunTable()
        self.timers = Timers()
        self.runners = Runners(self.settings)
        self.audit_listeners: list[Callable[[dict[str, Any]], None]] = []  # attached before the first record
        self._manifest_locks: dict[str, threading.Lock] = {}  # one per run, shared by its incidents' threads
        self.published = PublishedViews(self.settings.watch.views_every_s, self._views_now, lambda wait: self.timers.arm("*", "views", wait))
        self.crash_limits = CrashLimits.from_settings(self.settings.crash)  # once, not per run added
        self.lock = DirectoryLock(self.layout, bool(self.settings.security.group_access))
        self.dormancy = Dormancy(self.layout, self.settings.watch.release_finished_s)
        self.problems = RunProblems(lambda *a, **k: self.audit.record(*a, **k), console)
        # Built here so a bad discovery setting is refused before watching starts.
        self.discovery = RunDiscovery(self.layout, self.settings, lambda event, **f: self.audit.record(event, **f), self.console)

    def claim(self) -> None:
        """Take DIR's watcher lock before anything is shown (raises AlreadyWatched); ``run`` keeps it."""
        self.lock.acquire()

    def views(self) -> tuple[RunView, ...]:
        """The latest snapshot the loop published (safe from any thread: an immutable tuple)."""
        return self.published.current

    # ----- lifecycle -------------------------------------------------------------

    def run(self) -> int:
        """Watch until Shutdown arrives; raises AlreadyWatched or RulesError before starting."""
        self.lock.acquire()
        crashpoints.arm(self.settings.testing.crash_at, self.settings.testing.crash_trace)
        self.decider = Decider(load_rules(self.layout.rules_path, set(self.settings.profiles)), DecisionPolicy.from_settings(self.settings))
        self.audit = AuditLog(self.layout.audit_path, int(self.settings.audit.max_bytes), int(self.settings.audit.backups))
        for listener in self.audit_listeners:
            self.audit.add_listener(listener)
        self.store = StateStore(self.layout.state_db)
        self.persist = RunStatePersistence(self.store)
        self.exits = ExitWaiter(self.events)
        self.files = DirectoryWatch(self.events, self.settings.watch.observer, self.settings.watch.polling_interval_s,
                                    ignore=self.layout.is_own_file, own_dirs=frozenset({self.layout.home_text}))
        self.executor = IncidentExecutor(self.store, self.audit, self._context, self.events.put, self.dry_run)
        self.recorder = DecisionRecorder(self.audit, self.store, self.executor, self.console, self.persist.state_of,
                                         lambda: self.decider.ruleset.digest)
        self.probes = ProbeBoard(self.events, self.settings, self.audit.record)
        self.slurm = SlurmRuns(self)
        self.members = RunMembership(self)
        self.asleep = StartAsleep(self)
        self.safety_poll = SafetyPoll(self, self.settings.watch.safety_poll_s, self.settings.watch.poll_step_s)
        self.reloader = RulesReloader(self.layout.rules_path, set(self.settings.profiles), self.audit, self.console)
        mode = self.files.watch(self.layout.root, recursive=True)
        self.files.start()
        self.exits.start()
        self.audit.record("watcher started", dir=str(self.layout.root), pid=os.getpid(), rules=self.decider.ruleset.source,
                          rules_digest=self.decider.ruleset.digest, observer=mode, dry_run=self.dry_run or None)
        # Read before discovery: each run claims its half-done incident before
        # anything about it is evaluated, and an incident a discovered run
        # decides at once (informational ones do) is this watcher's own.
        self.recovery = Recovery(self.store, self.audit, self.executor)
        # Runs started by hand get their manifest before the runs are added; the second survey
        # parses only the manifests the sweep wrote.
        self.discovery.sweep(self.members.survey())
        released: dict[str, dict] = {}  # their state, saved in one transaction rather than one per run
        for manifest in self.members.survey():
            if self.asleep.admit(manifest, released):
                continue
            self.members.add(manifest)
            self.members.release_if_due(manifest.name, released)  # long-finished runs hold no descriptor past their first read
        self.store.save_released(released)
        self.asleep.recorded()
        self.recovery.resume(self.runs)
        self.discovery.start(self.settings.watch.safety_poll_s)
        self.safety_poll.arm()
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        self.executor.stop.set()
        self.discovery.stop()
        # Decide incidents still collecting evidence, so their lines are not
        # matched a second time by the next watcher; their actions (stopped
        # before the first step) are then resumed by it.
        for run in self.runs:
            self._settle(run, stopping=True)
        self.executor.join(timeout=self.settings.kill.grace_s + 5)
        self.probes.stop()
        self.slurm.stop()
        self.files.stop()
        self.exits.stop()
        for run in self.runs:
            self.persist.save(run)
            run.tailer.close()
        self.audit.record("watcher stopped", dir=str(self.layout.root))
        self.audit.close()
        self.store.close()
        self.events.close()
        self.lock.release()

    def _loop(self) -> None:
        # What start-up built (rules, manifests, durable-rules' sessions) lives as long as the watcher: frozen,
        # a full collection no longer walks it (one stalled the engine 36 ms at 100 runs, a latency's maximum).
        gc.collect()
        gc.freeze()
        inbox = Inbox(self.files, self.events, self.timers, self.settings.watch.read_interval_s)
        while True:
            files, events = inbox.wait()
            for path, appended in files:
                self._on_file(path, appended)
            for event in events:
                if isinstance(event, Shutdown):
                    return
                self._dispatch(event)
            for deadline in self.timers.due():
                self._dispatch(deadline)
            self.published.publish()

    def _views_now(self, now: float) -> tuple[RunView, ...]:
        return views_of(self.runs, now, self.stale_after_s()) + tuple(self.dormancy.views()) + unreadable_views(self.problems, self.runs)

    def _dispatch(self, event: Any) -> None:
        if isinstance(event, FileChanged):
            self._on_file(str(event.path), event.appended)
        elif isinstance(event, ProcessExit):
            self.on_exit(event)
        elif isinstance(event, Deadline):
            self._on_deadline(event)
        elif isinstance(event, IncidentClosed):
            self._on_incident_closed(event)
        elif isinstance(event, ProbeResult):
            self._on_probe(event)
        elif self.slurm.handles(event):
            self.slurm.on_event(event)

    # ----- timers ------------------------------------------------------------------

    def arm_silence(self, run: WatchedRun) -> None:
        """One lazy timer per run at the next silence threshold it could cross."""
        facts = run.facts
        if not facts.alive or facts.last_log_at is None or run.finished:
            return
        now = time.time()
        due = next((facts.last_log_at + t for t in self.decider.ruleset.silence_thresholds() if facts.last_log_at + t > now), None)
        if due is None or (run.silence_at is not None and now < run.silence_at <= due):
            return
        run.silence_at = due
        self.timers.arm(run.name, "silence", due - now)

    def _on_deadline(self, deadline: Deadline) -> None:
        if deadline.purpose == ROUND:
            self.safety_poll.begin()
            return
        if deadline.purpose == STEP:
            self.safety_poll.step()
            return
        if deadline.purpose == "save":
            if not self.persist.save_due(self.runs, time.monotonic() + self.settings.watch.poll_step_s):
                self.timers.arm("*", "save", 0.0)
            return
        run = self.runs.get(deadline.run)
        if run is None:
            return
        if deadline.purpose == "silence":
            run.silence_at = None
            self.evaluate(run)
            self.arm_silence(run)
        elif deadline.purpose == "settle":
            self._settle(run)
        elif deadline.purpose == "recheck":
            self.evaluate(run)

    # ----- runs --------------------------------------------------------------------

    def stale_after_s(self) -> float:
        return self.decider.ruleset.stale_after_s(self.settings.watch.stale_fallback_s)

    def _on_file(self, text: str, appended: bool = False) -> None:
        """``appended``: inotify saw only writes, so the log's reader may skip checking for a rotation."""
        owners = self.runs.owning(text)  # first: nearly every event is a watched run's log
        asleep = self.dormancy.owner(text)
        if asleep is not None:
            self.members.on_manifest(self.layout.manifest_path(asleep))  # a released run's file changed: watch it again
        if owners:
            for run in owners:
                if text == run.manifest.log:
                    self.read_log(run, appended=appended)
                else:
                    self.read_progress(run)
        elif self.slurm.is_completion_file(text):
            self.slurm.read_completions()
        elif text == self.layout.rules_path_text:
            self._reload_rules()
        elif self.layout.is_manifest(text):
            self.members.on_manifest(Path(text))

    # ----- sources → facts ---------------------------------------------------------

    def read_log(self, run: WatchedRun, replay: bool = False, until: int | None = None, appended: bool = False) -> int:
        """``appended``: inotify saw only writes to the log since its last read (``FileChanged.appended``)."""
        count, counted = quiet_lines(run, self.decider.classifier.live_prefilter) if appended else None, False
        if count is None:
            read, prefilter = LogRead(), self.decider.classifier.prefilter if replay else self.decider.classifier.live_prefilter
            for line in log_lines(run, replay, prefilter, read, until, appended):
                counted = self.on_line(run, line) or counted
            for note in read.notes:
                self.audit.record("log file changed", run=run.name, file=run.manifest.log, note=note)
            count = read.count
        # A line that counted is saved at once, or a crash would count it twice; others in batches.
        if counted:
            self.persist.save(run)
        elif count and self.persist.save_later(run):
            self.timers.arm("*", "save", self.settings.watch.position_save_s)
        return count

    def on_line(self, run: WatchedRun, line: LogLine) -> bool:
        outcome = self._contained(run, lambda: self.decider.on_line(
            run.name, run.decisions, run.facts, line.text, time.time(), {"file": line.path, "offset": line.offset, "line": line.text},
            replay=line.replay, finished=run.finished))
        self._carry_out(run, outcome)
        crashes = run.crashes.feed(line.text, line.offset) if not line.replay else ()
        for crash in crashes:
            self.on_crash(run, crash)
        return outcome.counted or bool(crashes)

    def on_crash(self, run: WatchedRun, crash: Crash) -> None:
        outcome = self._contained(run, lambda: self.decider.on_crash(
            run.name, run.decisions, run.facts, crash, time.time(), {"file": run.manifest.log, "offset": crash.offset},
            finished=run.finished))
        self._carry_out(run, outcome)

    def read_progress(self, run: WatchedRun) -> None:
        try:
            progress = progress_of(run)
        except Unreadable as exc:
            self.problems.report("run file unreadable", run.name, exc.path, exc.reason)
            return
        self.problems.clear(run.name, run.manifest.result, run.manifest.checkpoint)
        if progress is None:
            return
        self._on_progress(run, progress)

    def _on_progress(self, run: WatchedRun, p: Progress) -> None:
        f = run.facts
        if (p.done, p.null_reasons) != (f.done, f.null_reasons):
            f.done, f.null_reasons, f.correct = p.done, dict(p.null_reasons), p.correct
            self.evaluate(run)
        note_progress(run, self.audit, self.settings.audit.progress_every_s)

    def on_exit(self, event: ProcessExit) -> None:
        run = self.runs.get(event.run)
        if run is None:
            return
        if (event.job_id or None, event.pid) != (run.manifest.job_id, None if event.job_id else run.manifest.pid):
            return  # an earlier process or job of this run
        if run.facts.alive is False and run.facts.job_state == event.job_state and event.job_id:
            return  # the completion record and the poll both saw this job end
        self.runners.local.reap()  # if this watcher started it
        self.read_log(run)
        for crash in run.crashes.flush():  # nothing more will be written: an open traceback is complete
            self.on_crash(run, crash)
        self.read_progress(run)
        run.facts.exited(event)
        self.audit.record("process exited", run=run.name, pid=event.pid, job_id=event.job_id, job_state=event.job_state,
                          node=event.node, returncode=event.returncode, signal=event.signal, oom_killed=run.facts.oom_killed or None)
        self.evaluate(run)

    def _on_probe(self, event: ProbeResult) -> None:
        since, started = self.probes.on_result(event)
        for run in self.runs:
            if (run.manifest.profile or self.settings.default_profile) == event.profile:
                run.facts.probe_failing_since = since
                self.evaluate(run)
                for threshold in self.decider.ruleset.probe_thresholds() if started else ():
                    self.timers.arm(run.name, "recheck", threshold)

    # ----- deciding ----------------------------------------------------------------

    def evaluate(self, run: WatchedRun, if_changed: bool = False) -> None:
        if run.finished:
            return
        self._carry_out(run, self._contained(run, lambda: self.decider.evaluate(
            run.name, run.decisions, run.facts, time.time(), if_changed=if_changed)))

    def _contained(self, run: WatchedRun, decide: Callable[[], Outcome]) -> Outcome:
        """A durable-rules refusal for one run is that run's audited problem; the other runs go on."""
        try:
            return decide()
        except EngineError as exc:
            self.problems.report("rule engine error", run.name, None, str(exc))
            return NOTHING

    def _carry_out(self, run: WatchedRun, outcome: Outcome) -> None:
        self.recorder.carry_out(run, outcome)
        if outcome.settle_at is not None:
            self.timers.arm(run.name, "settle", max(0.0, outcome.settle_at - time.time()))

    def _settle(self, run: WatchedRun, stopping: bool = False) -> None:
        now = time.time()
        if run.decisions.collecting and run.crashes.reading:
            # A traceback the log went quiet after is complete; one still being written is waited for (bounded).
            last = run.facts.last_log_at
            quiet = self.decider.crash_quiet(None if last is None else now - last, run.crashes.unfinished)
            if not quiet and not stopping and self.decider.settle_waits(run.decisions, True, now):
                self.timers.arm(run.name, "settle", self.decider.policy.settle_s)
                return
            for crash in run.crashes.flush():
                self.on_crash(run, crash)
        if not stopping and self.decider.awaits_exit(run.decisions, bool(run.facts.alive), now):
            self.timers.arm(run.name, "settle", self.decider.policy.settle_s)
            return
        if (survived := self.decider.carried_on(run.decisions, run.facts)) is not None:
            self.recorder.survived(run, survived)
            return
        decision = self.decider.settle(run.decisions, run.facts.done, time.time())
        if decision is not None:
            self.recorder.decided(run, decision)

    def _on_incident_closed(self, event: IncidentClosed) -> None:
        run = self.runs.get(event.run)
        if run is None:
            return
        if run.last_incident and event.incident == run.last_incident_id:
            run.last_incident = f"{run.last_incident.split(':')[0]}: {event.outcome}"
        self.members.on_manifest(self.layout.manifest_path(run.name))  # first: a restart's manifest says where its lines begin
        after = self.decider.closed(run.decisions, event.incident, event.outcome, time.time(), run.manifest.log_from)
        if after is not None:
            self._carry_out(run, after)
            self.persist.save(run)
            self.evaluate(run)

    def _context(self, row) -> ActionContext:
        return ActionContext(
            layout=self.layout, settings=self.settings, runners=self.runners, audit=self.audit, run=row.run,
            manifest_lock=self._manifest_locks.setdefault(row.run, threading.Lock()),
            incident=row.id, rule=row.rule, evidence=row.context, stop=self.executor.stop, console=self.console,
        )

    def _reload_rules(self) -> None:
        self.decider = self.reloader.reload(self.decider, self.runs)
