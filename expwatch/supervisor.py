"""The engine thread: one queue in, rules decide, incidents out to actions.

Every source (watchdog, pidfd exits, probes, incident threads, signals)
only puts typed events on ``self.events``; this loop is the only code that
reads files of runs, touches the rules engine or changes per-run state, so
none of it needs locks and durable-rules is only ever called from here.
Timers (silence, settle windows, the safety poll) are a heap consulted by
the queue's ``get(timeout=...)``, so an idle watcher sleeps.
"""

from __future__ import annotations

import fcntl
import heapq
import itertools
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from expwatch.actions.context import ActionContext
from expwatch.actions.executor import IncidentExecutor
from expwatch.audit.log import AuditLog
from expwatch.dormancy import Dormancy
from expwatch.files import NotReadyYet
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import ManifestError, RunManifest, discover, load_manifest
from expwatch.results.progress import read_progress
from expwatch.rules.classify import LineClassifier
from expwatch.rules.engine import RuleEngine
from expwatch.rules.facts import RunFacts
from expwatch.rules.guard import GuardLimits, GuardState, judge, record_restart, reset
from expwatch.rules.incidents import Incident, new_incident_id
from expwatch.rules.loader import RulesError, load_rules
from expwatch.rules.model import INFORMATIONAL_ACTIONS, Rule
from expwatch.processes import verified_process
from expwatch.runners.registry import Runners
from expwatch.runners.slurm import JobState, SlurmError
from expwatch.runstate import RunObservation, classify, log_age
from expwatch.settings import Settings, load_settings
from expwatch.state import IncidentRow, StateStore
from expwatch.watcher.coalesce import EventQueue
from expwatch.watcher.events import ActionDone, Deadline, FileChanged, ProbeResult, ProcessExit, Shutdown
from expwatch.watcher.exits import ExitWaiter
from expwatch.watcher.jobcomp import JobCompFollower
from expwatch.kernel_log import oom_killed
from expwatch.watcher.observer import DirectoryWatch
from expwatch.watcher.probe import Prober, expand
from expwatch.watcher.tail import LogTailer, TailLine, TailPosition


# State-store key of SLURM's completion file position (run names cannot contain '<').
JOBCOMP_KEY = "<jobcomp>"


class AlreadyWatched(Exception):
    pass


@dataclass(frozen=True)
class RunView:
    """What a display needs of one run, copied out of the engine thread's state."""

    name: str
    state: str
    done: int
    expected: int | None
    correct: int
    null_count: int
    log_age_s: float | None
    restarts: int
    pid: int | None
    alive: bool
    last_incident: str | None
    job: str | None = None  # SLURM runs: "job 12 RUNNING on node1"


@dataclass
class WatchedRun:
    manifest: RunManifest
    tailer: LogTailer
    facts: RunFacts
    guard: GuardState = field(default_factory=GuardState)
    latches: set[str] = field(default_factory=set)
    latched_for: tuple[int | None, float | None] | None = None  # (pid, create_time) the latches were judged against
    incident: Incident | None = None  # the failure being handled; one at a time
    side_incidents: set[str] = field(default_factory=set)  # informational ones (alerts, completion)
    silence_at: float | None = None
    last_incident: str | None = None  # "RULE: outcome", for displays
    last_incident_id: str | None = None
    saved_at: float = 0.0  # when its state was last written to the store
    progress_noted: tuple[int, int] | None = None  # (done, restarts) of the last `progress` record
    progress_noted_at: float = 0.0

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def finished(self) -> bool:
        m = self.manifest
        return bool(m.halted or m.stopped_at or m.completed_at)


