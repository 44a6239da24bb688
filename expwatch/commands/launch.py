"""``expwatch launch``: start a run that survives the shell, and record it."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from expwatch.layout import ExperimentsLayout
from expwatch.trust import make_home
from expwatch.files import NotReadyYet
from expwatch.manifest import ManifestError, RunManifest, load_manifest, save_manifest, validate_name
from expwatch.results.progress import checkpoint_path_for
from expwatch.runners.base import LaunchSpec
from expwatch.runners.registry import RUNNER_NAMES, Runners
from expwatch.runstate import exit_code
from expwatch.settings import SettingsError, load_settings
from expwatch.results.smoke import run_smoke, smoke_options_for

EXAMPLE = """examples:
  expwatch launch --name gpt4o-mcq --log experiments/gpt4o.log \\
      --result experiments/gpt4o.json --expected 500 --dir experiments \\
      -- python eval.py --model gpt-4o --output experiments/gpt4o.json
  expwatch launch --runner slurm --sbatch=--time=120 --sbatch=--gres=gpu:1 --name qwen \\
      --log experiments/qwen.log --result experiments/qwen.json --expected 500 --dir experiments \\
      -- python eval.py --model qwen --output experiments/qwen.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "launch",
        help="start an evaluation in its own session and record its manifest",
        description="Start CMD in a new session (stdin /dev/null, stdout+stderr appended to --log), "
        "write its manifest under DIR/.expwatch/runs/, print PID, SID and LOG.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(p)
    p.add_argument("--profile", help="backend profile from configs/profiles.yaml (default: settings 'profile')")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="extra environment for this run (repeatable)")
    p.add_argument("--smoke", type=int, nargs="?", const=-1, metavar="N", help="first run CMD on N items (default from configs) and launch only if they validate")
    p.add_argument("--runner", choices=RUNNER_NAMES, help="where the run runs: local process or SLURM job (default: settings 'runner')")
    p.add_argument("--sbatch", action="append", default=[], metavar="ARG",
                   help="an sbatch option for --runner slurm, written with '=' (repeatable), e.g. --sbatch=--time=60")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p.set_defaults(func=run)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``launch`` and ``adopt``."""
    p.add_argument("--name", help="run name (default: stem of --result, else of --log)")
    p.add_argument("--log", required=True, help="log file the run writes (appended)")
    p.add_argument("--result", help="result JSON the run writes")
    p.add_argument("--checkpoint", help="checkpoint JSON (default: {stem}_checkpoint.json beside --result)")
    p.add_argument("--expected", type=int, help="number of items the run should complete")
    p.add_argument("--dir", default=".", help="experiments directory that holds .expwatch/ (default: .)")


def _abs(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def run_paths(args: argparse.Namespace) -> tuple[str, str, str | None, str | None]:
    """(name, log, result, checkpoint) as absolute paths, with the defaults applied."""
    log = _abs(args.log)
    result = _abs(args.result)
    checkpoint = _abs(args.checkpoint) or (str(checkpoint_path_for(Path(result))) if result else None)
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
        where = f"job {old.job_id}" if old.job_id else f"pid {old.pid}"
        raise ManifestError(f"run {name!r} is already running as {where}; pick another --name")


def volatile_warning(log: str, markers: list[str]) -> str | None:
    for marker in markers:
        if marker in log + "/":
            return (
                f"warning: log {log} lies inside {marker!r}, a folder that tools delete with their worktree; "
                "the run's log must outlive it (put it in the main checkout)"
            )
    return None


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ManifestError(f"--env {pair!r}: expected K=V")
        env[key] = value
    return env


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("expwatch launch: missing command after --", file=sys.stderr)
        return 2
    try:
        layout = ExperimentsLayout.at(args.dir)
        settings = load_settings(layout)
        name, log, result, checkpoint = run_paths(args)
        runners = Runners(settings)
        runner_name = args.runner or settings.get("runner")
        runner = runners.named(runner_name)
        refuse_live_duplicate(layout, name, runners)
        make_home(layout, bool(settings.get("security.group_access")))
        profile = settings.profile(args.profile)
        overrides = {**profile.env, **parse_env(args.env)}
    except (ManifestError, SettingsError, ValueError, OSError) as exc:
        print(f"expwatch launch: {exc}", file=sys.stderr)
        return 2
    if args.sbatch and runner_name != "slurm":
        print("expwatch launch: --sbatch needs --runner slurm", file=sys.stderr)
        return 2
    warning = volatile_warning(log, settings.get("launch.volatile_path_markers"))
    if warning:
        print(warning, file=sys.stderr)
    if args.smoke is not None:
        n = args.smoke if args.smoke > 0 else smoke_options_for(list(command)).n
        report = run_smoke(list(command), Path.cwd(), n, env={**os.environ, **overrides})
        if not report.ok:
            print(f"expwatch launch: smoke run on {n} items failed; nothing launched:", file=sys.stderr)
            for reason in report.reasons:
                print(f"  - {reason}", file=sys.stderr)
            return 1
        print(f"smoke run on {n} items passed")
    spec = LaunchSpec(
        name=name,
        argv=tuple(command),
        cwd=os.getcwd(),
        log=log,
        env={**os.environ, **overrides},
        exit_record=str(layout.exit_path(name)),
        sbatch_args=tuple(args.sbatch),
    )
    try:
        launched = runner.launch(spec)
    except OSError as exc:
        print(f"expwatch launch: cannot start: {exc}", file=sys.stderr)
        return 1
    manifest = RunManifest(
        name=name,
        argv=tuple(command),
        cwd=spec.cwd,
        log=log,
        env_overrides=overrides,
        result=result,
        checkpoint=checkpoint,
        expected=args.expected,
        pid=launched.pid,
        create_time=launched.create_time,
        pgid=launched.pgid,
        sid=launched.sid,
        launched_at=now_iso(),
        profile=profile.name,
        runner=runner_name,
        job_id=launched.job_id,
        sbatch_args=spec.sbatch_args,
    )
    save_manifest(layout, manifest)
    time.sleep(settings.number("launch.check_after_s"))
    if launched.job_id:
        state = runners.slurm.state(manifest)
        print(f"JOB {launched.job_id} ({state.state})\nLOG {log}\nRUN {name} ({layout.manifest_path(name)})")
        return 0
    if launched.sid == os.getsid(0):
        print("expwatch launch: run shares the caller's session; it would die with the shell", file=sys.stderr)
        return 1
    if not runner.alive(manifest):
        code = exit_code(layout.exit_path(name))
        if code != 0:
            ended = "ended" if code is None else f"exited with code {code}"
            print(f"expwatch launch: run {name!r} {ended} within {settings.number('launch.check_after_s')}s; see {log}", file=sys.stderr)
            return 1
    print(f"PID {launched.pid}\nSID {launched.sid}\nLOG {log}\nRUN {name} ({layout.manifest_path(name)})")
    return 0
