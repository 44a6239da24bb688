"""``expwatch resume`` and ``expwatch stop``: a human's word on a run, recorded like any incident.

Each is an incident of its own kind (``MANUAL_RESUME``, ``MANUAL_STOP``)
with the same planned/started/finished records and state-store steps as a
rule's, run by the same executor, so the audit tells one story and a
resume interrupted half way is finished by the next watcher, never doubled.
"""

from __future__ import annotations

import argparse
import sys
import threading

from expwatch.actions.context import ActionContext
from expwatch.actions.executor import IncidentExecutor
from expwatch.audit.log import AuditLog
from expwatch.engine.recording import CLASSIFIED, announce
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import ManifestError, RunManifest, load_named, save_manifest
from expwatch.processes import this_process
from expwatch.rules.incidents import new_incident_id
from expwatch.rules.loader import RulesError, load_rules
from expwatch.run_options import now_iso
from expwatch.runners.registry import Runners
from expwatch.settings import Settings, SettingsError, load_settings
from expwatch.state import IncidentRow, StateStore

# The resume's restart clears the halt in the same manifest write that records the new process
# (actions/process.py restart): cleared before, the watcher would take the old, dead process for a death.
MANUAL = {"resume": ("MANUAL_RESUME", [{"name": "restart", "arg": "resume"}]),
          "stop": ("MANUAL_STOP", [{"name": "kill", "arg": None}])}


def register(sub: argparse._SubParsersAction) -> None:
    for name, func, text in (
        ("resume", run_resume, "clear a HALTED (or STOPPED) run and restart it from its checkpoint"),
        ("stop", run_stop, "end a run for good: kill its processes and stop acting on it"),
    ):
        p = sub.add_parser(name, help=text, description=text,
                           epilog=f"example:\n  expwatch {name} gpt4o-mcq --dir experiments", formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("name")
        p.add_argument("--dir", default=".", help="experiments directory (default: .)")
        p.set_defaults(func=func)


def _named(args: argparse.Namespace, command: str) -> tuple[ExperimentsLayout, RunManifest] | None:
    """The run, or None after saying why: the manifest and the settings are checked before anything is changed."""
    layout = ExperimentsLayout.at(args.dir)
    try:
        load_settings(layout)
        return layout, load_named(layout, args.name)
    except (ManifestError, SettingsError) as exc:
        print(f"expwatch {command}: {exc}", file=sys.stderr)
        return None


def _digest(layout: ExperimentsLayout, settings: Settings) -> str | None:
    try:
        return load_rules(layout.rules_path, set(settings.profiles)).digest
    except RulesError:
        return None


def _manual_incident(layout: ExperimentsLayout, name: str, kind: str, audit: AuditLog) -> tuple[str, list[str]]:
    """Plan, record and run a manual incident; (outcome, failure messages)."""
    settings = load_settings(layout)
    rule, plan = MANUAL[kind]
    incident = new_incident_id()
    reason = f"{kind} by hand"
    # The owner: a watcher that starts meanwhile leaves the incident to this command (expwatch/engine/recovery.py).
    context = {"reason": reason, "rules_digest": _digest(layout, settings), "owner": this_process(),
               CLASSIFIED: {"decision": "act", "reason": reason, "candidates": [rule]}}
    failures: list[str] = []

    def listen(record: dict) -> None:
        if record.get("incident") == incident and record.get("event") == "action failed":
            failures.append(str(record.get("error")))

    audit.add_listener(listen)
    store = StateStore(layout.state_db)
    try:
        row = IncidentRow(incident, name, rule, "acting", plan, 0, False, {}, context)
        store.open_incident(incident, name, rule, plan, context)
        announce(audit, row)
        outcomes: list[str] = []
        lock = threading.Lock()

        def make_context(row: IncidentRow) -> ActionContext:
            return ActionContext(layout=layout, settings=settings, runners=Runners(settings), audit=audit, run=name,
                                 incident=row.id, rule=row.rule, evidence=row.context, stop=threading.Event(),
                                 console=print, manifest_lock=lock)

        executor = IncidentExecutor(store, audit, make_context, lambda closed: outcomes.append(closed.outcome), dry_run=False)
        executor.run_here(row)
    finally:
        store.close()
    return (outcomes[0] if outcomes else "interrupted"), failures


def run_resume(args: argparse.Namespace) -> int:
    found = _named(args, "resume")
    if found is None:
        return 2
    layout, manifest = found
    audit = AuditLog(layout.audit_path)
    audit.record("run resumed by hand", run=args.name, was_halted=manifest.halted.reason if manifest.halted else None)
    outcome, failures = _manual_incident(layout, args.name, "resume", audit)
    if failures or outcome != "restarted":
        print(f"expwatch resume: {'; '.join(failures) or outcome}", file=sys.stderr)
        return 1
    now = load_named(layout, args.name)
    print(f"resumed {args.name}: " + (f"job {now.job_id}" if now.job_id else f"pid {now.pid}"))
    return 0


def run_stop(args: argparse.Namespace) -> int:
    found = _named(args, "stop")
    if found is None:
        return 2
    layout, manifest = found
    audit = AuditLog(layout.audit_path)
    # Marked first: the watcher must not take the kill for a death to heal.
    save_manifest(layout, manifest.with_changes(stopped_at=now_iso()))
    audit.record("run stopped by hand", run=args.name)
    outcome, failures = _manual_incident(layout, args.name, "stop", audit)
    if failures:
        print(f"expwatch stop: {'; '.join(failures)}", file=sys.stderr)
        return 1
    print(f"stopped {args.name}")
    return 0