class Supervisor:
    def __init__(self, root: Path, dry_run: bool = False, console: Callable[[str], None] = print, settings: Settings | None = None):
        self.layout = ExperimentsLayout.at(root)
        self.settings = settings or load_settings(self.layout)
        self.dry_run = dry_run
        self.console = console
        self.events: queue.Queue = EventQueue()  # a file already waiting to be read is not queued twice
        self.runs: dict[str, WatchedRun] = {}
        self._timers: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._tokens: dict[tuple[str, str], int] = {}
        self._probers: dict[str, Prober] = {}
        self._probe_failing: dict[str, float] = {}
        self._unprobed: set[str] = set()
        self._by_path: dict[str, list[WatchedRun]] | None = None  # file → runs, rebuilt when runs change
        self._manifest_locks: dict[str, threading.Lock] = {}  # one per run, shared by its incidents' threads
        self._jobcomp: JobCompFollower | None = None  # SLURM's completion file, once a SLURM run is watched
        self._jobcomp_path: Path | None = None
        self._leftovers: list[IncidentRow] = []  # unfinished incidents found at start, until resumed
        self.runners = Runners(self.settings)
        self.audit_listeners: list[Callable[[dict[str, Any]], None]] = []  # attached before the first record
        self.dormancy = Dormancy(self.layout, self.settings.number("watch.release_finished_s"))
        self.limits = GuardLimits(
            int(self.settings.number("guard.same_rule_limit")),
            int(self.settings.number("guard.restart_budget")),
            self.settings.number("guard.restart_window_s"),
        )

    # ----- lifecycle -------------------------------------------------------------

    def views(self) -> list[RunView]:
        """A consistent-enough copy of every run for a display thread (reads only)."""
        now = time.time()
        return [self._view(run, now) for run in list(self.runs.values())] + self.dormancy.views()

    def _view(self, run: WatchedRun, now: float) -> RunView:
        stale = (self.ruleset.silence_thresholds() or [self.settings.number("watch.stale_fallback_s")])[0]
        f, m = run.facts, run.manifest
        age = now - f.last_log_at if f.last_log_at is not None else log_age(m.log, now)
        obs = RunObservation(alive=bool(f.alive), done=f.done, expected=m.expected, log_age_s=age,
                             halted=m.halted is not None, stopped=m.stopped_at is not None,
                             exit_code=f.exit_code, pending=f.job_state == "PENDING")
        job = f"job {m.job_id} {f.job_state or ''}".rstrip() if m.job_id else None
        return RunView(m.name, classify(obs, stale).value, f.done, m.expected, f.correct,
                       sum(f.null_reasons.values()), age, m.restarts, m.pid, bool(f.alive), run.last_incident, job)

    def _lock(self) -> None:
        self.layout.home.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.layout.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._lock_fd)
            raise AlreadyWatched(f"another expwatch (pid {holder}) is already watching {self.layout.root}") from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)

    def run(self) -> int:
        """Watch until Shutdown arrives; raises AlreadyWatched or RulesError before starting."""
        self._lock()
        self.ruleset = load_rules(self.layout.rules_path, set(self.settings.profiles))
        self.engine = RuleEngine(self.ruleset)
        self.classifier = LineClassifier(self.ruleset)
        self.audit = AuditLog(self.layout.audit_path, int(self.settings.number("audit.max_bytes")), int(self.settings.number("audit.backups")))
        for listener in self.audit_listeners:
            self.audit.add_listener(listener)
        self.store = StateStore(self.layout.state_db)
        self.exits = ExitWaiter(self.events)
        self.files = DirectoryWatch(self.events, self.settings.get("watch.observer"), self.settings.number("watch.polling_interval_s"),
                                    ignore=self._own_write, gather_s=self.settings.number("watch.inotify_gather_s"))
        self.executor = IncidentExecutor(self.store, self.audit, self._context, self.events.put, self.dry_run)
        mode = self.files.watch(self.layout.root, recursive=True)
        self.files.start()
        self.exits.start()
        self.audit.record("watcher started", dir=str(self.layout.root), pid=os.getpid(), rules=self.ruleset.source,
                          rules_digest=self.ruleset.digest, observer=mode, dry_run=self.dry_run or None)
        # Taken before discovery: each run claims its half-done incident before
        # anything about it is evaluated, and an incident a discovered run
        # decides at once (informational ones do) is this watcher's own.
        self._leftovers = self.store.unfinished_incidents()
        for manifest in discover(self.layout):
            self._add_run(manifest)
            self._release_if_due(manifest.name)  # long-finished runs hold no descriptor past their first read
        self._reconcile()
        self._arm("*", "poll", self.settings.number("watch.safety_poll_s"))
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        self.executor.stop.set()
        # Decide incidents still collecting evidence, so their lines are not
        # matched a second time by the next watcher; their actions (stopped
        # before the first step) are then resumed by it.
        for run in self.runs.values():
            if run.incident and not run.incident.acting:
                self._settle(run)
        self.executor.join(timeout=self.settings.number("kill.grace_s") + 5)
        for prober in self._probers.values():
            prober.stop()
        self.files.stop()
        self.exits.stop()
        for run in self.runs.values():
            self._save(run)
            run.tailer.close()
        self.audit.record("watcher stopped", dir=str(self.layout.root))
        self.audit.close()
        self.store.close()
        os.close(self._lock_fd)

    def _loop(self) -> None:
        while True:
            timeout = max(0.0, self._timers[0][0] - time.time()) if self._timers else None
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                event = None
            if isinstance(event, Shutdown):
                return
            if event is not None:
                self._dispatch(event)
            now = time.time()
            while self._timers and self._timers[0][0] <= now:
                _, _, deadline = heapq.heappop(self._timers)
                self._dispatch(deadline)

    def _dispatch(self, event: Any) -> None:
        if isinstance(event, FileChanged):
            self._on_file(event.path)
        elif isinstance(event, ProcessExit):
            self._on_exit(event)
        elif isinstance(event, Deadline):
            self._on_deadline(event)
        elif isinstance(event, ActionDone):
            self._on_action_done(event)
        elif isinstance(event, ProbeResult):
            self._on_probe(event)

    # ----- timers ------------------------------------------------------------------

    def _arm(self, run: str, purpose: str, delay: float) -> None:
        token = self._tokens.get((run, purpose), 0) + 1
        self._tokens[(run, purpose)] = token
        heapq.heappush(self._timers, (time.time() + delay, next(self._seq), Deadline(run, purpose, token)))

    def _current(self, deadline: Deadline) -> bool:
        return self._tokens.get((deadline.run, deadline.purpose)) == deadline.token

    def _arm_silence(self, run: WatchedRun) -> None:
        """One lazy timer per run at the next silence threshold it could cross."""
        facts = run.facts
        if not facts.alive or facts.last_log_at is None or run.finished:
            return
        now = time.time()
        due = next((facts.last_log_at + t for t in self.ruleset.silence_thresholds() if facts.last_log_at + t > now), None)
        if due is None or (run.silence_at is not None and run.silence_at <= due and run.silence_at > now):
            return
        run.silence_at = due
        self._arm(run.name, "silence", due - now)

    def _on_deadline(self, deadline: Deadline) -> None:
        if not self._current(deadline):
            return
        if deadline.purpose == "poll":
            self._safety_poll()
            self._arm("*", "poll", self.settings.number("watch.safety_poll_s"))
            return
        run = self.runs.get(deadline.run)
        if run is None:
            return
        if deadline.purpose == "silence":
            run.silence_at = None
            self._evaluate(run)
            self._arm_silence(run)
        elif deadline.purpose == "settle":
            self._settle(run)
        elif deadline.purpose == "recheck":
            self._evaluate(run)

    def _safety_poll(self) -> None:
        # Released runs' manifests are parsed only when they changed (expwatch/dormancy.py).
        manifests, known = self.dormancy.discover()
        for manifest in manifests:
            if manifest.name in self.dormancy:
                self._on_manifest(self.layout.manifest_path(manifest.name))
            elif manifest.name not in self.runs:
                self._add_run(manifest)
        for name in list(self.runs):
            if name not in known and not self.layout.manifest_path(name).exists():
                self._lose_run(name)
                continue
            run = self.runs[name]
            self._read_log(run)
            self._read_progress(run)
            self._evaluate(run)
            self._release_if_due(name)
        self._poll_jobs()

    # ----- runs --------------------------------------------------------------------

    def _add_run(self, manifest: RunManifest) -> None:
        self.dormancy.wake(manifest.name)
        saved = self.store.run_data(manifest.name)
        position = TailPosition(**saved["position"]) if saved.get("position") else None
        tailer = LogTailer(Path(manifest.log), position, int(self.settings.number("tail.max_line_bytes")))
        now = time.time()
        run = WatchedRun(manifest, tailer, RunFacts(self.ruleset, started_at=now))
        if saved.get("guard"):
            g = saved["guard"]
            run.guard = GuardState(g["last_rule"], g["streak"], g["done_at_last"], tuple(g["restarts"]))
        # Latches hold for the process they were judged against: a run restarted
        # while no watcher saw its new process must not have that one's death hidden.
        this_process = [manifest.pid, manifest.create_time]
        if saved.get("latches_for", this_process) == this_process:
            run.latches = set(saved.get("latches", []))
            run.latched_for = (manifest.pid, manifest.create_time)
        self.runs[manifest.name] = run
        self._by_path = None
        self._claim_leftovers(run)
        for path in (manifest.log, manifest.result, manifest.checkpoint):
            if path and not Path(path).resolve().is_relative_to(self.layout.root):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.files.watch(Path(path).parent, recursive=False)
        run.facts.expected = manifest.expected
        alive = self._is_alive(run)
        run.facts.alive = alive
        self.audit.record("run discovered", run=manifest.name, pid=manifest.pid, job_id=manifest.job_id,
                          job_state=run.facts.job_state, alive=alive, log=manifest.log,
                          resumed_at_offset=position.offset if position else None,
                          halted=manifest.halted.reason if manifest.halted else None)
        replayed = self._read_log(run, replay=position is None)
        if replayed and position is None:
            self.audit.record("history read", run=manifest.name, lines=replayed, note="old lines rebuild counters, trigger nothing")
        if alive:
            run.facts.last_log_at = os.stat(manifest.log).st_mtime if os.path.exists(manifest.log) else now
            self._watch_exit(run)
        self._read_progress(run)
        self._ensure_probe(run)
        self._evaluate(run)
        self._arm_silence(run)

    def _lose_run(self, name: str) -> None:
        run = self.runs.pop(name)
        self._by_path = None
        self.exits.forget(name)
        self.engine.forget(name)
        run.tailer.close()
        self.audit.record("run lost", run=name)

    def _release_if_due(self, name: str) -> None:
        """A run finished long enough ago, with nothing in hand, lets go of its files and memory (expwatch/dormancy.py)."""
        run = self.runs.get(name)
        if run is None or not self.dormancy.due(run.manifest, run.incident is None and not run.side_incidents, time.time()):
            return
        self._save(run)  # before the tailer closes: its position is what a revival resumes from
        run.tailer.close()
        self.exits.forget(name)
        self.engine.forget(name)
        self.store.forget_written(name)
        del self.runs[name]
        self._by_path = None
        self.dormancy.release(run.manifest, self._view(run, time.time()))
        self.audit.record("run released", run=name, note="finished; watched again when its files change")

    def _save(self, run: WatchedRun) -> None:
        if run.incident and not run.incident.acting:
            return  # lines of an undecided incident are read again after a crash
        run.saved_at = time.time()
        self.store.save_run(run.name, {"position": asdict(run.tailer.position), "guard": asdict(run.guard), "latches": sorted(run.latches),
                                       "latches_for": list(run.latched_for) if run.latched_for else None})

    def _own_write(self, path: Path) -> bool:
        """Audit, state and lock files under .expwatch/: every record would be an event to discard.

        Called on watchdog's thread; it reads only the immutable layout.
        """
        return path.parent == self.layout.home or (path.parent == self.layout.runs_dir and not self.layout.is_manifest(path))

    def _runs_for(self, path: Path) -> list[WatchedRun]:
        if self._by_path is None:
            index: dict[str, list[WatchedRun]] = {}
            for run in self.runs.values():
                for watched in {run.manifest.log, run.manifest.result, run.manifest.checkpoint} - {None}:
                    index.setdefault(watched, []).append(run)
            self._by_path = index
        return self._by_path.get(str(path), [])

    def _on_file(self, path: Path) -> None:
        if self._jobcomp is not None and path == self._jobcomp_path:
            self._read_jobcomp()
            return
        if path == self.layout.rules_path:
            self._reload_rules()
            return
        if self.layout.is_manifest(path):
            self._on_manifest(path)
            return
        asleep = self.dormancy.owner(str(path))
        if asleep is not None:
            self._on_manifest(self.layout.manifest_path(asleep))  # a released run's file changed: watch it again
        for run in self._runs_for(path):
            if str(path) == run.manifest.log:
                self._read_log(run)
            else:
                self._read_progress(run)

    def _on_manifest(self, path: Path) -> None:
        name = path.stem
        if name in self.dormancy:
            self._add_run(self.dormancy.manifest(name))  # revived as it slept; the new manifest is compared below
        try:
            manifest = load_manifest(path)
        except FileNotFoundError:
            if name in self.runs:
                self._lose_run(name)
            return
        except (NotReadyYet, ManifestError):
            return  # retried on the next event or safety poll
        run = self.runs.get(manifest.name)
        if run is None:
            self._add_run(manifest)
            return
        old, run.manifest = run.manifest, manifest
        self._by_path = None
        run.facts.expected = manifest.expected
        identity = (manifest.pid, manifest.create_time, manifest.job_id)
        if identity != (old.pid, old.create_time, old.job_id) and (manifest.pid or manifest.job_id):
            run.facts.new_process(time.time())
            run.facts.alive = self._is_alive(run)
            self._watch_exit(run)
            self._arm_silence(run)
        if old.halted and not manifest.halted:
            run.guard = reset(run.guard)
            run.latches.clear()
            self.audit.record("run resumed", run=run.name)
        self._ensure_probe(run)
        self._save(run)

    # ----- sources → facts ---------------------------------------------------------

    def _read_log(self, run: WatchedRun, replay: bool = False) -> int:
        count, counted = 0, False
        while True:
            # Lines no rule can match need not be built at all, unless an incident is collecting evidence.
            collecting = run.incident is not None and not run.incident.acting and not replay
            prefilter = None if collecting else self.classifier.prefilter
            lines = run.tailer.read_new(prefilter)
            for note in run.tailer.drain_notes():
                self.audit.record("log file changed", run=run.name, file=run.manifest.log, note=note)
            if run.tailer.lines_read and not replay:
                run.facts.last_log_at = time.time()  # skipped lines count as log activity too
            rewound = False
            for index, line in enumerate(lines):
                counted = self._on_line(run, line, replay) or counted
                if prefilter is not None and not replay and run.incident and not run.incident.acting:
                    # This line opened an incident: the lines after it, skipped above, are its evidence.
                    rewound = run.tailer.reread_after(index)
                    if rewound:
                        break
            count += run.tailer.lines_read
            if not run.tailer.more_pending and not rewound:
                break
        # Saving the read position costs a SQLite write. Lines no rule counts can
        # be read again after a crash at no cost, so those saves are throttled;
        # a line that counted is saved at once, or a crash would count it twice.
        if counted or (count and time.time() - run.saved_at >= self.settings.number("watch.position_save_s")):
            self._save(run)
        return count

    def _on_line(self, run: WatchedRun, line: TailLine, replay: bool) -> bool:
        """Feed one line to the run's facts; True when it counted toward a rule."""
        now = time.time()
        if run.incident and not run.incident.acting and not replay:
            run.incident.capture(line.text)
        hits = self.classifier.classify(line.text)
        keys = run.facts.on_line(hits, now, replay)
        if keys and not run.finished:
            self._evaluate(run, keys, {"file": run.manifest.log, "offset": line.offset, "line": line.text})
        return bool(hits)

    def _read_progress(self, run: WatchedRun) -> None:
        m = run.manifest
        try:
            snap = read_progress(Path(m.result) if m.result else None, Path(m.checkpoint) if m.checkpoint else None)
        except NotReadyYet:
            return
        if snap is None:
            return
        reasons = dict(snap.null_reasons)
        if (snap.done, reasons) != (run.facts.done, run.facts.null_reasons):
            run.facts.done, run.facts.null_reasons, run.facts.correct = snap.done, reasons, snap.correct
            self._evaluate(run)
        self._note_progress(run)

    def _note_progress(self, run: WatchedRun) -> None:
        """A throttled ``progress`` record, so ``expwatch report`` can draw progress over time.

        Called on every read (the safety poll included), so a change held back
        by the throttle is still written within one poll of the period's end.
        """
        f, m = run.facts, run.manifest
        sample = (f.done, m.restarts)
        if sample == run.progress_noted:
            return
        now = time.time()
        milestone = run.progress_noted is None or m.restarts != run.progress_noted[1] or bool(m.expected and f.done >= m.expected)
        if not milestone and now - run.progress_noted_at < self.settings.number("audit.progress_every_s"):
            return
        run.progress_noted, run.progress_noted_at = sample, now
        self.audit.record("progress", run=run.name, done=f.done, expected=m.expected, correct=f.correct,
                          nulls=sum(f.null_reasons.values()), restarts=m.restarts)

    def _on_exit(self, event: ProcessExit) -> None:
        run = self.runs.get(event.run)
        if run is None:
            return
        if (event.job_id or None, event.pid) != (run.manifest.job_id, None if event.job_id else run.manifest.pid):
            return  # an earlier process or job of this run
        if run.facts.alive is False and run.facts.job_state == event.job_state and event.job_id:
            return  # the completion record and the poll both saw this job end
        self.runners.local.reap()  # if this watcher started it
        self._read_log(run)
        self._read_progress(run)
        run.facts.alive = False
        run.facts.exit_signal = event.signal
        run.facts.exit_code = event.returncode
        if event.job_id:
            run.facts.job_state = event.job_state
            run.facts.oom_killed = event.job_state == "OUT_OF_MEMORY"
        elif event.signal == 9 or (event.returncode is None and event.signal is None):
            run.facts.oom_killed = bool(oom_killed([event.pid]))
        self.audit.record("process exited", run=run.name, pid=event.pid, job_id=event.job_id, job_state=event.job_state,
                          node=event.node, returncode=event.returncode, signal=event.signal,
                          oom_killed=run.facts.oom_killed or None)
        self._evaluate(run)

    # ----- SLURM jobs ----------------------------------------------------------------

    def _is_alive(self, run: WatchedRun) -> bool:
        """Whether the run's process (or SLURM job: pending counts) is alive now."""
        m = run.manifest
        if not m.job_id:
            return verified_process(m.pid, m.create_time) is not None if m.pid else False
        states = self._job_states([run])
        if m.job_id not in states:
            return True  # SLURM did not answer: assume alive rather than restart a live job
        run.facts.job_state = states[m.job_id].state
        return states[m.job_id].alive

    def _job_states(self, runs: list[WatchedRun]) -> dict[str, JobState]:
        """One squeue call for these runs' jobs; {} (and an audit record) when SLURM cannot be asked."""
        try:
            return self.runners.slurm.job_states([r.manifest.job_id for r in runs if r.manifest.job_id])
        except SlurmError as exc:
            self.audit.record("slurm unavailable", error=str(exc))
            return {}

    def _watch_exit(self, run: WatchedRun) -> None:
        """Local runs: a pidfd. SLURM runs: the cluster's completion file, through the file watcher."""
        m = run.manifest
        if not m.job_id:
            self.exits.watch(m.name, m.pid, m.create_time, self.layout.exit_path(m.name))
            return
        self.exits.forget(m.name)
        if self._jobcomp is not None:
            return
        try:
            path = self.runners.slurm.jobcomp_path
        except SlurmError as exc:
            self.audit.record("slurm unavailable", error=str(exc))
            return
        if path is None:
            self.audit.record("slurm completion file unknown", note="JobCompType is not jobcomp/filetxt; job ends are polled")
            return
        saved = self.store.run_data(JOBCOMP_KEY).get("position")
        self._jobcomp = JobCompFollower(path, TailPosition(**saved) if saved else None)
        self._jobcomp_path = path
        self.files.watch(path.parent, recursive=False)
        self._read_jobcomp()

    def _read_jobcomp(self) -> None:
        by_job = {r.manifest.job_id: r for r in self.runs.values() if r.manifest.job_id}
        for record in self._jobcomp.read_new():
            run = by_job.get(record.job_id)
            if run is not None and record.final:
                self._on_exit(ProcessExit(run.name, None, record.returncode, record.signal, record.job_id, record.state, record.node))
        self._jobcomp.drain_notes()
        self.store.save_run(JOBCOMP_KEY, {"position": asdict(self._jobcomp.position)})

    def _poll_jobs(self) -> None:
        """Start of running (PENDING → RUNNING) and ends the completion file missed."""
        live = [r for r in self.runs.values() if r.manifest.job_id and r.facts.alive and not r.finished]
        now = time.time()
        states = self._job_states(live) if live else {}
        for run in live:
            state = states.get(run.manifest.job_id)
            if state is None or state.state == "UNKNOWN":
                continue
            if run.facts.job_state == "PENDING" and state.state != "PENDING":
                run.facts.last_log_at = now  # silence counts from the job's start, not its submission
                self._arm_silence(run)
            run.facts.job_state = state.state if state.alive else run.facts.job_state
            if not state.alive and state.settled:
                self._on_exit(ProcessExit(run.name, None, state.exit_code if not state.signal else None, state.signal,
                                          run.manifest.job_id, state.state, state.node))

    def _ensure_probe(self, run: WatchedRun) -> None:
        try:
            profile = self.settings.profile(run.manifest.profile)
        except Exception:
            return
        if not profile.probe_url or profile.name in self._probers or profile.name in self._unprobed:
            return
        url = expand(profile.probe_url)
        if url is None:
            self.audit.record("probe skipped", profile=profile.name, reason=f"unset variable in {profile.probe_url}")
            self._unprobed.add(profile.name)
            return
        prober = Prober(self.events, profile.name, url, profile.probe_every_s, profile.probe_timeout_s)
        self._probers[profile.name] = prober
        prober.start()

    def _on_probe(self, event: ProbeResult) -> None:
        was = self._probe_failing.get(event.profile)
        now = time.time()
        if event.ok and was is not None:
            del self._probe_failing[event.profile]
            self.audit.record("probe recovered", profile=event.profile, url=event.url, detail=event.detail)
        elif not event.ok and was is None:
            self._probe_failing[event.profile] = now
            self.audit.record("probe failed", profile=event.profile, url=event.url, detail=event.detail)
        since = self._probe_failing.get(event.profile)
        for run in self.runs.values():
            if (run.manifest.profile or self.settings.get("profile")) == event.profile:
                run.facts.probe_failing_since = since
                self._evaluate(run)
                for threshold in self.ruleset.probe_thresholds() if since is not None and was is None else ():
                    self._arm(run.name, "recheck", threshold)

    # ----- deciding ----------------------------------------------------------------

    def _evaluate(self, run: WatchedRun, log_keys: tuple[str, ...] = (), evidence: dict[str, Any] | None = None) -> None:
        if run.finished:
            return
        facts = run.facts.snapshot(time.time(), log_keys)
        matched = self.engine.evaluate(run.name, facts)
        # Refreshed before acting, so the save a decision below makes persists current latches.
        run.latches = {n for n in matched if n in run.latches}
        run.latched_for = (run.manifest.pid, run.manifest.create_time)
        for name in matched:
            rule = self.ruleset.by_name(name)
            via_log = any(a.key in log_keys for a in rule.log_atoms)
            if not via_log and name in run.latches:
                continue
            state_evidence = {"facts": {k: v for k, v in facts.items() if not k.startswith("log_")}}
            if rule.informational:
                run.latches.add(name)  # decided (and saved) inside _accept
            if self._accept(run, rule, evidence if via_log else state_evidence):
                run.latches.add(name)

    def _accept(self, run: WatchedRun, rule: Rule, evidence: dict[str, Any]) -> bool:
        now = time.time()
        fields = {k: v for k, v in evidence.items() if k != "captured"}
        if rule.informational:
            side = Incident(new_incident_id(), run.name, now, now)
            side.add(rule, evidence, now)
            self.audit.record("rule matched", run=run.name, rule=rule.name, incident=side.id, severity=rule.severity, **fields)
            self.console(f"{run.name}: {rule.name} matched ({side.id})")
            run.side_incidents.add(side.id)
            self._decide(run, side, guarded=False)
            return True
        inc = run.incident
        if inc and inc.acting:
            self.audit.record("rule matched", run=run.name, rule=rule.name, incident=inc.id, severity=rule.severity,
                              suppressed="incident in progress", **fields)
            return False
        if inc is None:
            inc = Incident(new_incident_id(), run.name, now, now + self.settings.number("watch.settle_s"))
            run.incident = inc
            self._arm(run.name, "settle", self.settings.number("watch.settle_s"))
        if not inc.candidates:
            self.console(f"{run.name}: {rule.name} matched ({inc.id})")
        inc.add(rule, evidence, now)
        self.audit.record("rule matched", run=run.name, rule=rule.name, incident=inc.id, severity=rule.severity, **fields)
        return True

    def _settle(self, run: WatchedRun) -> None:
        if run.incident is not None and not run.incident.acting:
            self._decide(run, run.incident, guarded=True)

    def _decide(self, run: WatchedRun, inc: Incident, guarded: bool) -> None:
        """Choose the incident's cause, ask the guard, persist the plan, hand it to a thread."""
        rule = inc.winner().rule
        plan = [{"name": a.name, "arg": a.arg} for a in rule.actions]
        evidence = inc.evidence()
        decision, reason, streak = "act", None, None
        if guarded:
            verdict = judge(run.guard, rule.name, run.facts.done, self.limits, time.time(),
                            restarts=any(s["name"] == "restart" for s in plan), rule_limit=rule.same_rule_limit)
            run.guard, streak = verdict.state, verdict.state.streak
            if not verdict.act:
                decision, reason = "halt", verdict.reason
                plan = [{"name": "halt", "arg": verdict.reason}]
                evidence["reason"] = verdict.reason
        self.audit.record("incident classified", run=run.name, rule=rule.name, incident=inc.id, priority=rule.priority,
                          candidates=evidence["candidates"], guard_streak=streak, decision=decision, reason=reason,
                          captured_lines=len(evidence["captured"]) or None)
        for index, step in enumerate(plan):
            self.audit.record("action planned", run=run.name, rule=rule.name, incident=inc.id, action=step["name"],
                              arg=step["arg"], step=index)
        steps = ", ".join(s["name"] if s["arg"] is None else f"{s['name']} {s['arg']}" for s in plan)
        self.console(f"{run.name}: {rule.name} → {steps} ({inc.id})" if decision == "act" else f"{run.name}: {reason} → halt ({inc.id})")
        inc.acting = True
        run.last_incident = f"{rule.name}: {'halting' if decision == 'halt' else 'acting'}"
        run.last_incident_id = inc.id
        self.store.open_incident(inc.id, run.name, rule.name, plan, evidence)
        self._save(run)
        self.executor.start(IncidentRow(inc.id, run.name, rule.name, "acting", plan, 0, False, {}, evidence))

    def _on_action_done(self, event: ActionDone) -> None:
        run = self.runs.get(event.run)
        if run is None:
            return
        if run.last_incident and event.incident == run.last_incident_id:
            run.last_incident = f"{run.last_incident.split(':')[0]}: {event.outcome}"
        if event.incident in run.side_incidents:
            run.side_incidents.discard(event.incident)
            self._on_manifest(self.layout.manifest_path(run.name))
            return
        run.incident = None
        if event.outcome == "restarted":
            run.guard = record_restart(run.guard, time.time())
        self._on_manifest(self.layout.manifest_path(run.name))
        self._save(run)
        self._evaluate(run)

    def _context(self, row: IncidentRow) -> ActionContext:
        return ActionContext(
            layout=self.layout, settings=self.settings, runners=self.runners, audit=self.audit, run=row.run,
            manifest_lock=self._manifest_locks.setdefault(row.run, threading.Lock()),
            incident=row.id, rule=row.rule, evidence=row.context, stop=self.executor.stop, console=self.console,
        )

    def _claim_leftovers(self, run: WatchedRun) -> None:
        """Make a previous watcher's half-done incident the run's own, so new matches join it, not race it."""
        for row in self._leftovers:
            if row.run != run.name:
                continue
            if all(step["name"] in INFORMATIONAL_ACTIONS for step in row.plan):
                run.side_incidents.add(row.id)
            else:
                run.incident = Incident(row.id, row.run, time.time(), time.time(), acting=True)

    def _reconcile(self) -> None:
        """Finish incidents a previous watcher left half done (SIGKILL included)."""
        leftovers, self._leftovers = self._leftovers, []
        for row in leftovers:
            if row.run not in self.runs:
                self.store.close_incident(row.id, "failed")
                self.audit.record("incident abandoned", run=row.run, rule=row.rule, incident=row.id, reason="run no longer exists")
                continue
            self.audit.record("incident resumed", run=row.run, rule=row.rule, incident=row.id, next_step=row.next_step,
                              step_was_started=row.step_started or None)
            self.executor.start(row)

    def _reload_rules(self) -> None:
        try:
            ruleset = load_rules(self.layout.rules_path, set(self.settings.profiles))
        except RulesError as exc:
            self.audit.record("rules reload refused", file=str(self.layout.rules_path), error=str(exc), kept=self.ruleset.digest)
            self.console(f"rules reload refused, previous rules keep running: {exc}")
            return
        if ruleset.digest == self.ruleset.digest and ruleset.source == self.ruleset.source:
            return
        self.ruleset, self.engine, self.classifier = ruleset, RuleEngine(ruleset), LineClassifier(ruleset)
        for run in self.runs.values():
            run.facts.rebind(ruleset)
            run.latches &= {r.name for r in ruleset.rules}
        self.audit.record("rules reloaded", file=ruleset.source, digest=ruleset.digest, rules=[r.name for r in ruleset.enabled])
        self.console(f"rules reloaded from {ruleset.source} ({len(ruleset.enabled)} enabled)")
