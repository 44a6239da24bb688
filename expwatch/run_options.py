"""What ``launch``, ``adopt`` and ``monitor`` share about a run's name and files.

Kept out of ``expwatch.commands`` so that no command imports another: the
options, their defaults and the live-duplicate check are one copy here.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from expwatch.files import NotReadyYet
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import ManifestError, load_manifest, validate_name
from expwatch.results.progress import checkpoint_path_for
from expwatch.runners.registry import Runners


def add_run_options(p: argparse.ArgumentParser, log_required: bool = True) -> None:
    """Options shared by ``launch`` and ``adopt``."""
    p.add_argument("--name", help="run name (default: stem of --result, else of --log)")
    p.add_argument("--log", required=log_required, help="log file the run writes (appended)")
    p.add_argument("--result", help="result JSON the run writes")
    p.add_argument("--checkpoint", help="checkpoint JSON (default: {stem}_checkpoint.json beside --result)")
    p.add_argument("--expected", type=int, help="number of items the run should complete")
    p.add_argument("--dir", default=".", help="experiments directory that holds .expwatch/ (default: .)")


def absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def run_paths(args: argparse.Namespace) -> tuple[str, str, str | None, str | None]:
    """(name, log, result, checkpoint) as absolute paths, with the defaults applied."""
    log = absolute(args.log)
    result = absolute(args.result)
    checkpoint = absolute(args.checkpoint) or (str(checkpoint_path_for(Path(result))) if result else None)
    name = validate_name(args.name or Path(result or log).stem)
    return name, log, result, checkpoint


def refuse_live_duplicate(layout: ExperimentsLayout, name: str, runners: Runners) -> None:
    path = layout.manifest_path(name)
    if not path.exists():
        return
    try:
        old = load_manifest(path)
    except (NotReadyYet, ManifestError) as exc:
        # Whether its process lives cannot be told: overwriting could orphan a live run.
        raise ManifestError(f"run {name!r} already has a manifest that cannot be read ({exc}); fix or remove it first") from None
    if runners.for_manifest(old).alive(old):
        where = f"job {old.job_id}" if old.job_id else f"pid {old.shown_pid}"
        raise ManifestError(f"run {name!r} is already running as {where}; pick another --name")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
