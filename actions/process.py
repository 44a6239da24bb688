"""Actions on the run's processes: kill, restart, free_gpu."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from expwatch import crashpoints
from expwatch.actions.context import ActionContext, ActionFailed, ActionResult
from expwatch.manifest import RunManifest
from expwatch.runners.base import LaunchSpec, Launched
from expwatch.processes import run_tree, verified_process


def kill(ctx: ActionContext, arg: Any) -> ActionResult:
    grace = float((arg or {}).get("grace_s", ctx.settings.kill.grace_s))
    manifest = ctx.manifest()
    report = ctx.runner_for(manifest).kill(manifest, grace)
    crashpoints.passed("runner:kill")
    if report.skipped:
        return ActionResult("skipped", {"reason": report.skipped})
    return ActionResult("killed", {"signalled": list(report.signalled), "sigkilled": list(report.killed), "grace_s": grace})


def run_environment(manifest: RunManifest) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in manifest.env_unset}
    env.update(manifest.env_overrides)
    return env


def _executable_present(manifest: RunManifest, env: dict[str, str]) -> bool:
    exe = manifest.argv[0]
    if os.sep in exe:
        return os.access(Path(manifest.cwd, exe), os.X_OK)
    return shutil.which(exe, path=env.get("PATH")) is not None


def _log_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


# What a launch for ``expwatch resume`` clears: the marks that told the watcher to leave the run alone.
RESUME_CLEARS = {"halted": None, "stopped_at": None, "completed_at": None}


def _record_launch(ctx: ActionContext, launched: Launched, resume: bool) -> RunManifest:
    log_from = ctx.step_info.get("log_from")
    return ctx.update(
        lambda m: m.with_changes(
            pid=launched.pid,
            create_time=launched.create_time,
            pgid=launched.pgid,
            sid=launched.sid,
            job_id=launched.job_id,
            command_pid=launched.command_pid,
            restarts=m.restarts + 1,
            log_from=log_from,
            launched_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            **(RESUME_CLEARS if resume else {}),
        )
    )


def restart(ctx: ActionContext, arg: Any) -> ActionResult:
    """Start the run again from its checkpoint.

    ``arg`` is ``"resume"`` only in the plan of ``expwatch resume`` (a rules file gives none): the
    manifest write that records the new process also clears the halt, stop and completion marks.
    Cleared any earlier, a watcher would see a run it may act on again whose process is the old,
    dead one, decide it DEAD and restart it a second time (the crash sweep's resume story).
    """
    resume = arg == "resume"
    manifest = ctx.manifest()
    runner = ctx.runner_for(manifest)
    if "restarts_before" in ctx.step_info and manifest.restarts > ctx.step_info["restarts_before"]:
        # The watcher died after recording the relaunch but before finishing the step.
        return ActionResult("restarted", {"pid": manifest.pid, "job_id": manifest.job_id, "recovered": True})
    env = run_environment(manifest)
    spec = LaunchSpec(
        name=manifest.name,
        argv=manifest.argv,
        cwd=manifest.cwd,
        log=manifest.log,
        env=env,
        exit_record=str(ctx.layout.exit_path(manifest.name)),
        sbatch_args=manifest.sbatch_args,
        launch_token=ctx.step_info.get("launch_token") or f"{ctx.incident}-{uuid.uuid4().hex[:8]}",
    )
    if "launch_token" in ctx.step_info:
        # The watcher died between launching and recording: find that launch, never start a second copy.
        found = runner.find_launched(spec)
        if found is not None:
            recorded = _record_launch(ctx, found, resume)
            # A real restart (counted once, here), launched by the watcher that died.
            return ActionResult("restarted", {"pid": found.pid, "job_id": found.job_id, "restarts": recorded.restarts,
                                              "launched_before_watcher_restart": True})
    if runner.alive(manifest):
        runner.kill(manifest, ctx.settings.kill.grace_s)
        crashpoints.passed("runner:kill")
    if not os.path.isdir(manifest.cwd):
        raise ActionFailed(f"working directory {manifest.cwd} is gone")
    if not _executable_present(manifest, env):
        raise ActionFailed(f"executable {manifest.argv[0]!r} not found (cwd {manifest.cwd})")
    # Where the new process's lines will begin: what the log holds after this is not the old process's
    # (the watcher tells a crash of the restarted process from the one this incident handles by it).
    ctx.remember(restarts_before=manifest.restarts, launch_token=spec.launch_token, log_from=_log_size(manifest.log))
    launched = runner.launch(spec)
    crashpoints.passed("runner:launch")
    recorded = _record_launch(ctx, launched, resume)
    where = {"job_id": launched.job_id} if launched.job_id else {"pid": launched.pid, "command_pid": launched.command_pid}
    return ActionResult("restarted", {**where, "restarts": recorded.restarts, "argv": list(manifest.argv)})


def gpu_processes() -> list[int] | None:
    """PIDs using a GPU per nvidia-smi, or None where nvidia-smi is absent."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    out = subprocess.run(
        [exe, "--query-compute-apps=pid", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
    )
    if out.returncode != 0:
        raise ActionFailed(f"nvidia-smi failed: {out.stderr.strip()[:200]}")
    return [int(p) for p in out.stdout.split() if p.strip().isdigit()]


def free_gpu(ctx: ActionContext, arg: Any) -> ActionResult:
    gpu_pids = gpu_processes()
    if gpu_pids is None:
        return ActionResult("skipped", {"reason": "nvidia-smi not found"})
    manifest = ctx.manifest()
    if manifest.runner != "local":
        return ActionResult("skipped", {"reason": f"the run's processes live on a {manifest.runner} node, not here"})
    leader = verified_process(manifest.pid, manifest.create_time)
    mine = {p.pid: p for p in run_tree(leader, manifest.pgid)} if leader else {}
    ended = []
    for pid in gpu_pids:
        if pid in mine:
            mine[pid].kill()
            ended.append(pid)
    time.sleep(0.1 if ended else 0)
    return ActionResult("freed" if ended else "nothing to free", {"gpu_pids": gpu_pids, "ended": ended})
