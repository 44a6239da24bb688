"""``expwatch resume`` and ``expwatch stop``: a human's word on a run."""

from __future__ import annotations

import argparse
import sys
import threading

from expwatch.actions.context import ActionContext, ActionFailed
from expwatch.actions.process import restart
from expwatch.audit.log import AuditLog
from expwatch.run_options import now_iso
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import ManifestError, RunManifest, load_named, save_manifest
from expwatch.runners.registry import Runners
from expwatch.settings import load_settings


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


def _context(layout: ExperimentsLayout, name: str, audit: AuditLog, why: str) -> ActionContext:
    settings = load_settings(layout)
    return ActionContext(layout=layout, settings=settings, runners=Runners(settings), audit=audit, run=name,
                         incident=f"manual-{why}", rule="manual", evidence={}, stop=threading.Event(), console=print)


def _named(args: argparse.Namespace, command: str) -> tuple[ExperimentsLayout, RunManifest] | None:
    layout = ExperimentsLayout.at(args.dir)
    try:
        return layout, load_named(layout, args.name)
    except ManifestError as exc:
        print(f"expwatch {command}: {exc}", file=sys.stderr)
        return None


def run_resume(args: argparse.Namespace) -> int:
    found = _named(args, "resume")
    if found is None:
        return 2
    layout, manifest = found
    audit = AuditLog(layout.audit_path)
    save_manifest(layout, manifest.with_changes(halted=None, stopped_at=None, completed_at=None))
    audit.record("run resumed by hand", run=args.name, was_halted=manifest.halted.reason if manifest.halted else None)
    try:
        result = restart(_context(layout, args.name, audit, "resume"), None)
    except ActionFailed as exc:
        audit.record("action failed", run=args.name, action="restart", error=str(exc))
        print(f"expwatch resume: {exc}", file=sys.stderr)
        return 1
    audit.record("action finished", run=args.name, action="restart", outcome=result.outcome, **result.details)
    where = f"job {result.details['job_id']}" if result.details.get("job_id") else f"pid {result.details.get('pid')}"
    print(f"resumed {args.name}: {where}")
    return 0


def run_stop(args: argparse.Namespace) -> int:
    found = _named(args, "stop")
    if found is None:
        return 2
    layout, manifest = found
    audit = AuditLog(layout.audit_path)
    save_manifest(layout, manifest.with_changes(stopped_at=now_iso()))
    settings = load_settings(layout)
    report = Runners(settings).for_manifest(manifest).kill(manifest, settings.number("kill.grace_s"))
    audit.record("run stopped by hand", run=args.name, signalled=list(report.signalled), sigkilled=list(report.killed),
                 skipped=report.skipped or None)
    print(f"stopped {args.name}" + (f" ({report.skipped})" if report.skipped else f": signalled {len(report.signalled)} process(es)"))
    return 0
