"""``expwatch monitor RESULT.json``: the seed's one-shot form, kept for its users' habit.

``monitor experiments/X.json --log experiments/X.log --expected 140`` either
hands the live process writing those files to expwatch (adopting it, the
given values winning over inference) or, when no process is left, says
what the files show: COMPLETE or DEAD at k/N, with exit status 0 or 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from expwatch.adoption import ProcessUnreadable, adopt_found, find_writer, inferred_lines, writers_of
from expwatch.files import NotReadyYet
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import ManifestError, discover
from expwatch.results.progress import checkpoint_path_for, read_progress
from expwatch.run_options import absolute
from expwatch.runstate import RunState, observe
from expwatch.settings import SettingsError, load_settings
from expwatch.watcher.discover import DiscoveryConfig, expected_from_files

EXAMPLE = """examples:
  expwatch monitor experiments/gpt4o.json --log experiments/gpt4o.log --expected 140
  expwatch monitor experiments/gpt4o.json     # finished or dead: COMPLETE (exit 0) or DEAD at k/N (exit 1)
"""

# A watched run in one of these states is not a failure of the one-shot check.
FINE = {RunState.RUNNING, RunState.COMPLETE, RunState.STALE, RunState.PENDING}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "monitor",
        help="adopt the process writing RESULT (and LOG), or report COMPLETE / DEAD from its files",
        description="Find the process writing LOG or naming RESULT in its argv and adopt it with the given values "
        "(they win over inference). With no such process, report the run's state from its files and exit 0 when "
        "it is COMPLETE, 1 when it is DEAD. A run that already has a manifest is reported as `status` sees it.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("result", help="result JSON the run writes")
    p.add_argument("--log", help="log file the run writes")
    p.add_argument("--expected", type=int, help="number of items the run should complete")
    p.add_argument("--dir", help="experiments directory that holds .expwatch/ (default: the folder of RESULT)")
    p.set_defaults(func=run)


def _watched(layout: ExperimentsLayout, result: str, log: str | None) -> int | None:
    for manifest in discover(layout):
        if manifest.result == result or (log and manifest.log == log):
            report = observe(manifest, float("inf"), layout.exit_path(manifest.name))
            done = report.progress.done if report.progress else 0
            print(f"{manifest.name}: {report.state.value} at {done}/{manifest.expected or '?'} (watched, pid {manifest.pid})")
            return 0 if report.state in FINE else 1
    return None


def _from_files(result: str, expected: int | None, config: DiscoveryConfig) -> int:
    checkpoint = str(checkpoint_path_for(Path(result)))
    if expected is None:
        expected = expected_from_files(result, checkpoint, config).value
    try:
        snap = read_progress(Path(result), Path(checkpoint))
    except NotReadyYet as exc:
        print(f"{Path(result).stem}: unreadable result ({exc})", file=sys.stderr)
        return 1
    done = snap.done if snap else 0
    total = expected if expected is not None else "?"
    if expected and done >= expected:
        print(f"{Path(result).stem}: COMPLETE at {done}/{total} (no process)")
        return 0
    print(f"{Path(result).stem}: DEAD at {done}/{total} (no process writes {result})")
    return 1


def run(args: argparse.Namespace) -> int:
    result, log = absolute(args.result), absolute(args.log)
    try:
        layout = ExperimentsLayout.at(args.dir or Path(result).parent)
        settings = load_settings(layout)
        watched = _watched(layout, result, log)
        if watched is not None:
            return watched
        if not writers_of(layout, settings, log, result):
            return _from_files(result, args.expected, DiscoveryConfig.from_settings(settings))
        found = find_writer(layout, settings, log, result)
        given = {"log": log, "result": result, "checkpoint": str(checkpoint_path_for(Path(result))), "expected": args.expected}
        manifest, path = adopt_found(layout, settings, found, given)
    except (ManifestError, SettingsError, ProcessUnreadable) as exc:
        print(f"expwatch monitor: {exc}", file=sys.stderr)
        return 2
    print(f"adopted pid {found.pid} as run {manifest.name!r} ({path}); `expwatch {layout.root}` watches it")
    print("\n".join(inferred_lines(found, given)))
    return 0
