"""Run an incident's ordered actions on a thread of its own, exactly once.

A plan whose every step returns at once (an alert without a command, or
any plan in a dry run: ``registry.returns_at_once``) runs on the caller's
thread instead; it posts the same ``IncidentClosed``.

Each step is written to the state store as *started* before it acts and
*finished* after, and to the audit log likewise. A watcher killed between
the two finds the step still marked started on its next start and runs it
again with the information the step saved before acting (the restart count
it saw, the end of its wait), which is what makes a restart never happen
twice and a wait never start over.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from expwatch.actions.context import ActionContext, ActionFailed, ActionResult
from expwatch.actions.registry import ACTIONS, returns_at_once
from expwatch.audit.log import AuditLog
from expwatch.state import IncidentRow, StateStore


@dataclass(frozen=True)
class IncidentClosed:
    """An incident's steps are over; posted to the engine loop, which then looks at the run afresh."""

    run: str
    incident: str
    outcome: str  # "restarted", "halted", "done"
    detail: str = ""


class IncidentExecutor:
    def __init__(
        self,
        store: StateStore,
        audit: AuditLog,
        make_context: Callable[[IncidentRow], ActionContext],
        post: Callable[[Any], None],
        dry_run: bool,
    ):
        self._store, self._audit, self._make_context, self._post, self._dry_run = store, audit, make_context, post, dry_run
        self._threads: list[threading.Thread] = []
        self.stop = threading.Event()

    def start(self, row: IncidentRow) -> None:
        if self._dry_run or all(returns_at_once(step) for step in row.plan):
            self._run(row)
            return
        thread = threading.Thread(target=self._run, args=(row,), name=f"incident-{row.id}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def run_here(self, row: IncidentRow) -> None:
        """Run the incident on the calling thread (``expwatch resume``/``stop``: a human's incident)."""
        self._run(row)

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _record(self, event: str, row: IncidentRow, **fields: Any) -> None:
        self._audit.record(event, run=row.run, rule=row.rule, incident=row.id, rules_digest=row.context.get("rules_digest"), **fields)

    def _run(self, row: IncidentRow) -> None:
        ctx = self._make_context(row)
        for index in range(row.next_step, len(row.plan)):
            if self.stop.is_set():
                return  # picked up again by the next watcher
            step = row.plan[index]
            name, arg = step["name"], step.get("arg")
            resumed = index == row.next_step and row.step_started
            ctx.step_info = dict(row.step_info) if resumed else {}
            ctx.persist_step_info = lambda info, i=index: self._store.step_started(row.id, i, info)
            self._store.step_started(row.id, index, ctx.step_info)
            self._record("action started", row, action=name, arg=arg, step=index, resumed=resumed or None, dry_run=self._dry_run or None)
            if self._dry_run:
                self._record("action finished", row, action=name, arg=arg, step=index, outcome="dry-run (nothing done)", dry_run=True)
                self._store.step_finished(row.id, index)
                continue
            try:
                result: ActionResult = ACTIONS[name](ctx, arg)
            except Exception as exc:  # any failure of an effect is audited, then the run is halted
                self._fail(row, ctx, name, index, exc)
                return
            if result.outcome == "interrupted":
                self._record("action interrupted", row, action=name, step=index)
                return
            self._record("action finished", row, action=name, step=index, outcome=result.outcome, **result.details)
            self._store.step_finished(row.id, index)
        names = {s["name"] for s in row.plan}
        outcome = "halted" if "halt" in names else "restarted" if "restart" in names and not self._dry_run else "done"
        # Recorded before the store says closed: a watcher killed in between resumes the
        # incident with nothing left to do and records its close again (resumed), so the
        # audit never lacks it.
        self._record("incident closed", row, outcome=outcome, resumed=row.next_step >= len(row.plan) or None)
        self._store.close_incident(row.id, "done")
        self._post(IncidentClosed(run=row.run, incident=row.id, outcome=outcome))

    def _fail(self, row: IncidentRow, ctx: ActionContext, name: str, index: int, exc: Exception) -> None:
        message = str(exc) if isinstance(exc, ActionFailed) else f"{type(exc).__name__}: {exc}"
        self._record("action failed", row, action=name, step=index, error=message)
        if name != "halt":
            ctx.step_info = {}
            ctx.evidence = {**(ctx.evidence or {}), "reason": f"action {name} failed: {message}"}
            self._record("action started", row, action="halt", reason=ctx.evidence["reason"])
            try:
                result = ACTIONS["halt"](ctx, None)
                self._record("action finished", row, action="halt", outcome=result.outcome, **result.details)
            except Exception as halt_exc:
                self._record("action failed", row, action="halt", error=f"{type(halt_exc).__name__}: {halt_exc}")
        self._record("incident closed", row, outcome="halted")
        self._store.close_incident(row.id, "failed")
        self._post(IncidentClosed(run=row.run, incident=row.id, outcome="halted", detail=message))
