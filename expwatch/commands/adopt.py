"""``expwatch adopt``: take over a run that was started by hand.

With ``--pid`` the process is named; without it, the process that writes
``--log`` (or names ``--result`` in its argv) is found the way the watcher's
discovery finds it, and what was not given is inferred.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from expwatch.adoption import (ProcessRecord, ProcessUnreadable, adopt_found, adopt_job, adopted_manifest, find_writer,
                               inferred_lines, read_process, slurm_environment)
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import ManifestError, discover, save_manifest
from expwatch.processes import CREATE_TIME_TOLERANCE_S
from expwatch.run_options import absolute, add_run_options, refuse_live_duplicate, run_paths
from expwatch.runners.registry import Runners
from expwatch.results.progress import checkpoint_path_for
from expwatch.settings import Settings, SettingsError, load_settings
from expwatch.watcher.discover import DiscoveryConfig
from expwatch.watcher.discover_slurm import SlurmUnavailable, scan_jobs
from expwatch.trust import make_home

EXAMPLE = """examples:
  expwatch adopt --pid 48121 --log experiments/o3.log --result experiments/o3.json --expected 500 --dir experiments
  expwatch adopt --log experiments/o3.log --dir experiments     # find the process writing the log, infer the rest
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adopt",
        help="record a manifest for a run started by hand",
        description="Read argv, cwd and environment from the live process and write a manifest, so the run can be "
        "watched and restarted exactly as it was started. Without --pid, the process writing --log is found and "
        "result, checkpoint, expected items and name are inferred where not given.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--pid", type=int, help="the run's process (default: the one writing --log)")
    which.add_argument("--job", help="a SLURM job id of yours whose StdOut is under DIR: adopt it as a SLURM run")
    p.add_argument("--profile", help="backend profile the run uses")
    add_run_options(p)
    p.set_defaults(func=run)


def _adopt_by_log(args: argparse.Namespace, layout: ExperimentsLayout, settings: Settings) -> int:
    log, result = absolute(args.log), absolute(args.result)
    found = find_writer(layout, settings, log, result)
    checkpoint = absolute(args.checkpoint) or (str(checkpoint_path_for(Path(result))) if result else None)
    given = {"name": args.name, "log": log, "result": result, "checkpoint": checkpoint, "expected": args.expected}
    name = args.name or found.name.value
    refuse_live_duplicate(layout, name, Runners(settings))
    manifest, path = adopt_found(layout, settings, found, {**given, "name": name}, profile=args.profile)
    print(f"adopted pid {found.pid} as run {manifest.name!r} ({path})")
    print("\n".join(inferred_lines(found, given)))
    return 0


def _adopt_job(args: argparse.Namespace, layout: ExperimentsLayout, settings: Settings) -> int:
    jobs = scan_jobs(layout.root, discover(layout), DiscoveryConfig.from_settings(settings), slurm_environment(settings),
                     settings.discovery["squeue_timeout_s"])
    job = next((j for j in jobs if j.job_id == args.job), None)
    if job is None:
        raise ManifestError(f"no live SLURM job {args.job} of yours with its StdOut under {layout.root} lacks a manifest")
    name = args.name or job.name.value
    refuse_live_duplicate(layout, name, Runners(settings))
    given = {"name": name, "log": absolute(args.log), "result": absolute(args.result),
             "checkpoint": absolute(args.checkpoint), "expected": args.expected}
    manifest, path = adopt_job(layout, settings, job, given, profile=args.profile)
    print(f"adopted SLURM job {job.job_id} as run {manifest.name!r} ({path})")
    return 0


def replace_earlier_adoption(layout: ExperimentsLayout, record: ProcessRecord, name: str) -> str | None:
    """The name this very process was already adopted under (by discovery, say), its manifest removed if renamed.

    A process is one run: adopting it again states how the user wants it recorded.
    """
    for manifest in discover(layout):
        if manifest.adopted and manifest.pid == record.pid and manifest.create_time is not None \
                and abs(manifest.create_time - record.create_time) <= CREATE_TIME_TOLERANCE_S:
            if manifest.name != name:
                layout.manifest_path(manifest.name).unlink(missing_ok=True)
                print(f"replacing run {manifest.name!r}, the earlier adoption of pid {record.pid}")
            return manifest.name
    return None


def run(args: argparse.Namespace) -> int:
    try:
        layout = ExperimentsLayout.at(args.dir)
        settings = load_settings(layout)
        if args.job is not None:
            return _adopt_job(args, layout, settings)
        if args.pid is None:
            return _adopt_by_log(args, layout, settings)
        name, log, result, checkpoint = run_paths(args)
        make_home(layout, bool(settings.security.group_access))
        profile = settings.profile(args.profile)
        record = read_process(args.pid)
        earlier = replace_earlier_adoption(layout, record, name)
        if earlier != name:
            refuse_live_duplicate(layout, name, Runners(settings))
    except (ManifestError, SettingsError, ProcessUnreadable, SlurmUnavailable) as exc:
        print(f"expwatch adopt: {exc}", file=sys.stderr)
        return 2
    manifest = adopted_manifest(record, settings, name, log, result, checkpoint, args.expected, profile.name)
    path = save_manifest(layout, manifest)
    print(f"adopted pid {args.pid} as run {name!r} ({path})")
    print(f"argv: {' '.join(manifest.argv)}\ncwd:  {manifest.cwd}\n"
          f"env overrides: {len(manifest.env_overrides)}, unset: {len(manifest.env_unset)}")
    return 0

