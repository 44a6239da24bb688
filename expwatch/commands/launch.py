"""``expwatch launch``: start a run that survives the shell, and record it."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from expwatch.layout import ExperimentsLayout
from expwatch.manifest import ManifestError, RunManifest, save_manifest
from expwatch.preflight import LaunchPlan, flag_int, preflight
from expwatch.profile_slots import claim, runs_using
from expwatch.run_options import add_run_options, now_iso, refuse_live_duplicate, run_paths
from expwatch.trust import make_home
from expwatch.runners.base import LaunchSpec
from expwatch.runners.registry import RUNNER_NAMES, Runners
from expwatch.runstate import exit_code
from expwatch.settings import Profile, SettingsError, load_settings
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
        description="Print the plan (and on a terminal ask to proceed), run the preflight checks, then start CMD "
        "in a new session (stdin /dev/null, stdout+stderr appended to --log), write its manifest under "
        "DIR/.expwatch/runs/ and print PID (the command's own), SID and LOG.",
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
    p.add_argument("--yes", "-y", action="store_true", help="do not ask 'Proceed?' on a terminal")
    p.add_argument("--queue", action="store_true", help="on a profile at its max_runs, wait for a slot instead of refusing")
    p.add_argument("--baseline", metavar="CONFIG_OR_RESULT",
                   help="refuse to launch when the command's config (--config FILE) drifts from this in cache-key fields")
    p.add_argument("--accept-drift", action="store_true", help="launch even when --baseline finds drift")
    p.add_argument("--skip-probe", action="store_true", help="do not probe the profile's endpoint before launching")
    p.add_argument("--skip-worker-check", action="store_true", help="do not check the worker flag against the backend's table")
    p.add_argument("--allow-volatile-log", action="store_true",
                   help="accept a log inside a folder deleted with its worktree (launch.volatile_path_markers)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p.set_defaults(func=run)


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


def confirm(plan: LaunchPlan, assume_yes: bool) -> bool:
    """Print the plan; on a terminal ask before spending (``--yes`` skips the question)."""
    print("\n".join(plan.lines()), flush=True)
    if assume_yes or not sys.stdin.isatty():
        return True
    try:
        answer = input("Proceed? [y/N] ")
    except (EOFError, KeyboardInterrupt):
        print()
        return False
    return answer.strip().lower() in ("y", "yes")


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
        runner_name = args.runner or settings.runner
        runner = runners.named(runner_name)
        refuse_live_duplicate(layout, name, runners)
        make_home(layout, bool(settings.security.group_access))
        profile = settings.profile(args.profile)
        overrides = {**profile.env, **parse_env(args.env)}
    except (ManifestError, SettingsError, ValueError, OSError) as exc:
        print(f"expwatch launch: {exc}", file=sys.stderr)
        return 2
    if args.sbatch and runner_name != "slurm":
        print("expwatch launch: --sbatch needs --runner slurm", file=sys.stderr)
        return 2
    plan = LaunchPlan(name=name, command=tuple(command), expected=args.expected, result=result, log=log, profile=profile,
                      workers=flag_int(tuple(command), settings.worker_flag), worker_flag=settings.worker_flag, runner=runner_name)
    if not confirm(plan, args.yes):
        print("expwatch launch: not confirmed; nothing launched", file=sys.stderr)
        return 1
    env = {**os.environ, **overrides}
    failures = preflight(plan, settings, env, skip_probe=args.skip_probe, skip_workers=args.skip_worker_check,
                         baseline=args.baseline, accept_drift=args.accept_drift, allow_volatile_log=args.allow_volatile_log)
    if failures:
        print("expwatch launch: preflight failed; nothing launched:", file=sys.stderr)
        for failure in failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    warning = volatile_warning(log, settings.launch.volatile_path_markers)
    if warning:
        print(warning, file=sys.stderr)
    holders = runs_using(layout, runners, profile.name, exclude=name) if profile.max_runs else []
    if profile.max_runs and len(holders) >= profile.max_runs and not args.queue:
        print(full_profile_message(profile, holders), file=sys.stderr)
        return 1
    if args.smoke is not None:
        n = args.smoke if args.smoke > 0 else smoke_options_for(list(command)).n
        report = run_smoke(list(command), Path.cwd(), n, env=env)
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
        env=env,
        exit_record=str(layout.exit_path(name)),
        sbatch_args=tuple(args.sbatch),
    )
    launches: list[RunManifest] = []

    def take() -> None:
        launched = runner.launch(spec)
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
            command_pid=launched.command_pid,
            create_time=launched.create_time,
            pgid=launched.pgid,
            sid=launched.sid,
            launched_at=now_iso(),
            profile=profile.name,
            runner=runner_name,
            job_id=launched.job_id,
            sbatch_args=spec.sbatch_args,
        )
        save_manifest(layout, manifest)  # inside the slot claim, so the next claim counts this run
        launches.append(manifest)

    def waiting(users: tuple[str, ...]) -> None:
        print(f"waiting for a slot on profile {profile.name!r} (max_runs {profile.max_runs}; used by {', '.join(users)})", flush=True)

    holders_seen: tuple[str, ...] = ()
    try:
        holders_seen = claim(layout, runners, profile, take, exclude=name, wait=args.queue,
                             poll_s=settings.launch.slot_poll_s, on_wait=waiting).holders
    except OSError as exc:
        print(f"expwatch launch: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if not launches:
            print("expwatch launch: interrupted while waiting for a slot; nothing launched", file=sys.stderr)
            return 130
    if not launches:
        print(full_profile_message(profile, list(holders_seen)), file=sys.stderr)
        return 1
    manifest = launches[0]
    time.sleep(settings.launch.check_after_s)
    if manifest.job_id:
        state = runners.slurm.state(manifest)
        print(f"JOB {manifest.job_id} ({state.state})\nLOG {log}\nRUN {name} ({layout.manifest_path(name)})")
        return 0
    if manifest.sid == os.getsid(0):
        print("expwatch launch: run shares the caller's session; it would die with the shell", file=sys.stderr)
        return 1
    if not runner.alive(manifest):
        code = exit_code(layout.exit_path(name))
        if code != 0:
            ended = "ended" if code is None else f"exited with code {code}"
            print(f"expwatch launch: run {name!r} {ended} within {settings.launch.check_after_s}s; see {log}", file=sys.stderr)
            return 1
    print(f"PID {manifest.shown_pid}\nSID {manifest.sid}\nLOG {log}\nRUN {name} ({layout.manifest_path(name)})")
    return 0


def full_profile_message(profile: Profile, holders: list[str]) -> str:
    return (f"expwatch launch: profile {profile.name!r} is full (max_runs {profile.max_runs}; used by {', '.join(holders)}); "
            "nothing launched; add --queue to wait for a slot")
