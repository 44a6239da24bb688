"""``expwatch audit``: what happened, when, and why, from the audit trail."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from expwatch.layout import ExperimentsLayout
from expwatch.audit.reader import audit_files, iter_records, parse_since
from expwatch.audit.timeline import render_timeline
from expwatch.terminal import terminal_text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="show the audit trail as a timeline (or raw JSON lines)",
        description="Show what expwatch saw, decided and did, oldest first, across rotated logs.",
        epilog="examples:\n  expwatch audit experiments/ --run gpt4o-mcq --since 2h\n  expwatch audit experiments/ --json | jq -c 'select(.event == \"action failed\")'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", nargs="?", default=".", metavar="DIR", help="experiments directory (default: .)")
    parser.add_argument("--run", help="only records of this run")
    parser.add_argument("--rule", help="only records of this rule")
    parser.add_argument("--since", help="only records newer than 90s/30m/2h/1d ago or an ISO timestamp")
    parser.add_argument("--json", action="store_true", help="print the records as stored, one JSON object per line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    audit_path = ExperimentsLayout.at(Path(args.dir)).audit_path
    if not audit_files(audit_path):
        print(f"expwatch audit: no audit log at {audit_path}", file=sys.stderr)
        return 2
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"expwatch audit: {exc}", file=sys.stderr)
        return 2
    records = iter_records(audit_path, run=args.run, rule=args.rule, since=since)
    if args.json:
        # The writer renders with plain json.dumps too, so this reproduces the stored line.
        lines = (json.dumps(record) for record in records)
    else:
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        lines = (terminal_text(line) for line in render_timeline(records, colour=colour))
    for line in lines:
        print(line)
    if records.skipped:
        print(f"expwatch audit: skipped {records.skipped} unreadable line(s)", file=sys.stderr)
    return 0
