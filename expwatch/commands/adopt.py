"""``expwatch adopt``: take over a run that was started by hand.

The live process is the only faithful record of how it was started, so
argv, cwd and environment are read from it (``/proc``) rather than asked of
the user; the environment is stored only where it differs from ours.
"""

from __future__ import annotations

import argparse
import os
import sys

import psutil

from expwatch.commands.launch import add_run_options, now_iso, refuse_live_duplicate, run_paths
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import ManifestError, RunManifest, save_manifest
from expwatch.runners.registry import Runners
from expwatch.settings import SettingsError, load_settings
from expwatch.trust import make_home

EXAMPLE = """example:
  expwatch adopt --pid 48121 --log experiments/o3.log --result experiments/o3.json --expected 500 --dir experiments
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adopt",
        help="record a manifest for a run started by hand",
        description="Read argv, cwd and environment from the live process PID and write a manifest, "
        "so the run can be watched and restarted exactly as it was started.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--profile", help="backend profile the run uses")
    add_run_options(p)
    p.set_defaults(func=run)


def env_difference(theirs: dict[str, str], ours: dict[str, str], ignore: set[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """(overrides, unset): what to apply to *ours* to get *theirs*."""
    overrides = {k: v for k, v in theirs.items() if k not in ignore and ours.get(k) != v}
    unset = tuple(sorted(k for k in ours if k not in theirs and k not in ignore))
    return overrides, unset


def run(args: argparse.Namespace) -> int:
    try:
        layout = ExperimentsLayout.at(args.dir)
        settings = load_settings(layout)
        name, log, result, checkpoint = run_paths(args)
        refuse_live_duplicate(layout, name, Runners(settings))
        make_home(layout, bool(settings.get("security.group_access")))
        profile = settings.profile(args.profile)
        proc = psutil.Process(args.pid)
        with proc.oneshot():
            argv = tuple(proc.cmdline())
            cwd = proc.cwd()
            environ = proc.environ()
            create_time = proc.create_time()
    except (ManifestError, SettingsError) as exc:
        print(f"expwatch adopt: {exc}", file=sys.stderr)
        return 2
    except psutil.NoSuchProcess:
        print(f"expwatch adopt: no process with pid {args.pid}", file=sys.stderr)
        return 2
    except psutil.AccessDenied:
        print(f"expwatch adopt: not allowed to read pid {args.pid}'s command line and environment", file=sys.stderr)
        return 2
    if not argv:
        print(f"expwatch adopt: pid {args.pid} has no command line (a kernel thread or a zombie)", file=sys.stderr)
        return 2
    overrides, unset = env_difference(environ, dict(os.environ), set(settings.get("adopt.ignore_env")))
    manifest = RunManifest(
        name=name,
        argv=argv,
        cwd=cwd,
        log=log,
        env_overrides=overrides,
        env_unset=unset,
        result=result,
        checkpoint=checkpoint,
        expected=args.expected,
        pid=args.pid,
        create_time=create_time,
        pgid=os.getpgid(args.pid),
        sid=os.getsid(args.pid),
        launched_at=now_iso(),
        profile=profile.name,
        adopted=True,
    )
    path = save_manifest(layout, manifest)
    print(f"adopted pid {args.pid} as run {name!r} ({path})")
    print(f"argv: {' '.join(argv)}\ncwd:  {cwd}\nenv overrides: {len(overrides)}, unset: {len(unset)}")
    return 0
