"""A Decider's outcome, written down and handed to the actions.

Every match and decision becomes an audit record before anything acts;
a decision's plan is stored as an incident (its steps marked started and
finished by the executor) before its thread starts, so a watcher killed at
any point resumes it instead of deciding it twice.
"""

from __future__ import annotations

from typing import Callable

from expwatch.actions.executor import IncidentExecutor
from expwatch.audit.log import AuditLog
from expwatch.engine.runs import WatchedRun
from expwatch.rules.decide import Decision, Match, Outcome
from expwatch.state import IncidentRow, StateStore


class DecisionRecorder:
    def __init__(self, audit: AuditLog, store: StateStore, executor: IncidentExecutor,
                 console: Callable[[str], None], save: Callable[[WatchedRun], None], rules_digest: Callable[[], str]):
        self._audit, self._store, self._executor, self._console, self._save = audit, store, executor, console, save
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
                           severity=match.rule.severity, suppressed=match.suppressed, **fields)
        if match.opened:
            self._console(f"{run.name}: {match.rule.name} matched ({match.incident})")

    def decided(self, run: WatchedRun, decision: Decision) -> None:
        rule, digest = decision.rule, self._digest()
        evidence = {**decision.evidence, "rules_digest": digest}
        self._audit.record("incident classified", run=run.name, rule=rule.name, incident=decision.incident,
                           rules_digest=digest, priority=rule.priority, candidates=list(decision.candidates), guard_streak=decision.streak,
                           decision="act" if decision.act else "halt", reason=decision.reason, cause=evidence.get("cause"),
                           captured_lines=len(evidence["captured"]) or None)
        for index, step in enumerate(decision.plan):
            self._audit.record("action planned", run=run.name, rule=rule.name, incident=decision.incident,
                               rules_digest=digest, action=step.name, arg=step.arg, step=index)
        steps = ", ".join(str(s) for s in decision.plan)
        self._console(f"{run.name}: {rule.name} → {steps} ({decision.incident})" if decision.act
                      else f"{run.name}: {decision.reason} → halt ({decision.incident})")
        run.last_incident = f"{rule.name}: {'acting' if decision.act else 'halting'}"
        run.last_incident_id = decision.incident
        run.last_cause = evidence.get("cause")
        plan = [s.to_json() for s in decision.plan]
        self._store.open_incident(decision.incident, run.name, rule.name, plan, evidence)
        self._save(run)
        self._executor.start(IncidentRow(decision.incident, run.name, rule.name, "acting", plan, 0, False, {}, evidence))
