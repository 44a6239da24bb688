"""``expwatch status``: one line per run, or JSON."""

from __future__ import annotations

import argparse
import json
import sys

from expwatch.layout import ExperimentsLayout
from expwatch.rules.loader import RulesError, load_rules
from expwatch.manifest import survey
from expwatch.trust import group_shared
from expwatch.runstate import RunReport, RunState, observe_all
from expwatch.settings import SettingsError, load_settings


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


def stale_after_s(layout: ExperimentsLayout) -> float:
    settings = load_settings(layout)
    try:
        thresholds = load_rules(layout.rules_path, set(settings.profiles)).silence_thresholds()
    except RulesError:
        thresholds = []
    return thresholds[0] if thresholds else settings.number("watch.stale_fallback_s")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def format_row(report: RunReport) -> str:
    d = report.to_json()
    done = f"{d['done']}/{d['expected'] if d['expected'] is not None else '?'}"
    acc = f"{d['accuracy']:.3f}" if d["accuracy"] is not None else "-"
    reasons = ",".join(f"{k}:{v}" for k, v in sorted(d["null_reasons"].items()))
    nulls = f"{d['null_count']}" + (f" ({reasons})" if reasons else "")
    alive = d["slurm_state"] or {True: "alive", False: "gone", None: "?"}[d["alive"]]
    where = f"j{d['job_id']}" if d["job_id"] else str(d["pid"] or "-")
    return f"{d['name']:<20} {d['state']:<9} {done:>9} {acc:>6} {nulls:<22} {_age(d['log_age_s']):>6} {where:>7} {alive:<5} {d['restarts']:>3}" + (f" {d['node']}" if d["node"] else "")


HEADER = f"{'NAME':<20} {'STATE':<9} {'DONE':>9} {'ACC':>6} {'NULLS':<22} {'LOG':>6} {'PID':>7} {'PROC':<5} {'RST':>3}"


def run(args: argparse.Namespace) -> int:
    layout = ExperimentsLayout.at(args.dir)
    try:
        stale = stale_after_s(layout)
    except SettingsError as exc:
        print(f"expwatch status: {exc}", file=sys.stderr)
        return 2
    manifests, broken = survey(layout)
    reports, note = observe_all(layout, stale, manifests)
    if note:
        print(f"expwatch status: {note}", file=sys.stderr)
    if args.json:
        rows = [r.to_json() for r in reports] + [{"name": b.name, "state": RunState.UNREADABLE.value, "progress_note": b.reason} for b in broken]
        print(json.dumps(sorted(rows, key=lambda row: row["name"]), indent=2))
        return 0
    if not reports and not broken:
        print(f"no runs under {layout.runs_dir}")
        return 0
    print(HEADER)
    lines = [(r.manifest.name, format_row(r) + (f" {r.progress_note}" if r.state is RunState.UNREADABLE else "")) for r in reports] + [(b.name, f"{b.name:<20} {RunState.UNREADABLE.value} {b.reason}") for b in broken]
    for _, line in sorted(lines):
        print(line)
    if group_shared(layout.home):
        print(f"note: {layout.home} is shared with its group (security.group_access): group members can read and write it")
    return 0
