"""``expwatch pipeline``: the seed's Mode 5, a serial ablation E0 -> E1 -> ... run unattended.

Each phase goes pending -> launching -> running -> passed | stopped, and every
step is saved (``state.py``) before the next one starts, so the loop can be
killed anywhere and rerun: it picks up the first phase that is not passed.
The phase's run is launched by ``expwatch launch`` itself (smoke run
included) and healed by the normal watcher; the pipeline only decides
between phases, and writes each decision to the audit log with its numbers.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import psutil
import yaml

from expwatch.audit.log import AuditLog
from expwatch.run_options import now_iso  # the manifest's launched_at format, compared below
from expwatch.files import NotReadyYet, atomic_write_text
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import ManifestError, RunManifest, load_manifest
from expwatch.pipeline.gates import (
    Decision, drift_gate, phase_config, plan_validity, result_drift_gate, validate_gate, verdict_gate,
)
from expwatch.pipeline.plan import Phase, Plan
from expwatch.pipeline.state import (
    DONE, LAUNCHING, PASSED, PENDING, RUNNING, STOPPED, PhaseState, PipelineState, load_state, pipelines_dir, save_state,
)
from expwatch.pipeline.watcher_keeper import WatcherKeeper
from expwatch.processes import verified_process
from expwatch.results.config import ValidationSettings
from expwatch.results.drift import ConfigError
from expwatch.results.fields import sidecar_path
from expwatch.settings import load_settings


class PipelineBusy(RuntimeError):
    """Another ``expwatch pipeline`` process is driving the same pipeline."""


class PipelineRunner:
    def __init__(self, plan: Plan, layout: ExperimentsLayout, settings: ValidationSettings,
                 say: Callable[[str], None] = print):
        self.plan, self.layout, self.settings, self.say = plan, layout, settings, say
        self.folder = pipelines_dir(layout) / plan.name
        self.keeper = WatcherKeeper(layout, self.folder / "watcher.log", settings.pipeline.watcher_start_timeout_s)
        self.audit: AuditLog | None = None
        self._watcher_error: str | None = None

    # -- the loop --------------------------------------------------------

    def run(self, retry: bool = False) -> int:
        """Drive the pipeline to its end: 0 every phase passed, 1 stopped.

        ``retry`` takes a stopped pipeline up again at the phase that stopped
        it (after a human fixed the cause: a resumed halt, an edited plan).
        """
        watch_settings = load_settings(self.layout)  # the watcher's rotation bounds for the file we share
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = self._lock()
        self.audit = AuditLog(self.layout.audit_path, int(watch_settings.audit.max_bytes),
                              int(watch_settings.audit.backups))
        try:
            state = self._initial_state()
            if state.status == STOPPED and retry:
                state = self._retry(state)
            if state.status == STOPPED:
                stopped = next((p for p in state.phases if p.status == STOPPED), None)
                self.say(f"pipeline {self.plan.name} is stopped" + (f" at {stopped.name}: {stopped.reason}" if stopped else ""))
                return 1
            for phase in self.plan.phases:
                state = self._drive(state, phase)
                if state.status == STOPPED:
                    return 1
            state = replace(state, status=DONE)
            save_state(self.layout, state)
            self._record("pipeline finished", phases=[p.name for p in state.phases])
            self.say(f"pipeline {self.plan.name}: every phase passed")
            return 0
        finally:
            self.audit.close()
            os.close(lock)

    def dry_run(self) -> list[str]:
        """What ``run`` would do, from the saved state, touching nothing."""
        state = load_state(self.layout, self.plan.name)
        lines = [f"pipeline {self.plan.name} ({self.plan.path}) into {self.layout.root}",
                 f"baseline: config {self.plan.baseline.config}, result {self.plan.baseline.result},"
                 f" criteria {self.plan.baseline.criteria}", plan_validity(self.plan).message]
        for phase in self.plan.phases:
            saved = state.phase(phase.name).status if state and phase.name in {p.name for p in state.phases} else PENDING
            if saved in (PASSED, STOPPED, RUNNING):
                lines.append(f"phase {phase.name}: {saved}, nothing to do" if saved != RUNNING else
                             f"phase {phase.name}: running; would wait for it, then validate and judge it")
                continue
            drift = drift_gate(self.plan, phase, self.settings)
            lines.append(f"phase {phase.name}: drift {'ok' if drift.ok else 'STOP'}: {drift.message}")
            lines.append(f"  would launch: {' '.join(self._launch_argv(phase, self._config_path(phase)))}")
        return lines

    def _drive(self, state: PipelineState, phase: Phase) -> PipelineState:
        current = state.phase(phase.name)
        if current.status == PASSED:
            return state
        if current.status == PENDING:
            state = self._before_launch(state, phase)
            if state.status == STOPPED:
                return state
            current = state.phase(phase.name)
        if current.status == LAUNCHING:
            state = self._launch(state, phase)
            if state.status == STOPPED:
                return state
        return self._follow(state, phase)

    # -- before a phase --------------------------------------------------

    def _before_launch(self, state: PipelineState, phase: Phase) -> PipelineState:
        validity = plan_validity(self.plan)
        for commit in validity.numbers.get("commits_since_plan", []):
            self.say(f"  commit since the plan changed: {commit}")
        for decision in (validity, drift_gate(self.plan, phase, self.settings)):
            self._decide(phase, decision)
            if not decision.ok:
                return self._stop(state, phase, decision.message)
        try:
            config = phase_config(self.plan, phase)
        except ConfigError as exc:
            return self._stop(state, phase, str(exc))
        atomic_write_text(self._config_path(phase), yaml.safe_dump(config, sort_keys=False))
        if phase.fields:
            atomic_write_text(sidecar_path(phase.result), yaml.safe_dump(phase.fields, sort_keys=False))
        return self._save(state, replace(state.phase(phase.name), status=LAUNCHING, run=phase.name,
                                         launch_started_at=now_iso()))

    def _launch(self, state: PipelineState, phase: Phase) -> PipelineState:
        current = state.phase(phase.name)
        self._await_earlier_launch(phase, current)
        if self._launched_by(current):
            # Killed after `expwatch launch` wrote the manifest: the phase is launched already.
            manifest = self._manifest(phase)
            self._record("pipeline phase launched", phase=phase.name, resumed=True, pid=manifest.pid)
            return self._save(state, replace(current, status=RUNNING, launched_at=manifest.launched_at))
        argv = self._launch_argv(phase, self._config_path(phase))
        self.say(f"phase {phase.name}: launching (smoke run first)")
        self._record("pipeline phase launching", phase=phase.name, argv=argv)
        # Its own session and a file for its output (a pipe would break): a killed pipeline leaves the
        # launch to finish, and the next pipeline waits for it.
        launch_log = self.folder / f"{phase.name}.launch.log"
        with open(launch_log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=self.plan.root, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            created = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            created = None
        current = replace(current, launch_pid=proc.pid, launch_created=created)
        state = self._save(state, current)
        try:
            code = proc.wait(timeout=self.settings.pipeline.launch_timeout_s)
            output = launch_log.read_text(encoding="utf-8", errors="replace").strip()
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            output, code = f"expwatch launch did not return within {self.settings.pipeline.launch_timeout_s:g}s", None
        if not self._launched_by(current):
            self._decide(phase, Decision("launch", False, f"nothing launched (exit {code}): {output}"))
            return self._stop(state, phase, f"launch failed: {output.splitlines()[-1] if output else code}")
        manifest = self._manifest(phase)
        self._record("pipeline phase launched", phase=phase.name, pid=manifest.pid, exit=code, output=output)
        return self._save(state, replace(current, status=RUNNING, launched_at=manifest.launched_at))

    def _launched_by(self, current: PhaseState) -> bool:
        """Whether the run's manifest was written by the launch this phase started (not an older run's)."""
        manifest = self._manifest_named(current.name)
        return manifest is not None and (manifest.launched_at or "") >= (current.launch_started_at or "")

    def _await_earlier_launch(self, phase: Phase, current: PhaseState) -> None:
        """A launch left running by a killed pipeline may still be in its smoke run: let it finish first."""
        if verified_process(current.launch_pid, current.launch_created) is None:
            return
        self._record("pipeline awaits earlier launch", phase=phase.name, launch_pid=current.launch_pid)
        self.say(f"phase {phase.name}: an earlier `expwatch launch` (pid {current.launch_pid}) is still running; waiting")
        deadline = time.monotonic() + self.settings.pipeline.launch_timeout_s
        while verified_process(current.launch_pid, current.launch_created) is not None and time.monotonic() < deadline:
            time.sleep(self.settings.pipeline.poll_s)

    def _launch_argv(self, phase: Phase, config: Path) -> list[str]:
        values = {"config": str(config), "result": str(phase.result), "log": str(phase.log),
                  "name": phase.name, "dir": str(self.layout.root)}
        argv = [sys.executable, "-m", "expwatch", "launch", "--name", phase.name, "--log", str(phase.log),
                "--result", str(phase.result), "--dir", str(self.layout.root),
                "--expected", str(phase.expected), "--smoke" if phase.smoke is None else f"--smoke={phase.smoke}"]
        if phase.profile:
            argv += ["--profile", phase.profile]
        return argv + ["--", *(arg.format(**values) for arg in phase.command)]

    # -- while and after a phase ----------------------------------------

    def _follow(self, state: PipelineState, phase: Phase) -> PipelineState:
        self.say(f"phase {phase.name}: running; watched by the watcher of {self.layout.root}")
        while True:
            self._keep_watcher(phase)
            manifest = self._manifest(phase)
            if manifest is None:
                return self._stop(state, phase, f"the run's manifest {self.layout.manifest_path(phase.name)} is gone")
            if manifest.halted is not None:
                return self._stop(state, phase, f"run HALTED: {manifest.halted.reason}")
            if manifest.stopped_at is not None:
                return self._stop(state, phase, "run STOPPED by hand")
            if manifest.completed_at is not None:
                return self._after_complete(state, phase)
            time.sleep(self.settings.pipeline.poll_s)

    def _after_complete(self, state: PipelineState, phase: Phase) -> PipelineState:
        for check in (result_drift_gate(self.plan, phase, self.settings), validate_gate(phase, self.settings)):
            self._decide(phase, check)
            if not check.ok:
                return self._stop(state, phase, check.message)
        verdict = verdict_gate(self.plan, phase, self.settings)
        self._decide(phase, verdict)
        judged = replace(state.phase(phase.name), verdict=verdict.numbers.get("verdict"), delta=verdict.numbers.get("delta"))
        state = state.with_phase(judged)
        if not verdict.ok:
            return self._stop(state, phase, verdict.message)
        return self._save(state, replace(judged, status=PASSED, reason=verdict.message))

    def _keep_watcher(self, phase: Phase) -> None:
        try:
            pid, started = self.keeper.ensure()
        except RuntimeError as exc:
            if str(exc) != self._watcher_error:  # once per distinct failure, not once per poll
                self._record("pipeline watcher failed", phase=phase.name, error=str(exc))
                self.say(f"  {exc}")
            self._watcher_error = str(exc)
            return
        self._watcher_error = None
        if started:
            self._record("pipeline started watcher", phase=phase.name, watcher_pid=pid, log=str(self.keeper.log_path))
            self.say(f"  started a watcher (pid {pid}) for {self.layout.root}")

    # -- bookkeeping -----------------------------------------------------

    def _initial_state(self) -> PipelineState:
        saved = load_state(self.layout, self.plan.name)
        names = [p.name for p in self.plan.phases]
        if saved is None:
            state = PipelineState(self.plan.name, str(self.plan.path), RUNNING, tuple(PhaseState(n) for n in names))
            save_state(self.layout, state)
            self._record("pipeline started", plan=str(self.plan.path), phases=names)
            return state
        # Phases added to the plan since are appended; a finished pipeline with new phases runs again.
        known = {p.name for p in saved.phases}
        phases = saved.phases + tuple(PhaseState(n) for n in names if n not in known)
        status = RUNNING if saved.status == DONE and len(phases) > len(saved.phases) else saved.status
        state = replace(saved, phases=phases, status=status)
        self._record("pipeline resumed", plan=str(self.plan.path),
                     phases={p.name: p.status for p in state.phases})
        return state

    def _retry(self, state: PipelineState) -> PipelineState:
        """A stopped phase that was launched is followed again, never relaunched; one that was not is redone."""
        stopped = next(p for p in state.phases if p.status == STOPPED)
        launched = stopped.launched_at is not None
        retried = replace(stopped, status=RUNNING if launched else PENDING, reason=None, verdict=None, delta=None)
        state = self._save(state, retried, RUNNING)
        self._record("pipeline retried", phase=stopped.name, previous_reason=stopped.reason, status=retried.status)
        return state

    def _manifest(self, phase: Phase) -> RunManifest | None:
        return self._manifest_named(phase.name)

    def _manifest_named(self, name: str) -> RunManifest | None:
        try:
            return load_manifest(self.layout.manifest_path(name))
        except (FileNotFoundError, NotReadyYet, ManifestError):
            return None

    def _config_path(self, phase: Phase) -> Path:
        return self.folder / f"{phase.name}.config.yaml"

    def _save(self, state: PipelineState, phase_state: PhaseState, status: str | None = None) -> PipelineState:
        state = state.with_phase(phase_state, status)
        save_state(self.layout, state)
        return state

    def _stop(self, state: PipelineState, phase: Phase, reason: str) -> PipelineState:
        state = self._save(state, replace(state.phase(phase.name), status=STOPPED, reason=reason), STOPPED)
        self._record("pipeline stopped", phase=phase.name, reason=reason)
        self.say(f"pipeline {self.plan.name} stopped at phase {phase.name}: {reason}")
        return state

    def _decide(self, phase: Phase, decision: Decision) -> None:
        self._record("pipeline decision", phase=phase.name, gate=decision.gate, ok=decision.ok,
                     message=decision.message, numbers=decision.numbers)
        self.say(f"phase {phase.name}: {decision.gate} {'ok' if decision.ok else 'STOP'}: {decision.message}")

    def _record(self, event: str, **fields: object) -> None:
        assert self.audit is not None
        # A phase's run has the phase's name: `expwatch audit --run e1` then shows its pipeline decisions too.
        run = {"run": fields["phase"]} if "phase" in fields else {}
        self.audit.record(event, **run, pipeline=self.plan.name, **fields)

    def _lock(self) -> int:
        fd = os.open(self.folder.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PipelineBusy(f"another expwatch pipeline is driving {self.plan.name} in {self.layout.root}") from None
        return fd
