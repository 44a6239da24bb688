"""``expwatch report DIR``: one self-contained HTML page to read what happened, the morning after."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from expwatch.display.rows import stale_after_s
from expwatch.files import atomic_write_text
from expwatch.layout import ExperimentsLayout
from expwatch.report.gather import build_report
from expwatch.report.html import render_html
from expwatch.settings import SettingsError

EXAMPLE = """examples:
  expwatch report experiments/                     # writes experiments/.expwatch/report.html
  expwatch report experiments/ -o ~/night.html --run gpt4o-mcq --run o3-mcq

The page needs no network: open it from disk, mail it, attach it to an issue.
exit codes: 0 written, 2 DIR has no runs and no audit log, or the page cannot be written
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write one HTML page per experiments directory: timelines, validation, incidents with evidence",
        description="Write a self-contained HTML report of every run under DIR: progress over time with each "
        "incident and action marked, the final validation summary, and every incident with its evidence.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", nargs="?", default=".", help="experiments directory (default: .)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="where to write (default: DIR/.expwatch/report.html)")
    p.add_argument("--run", action="append", metavar="NAME", help="only this run (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    layout = ExperimentsLayout.at(args.dir)
    if not layout.runs_dir.is_dir() and not layout.audit_path.exists():
        print(f"expwatch report: nothing to report in {layout.root} (no {layout.runs_dir} and no audit log)", file=sys.stderr)
        return 2
    try:
        report = build_report(layout.root, stale_after_s(layout), set(args.run) if args.run else None)
    except SettingsError as exc:
        print(f"expwatch report: {exc}", file=sys.stderr)
        return 2
    output = args.output or layout.home / "report.html"
    try:
        atomic_write_text(output, render_html(report))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(output, 0o666 & ~umask)  # a page to share, not a private temp file
    except OSError as exc:
        print(f"expwatch report: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    incidents = sum(len(r.troubles()) for r in report.runs)
    print(f"wrote {output} ({len(report.runs)} runs, {incidents} incidents)")
    return 0
