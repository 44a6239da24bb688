"""``expwatch status``: one line per run, or JSON."""

from __future__ import annotations

import argparse
import json
import sys

from expwatch.display.rows import HEADER, format_row, stale_after_s
from expwatch.audit.causes import last_causes
from expwatch.layout import ExperimentsLayout
from expwatch.pipeline.state import all_states, render_states
from expwatch.runstate import observe_all
from expwatch.settings import SettingsError
from expwatch.terminal import terminal_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="one line per run: state, progress, accuracy, nulls, log age",
        description="Show every run recorded under DIR/.expwatch/runs. A run is STALE when its log has been silent "
        "longer than the shortest log_silent_s condition of the rules in force.",
        epilog="example:\n  expwatch status experiments/ --json | jq '.[] | select(.state != \"RUNNING\")'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", nargs="?", default=".")
    p.add_argument("--json", action="store_true", help="print a JSON array of objects")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    layout = ExperimentsLayout.at(args.dir)
    try:
        stale = stale_after_s(layout)
    except SettingsError as exc:
        print(f"expwatch status: {exc}", file=sys.stderr)
        return 2
    reports, note = observe_all(layout, stale)
    if note:
        print(terminal_text(f"expwatch status: {note}"), file=sys.stderr)
    causes = last_causes(layout.audit_path)
    if args.json:
        print(json.dumps([{**r.to_json(), "last_cause": causes.get(r.manifest.name)} for r in reports], indent=2))
        return 0
    if not reports:
        print(f"no runs under {layout.runs_dir}")
    else:
        print(HEADER)
        for report in reports:
            cause = causes.get(report.manifest.name)
            print(terminal_text(format_row(report)) + (f"\n    cause: {terminal_text(cause)}" if cause else ""))
    for report in reports:
        if report.manifest.waiting_for_slot:
            print(terminal_text(f"{report.manifest.name}: switch_profile is waiting for a slot on profile {report.manifest.waiting_for_slot!r}"))
    for line in render_states(all_states(layout)):
        print(terminal_text(line))
    return 0
