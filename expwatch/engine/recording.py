"""A Decider's outcome, written down and handed to the actions.

Every match and decision becomes an audit record before anything acts;
a decision's plan is stored as an incident, with the run state it changed,
before it is announced and before its thread starts (the executor marks
its steps started and finished), so a watcher killed at any point resumes
it instead of deciding it twice.
"""

from __future__ import annotations

from typing import Callable

from expwatch.actions.executor import IncidentExecutor
from expwatch.audit.log import AuditLog
from expwatch.engine.runs import WatchedRun
from expwatch.rules.decide import Decision, Match, Outcome
from expwatch.rules.incidents import Incident
from expwatch.state import IncidentRow, StateStore


class DecisionRecorder:
    def __init__(self, audit: AuditLog, store: StateStore, executor: IncidentExecutor,
                 console: Callable[[str], None], state_of: Callable[[WatchedRun], dict], rules_digest: Callable[[], str]):
        self._audit, self._store, self._executor, self._console, self._state_of = audit, store, executor, console, state_of
        self._digest = rules_digest

    def carry_out(self, run: WatchedRun, outcome: Outcome) -> None:
        if outcome.matches or outcome.decisions:
            # Refreshed before acting, so the save a decision makes persists current latches.
            run.latched_for = (run.manifest.pid, run.manifest.create_time)
        for match in outcome.matches:
            self.matched(run, match)
        for decision in outcome.decisions:
            self.decided(run, decision)

    def matched(self, run: WatchedRun, match: Match) -> None:
        fields = {k: v for k, v in match.evidence.items() if k != "captured"}
        self._audit.record("rule matched", run=run.name, rule=match.rule.name, incident=match.incident,
                           severity=match.rule.severity, suppressed=match.suppressed, requeued=match.requeued or None, **fields)
        if match.opened:
            self._console(f"{run.name}: {match.rule.name} matched ({match.incident})")

    def survived(self, run: WatchedRun, incident: Incident) -> None:
        """The incident a caught, logged exception opened ends undecided (``Decider.carried_on``)."""
        self._audit.record("exception survived", run=run.name, incident=incident.id, cause=incident.crashes()[0]["cause"],
                           candidates=[c.rule.name for c in incident.candidates],
                           note="the process kept logging after its traceback and lives on (or exited 0): a caught exception, not a crash")

    def decided(self, run: WatchedRun, decision: Decision) -> None:
        rule, digest = decision.rule, self._digest()
        evidence = {**decision.evidence, "rules_digest": digest}
        classified = {"priority": rule.priority, "candidates": list(decision.candidates), "guard_streak": decision.streak,
                      "decision": "act" if decision.act else "halt", "reason": decision.reason, "cause": evidence.get("cause"),
                      "captured_lines": len(evidence["captured"]) or None}
        plan = [s.to_json() for s in decision.plan]
        run.last_incident = f"{rule.name}: {'acting' if decision.act else 'halting'}"
        run.last_incident_id = decision.incident
        run.last_cause = evidence.get("cause")
        row = IncidentRow(decision.incident, run.name, rule.name, "acting", plan, 0, False, {},
                          {**evidence, CLASSIFIED: classified})
        # Stored before it is announced: the audit may then lack it only until the next watcher resumes it
        # (announce_again), never hold a decision that no watcher carries out.
        self._store.open_incident(row.id, run.name, rule.name, plan, row.context, self._state_of(run))
        announce(self._audit, row)
        steps = ", ".join(str(s) for s in decision.plan)
        self._console(f"{run.name}: {rule.name} → {steps} ({decision.incident})" if decision.act
                      else f"{run.name}: {decision.reason} → halt ({decision.incident})")
        self._executor.start(row)


# The key of a stored incident's context that keeps its classification, to announce it again.
CLASSIFIED = "classified"


def announce(audit: AuditLog, row: IncidentRow, resumed: bool = False) -> None:
    """The incident's ``incident classified`` and ``action planned`` records, from what the store holds."""
    digest = row.context.get("rules_digest")
    audit.record("incident classified", run=row.run, rule=row.rule, incident=row.id, rules_digest=digest,
                 resumed=resumed or None, **row.context.get(CLASSIFIED, {}))
    for index, step in enumerate(row.plan):
        audit.record("action planned", run=row.run, rule=row.rule, incident=row.id, rules_digest=digest,
                     action=step["name"], arg=step.get("arg"), step=index, resumed=resumed or None)


def announce_again(audit: AuditLog, row: IncidentRow) -> None:
    """A watcher killed between storing a decision and announcing it: the next one announces it (maybe twice)."""
    if row.next_step == 0 and not row.step_started:
        announce(audit, row, resumed=True)
