"""Finishing what a previous watcher left half done (SIGKILL included).

Unfinished incidents are read before any run is discovered, so each run
claims its own before anything about it is evaluated (new matches then join
it instead of racing it), and are resumed once every run is known. One a
live `expwatch resume` or `stop` owns is left to it.
"""

from __future__ import annotations

import time
from expwatch.actions.executor import IncidentExecutor
from expwatch.audit.log import AuditLog
from expwatch.catalog import informational
from expwatch.engine.recording import announce_again
from expwatch.engine.runs import RunTable, WatchedRun
from expwatch.processes import owner_alive
from expwatch.rules.decide import Decider
from expwatch.state import IncidentRow, StateStore


class Recovery:
    def __init__(self, store: StateStore, audit: AuditLog, executor: IncidentExecutor):
        self._store, self._audit, self._executor = store, audit, executor
        self._leftovers: list[IncidentRow] = []
        for row in store.unfinished_incidents():
            if owner_alive(row.context.get("owner")):
                # `expwatch resume`/`stop` is carrying it out right now: resumed here too, it could restart twice.
                audit.record("incident left to its owner", run=row.run, rule=row.rule, incident=row.id,
                             owner_pid=row.context["owner"]["pid"])
            else:
                self._leftovers.append(row)

    def holds(self, name: str) -> bool:
        """Whether an incident left half done names run ``name`` (it is watched, never admitted asleep)."""
        return any(row.run == name for row in self._leftovers)

    def claim(self, run: WatchedRun, decider: Decider) -> None:
        for row in self._leftovers:
            # One whose every step finished lacks only its close: it holds nothing back, so lines the
            # run wrote meanwhile (a restarted process's next crash) open an incident of their own.
            if row.run == run.name and row.next_step < len(row.plan):
                decider.claim(run.name, run.decisions, row.id, all(informational(s["name"]) for s in row.plan), time.time())

    def resume(self, runs: RunTable) -> None:
        leftovers, self._leftovers = self._leftovers, []
        for row in leftovers:
            if row.run not in runs:
                self._store.close_incident(row.id, "failed")
                self._audit.record("incident abandoned", run=row.run, rule=row.rule, incident=row.id, reason="run no longer exists")
                continue
            announce_again(self._audit, row)
            self._audit.record("incident resumed", run=row.run, rule=row.rule, incident=row.id, next_step=row.next_step,
                               step_was_started=row.step_started or None)
            self._executor.start(row)
