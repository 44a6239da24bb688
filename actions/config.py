"""Actions that change how the next restart runs: set_env, switch_profile, scale_workers.

They edit only the manifest; the change takes effect at the next ``restart``.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from expwatch.actions.context import ActionContext, ActionFailed, ActionResult
from expwatch.profile_slots import claim
from expwatch.settings import SettingsError


def set_env(ctx: ActionContext, arg: Any) -> ActionResult:
    values = {str(k): str(v) for k, v in (arg or {}).items()}
    ctx.update(lambda m: m.with_changes(env_overrides={**m.env_overrides, **values}))
    return ActionResult("env set", {"env": values})


def now_iso() -> str:
    # The format of the manifest's launched_at, so profile_since compares with it as text.
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def switch_profile(ctx: ActionContext, arg: Any) -> ActionResult:
    manifest = ctx.manifest()
    try:
        old = ctx.settings.profile(manifest.profile)
        new = ctx.settings.profile(str(arg))
    except SettingsError as exc:
        raise ActionFailed(str(exc)) from None
    def switch(m):
        env = {k: v for k, v in m.env_overrides.items() if k not in old.env}
        return m.with_changes(profile=new.name, env_overrides={**env, **new.env}, profile_since=now_iso(), waiting_for_slot=None)

    def waiting(holders: tuple[str, ...]) -> None:
        ctx.update(lambda m: m.with_changes(waiting_for_slot=new.name))
        ctx.audit.record("waiting for profile slot", run=ctx.run, rule=ctx.rule, incident=ctx.incident,
                         profile=new.name, max_runs=new.max_runs, holders=list(holders))
        ctx.console(f"{ctx.run}: waiting for a slot on profile {new.name!r} (used by {', '.join(holders)})")

    if manifest.profile == new.name:
        ctx.update(switch)
        return ActionResult("profile switched", {"from": old.name, "to": new.name, "env": new.env})
    outcome = claim(ctx.layout, ctx.runners, new, lambda: ctx.update(switch), exclude=ctx.run, wait=True,
                    poll_s=ctx.settings.launch.slot_poll_s, on_wait=waiting,
                    pause=lambda s: ctx.stop.wait(s) or ctx.manifest().stopped_at is not None)
    if not outcome.granted:
        return ActionResult("interrupted")  # shutting down (the next watcher waits on) or stopped by hand
    return ActionResult("profile switched", {"from": old.name, "to": new.name, "env": new.env,
                                             "waited_s": round(outcome.waited_s, 2)})


def _flag_value(argv: list[str], flag: str) -> tuple[int, int | None, bool]:
    """(index, value, joined) of ``--flag N`` or ``--flag=N``; index -1 when absent."""
    for i, token in enumerate(argv):
        if token == flag and i + 1 < len(argv):
            try:
                return i + 1, int(argv[i + 1]), False
            except ValueError:
                return -1, None, False
        if token.startswith(flag + "="):
            try:
                return i, int(token.split("=", 1)[1]), True
            except ValueError:
                return -1, None, False
    return -1, None, False


def scale_workers(ctx: ActionContext, arg: Any) -> ActionResult:
    manifest = ctx.manifest()
    flag = ctx.settings.worker_flag
    try:
        backend = ctx.settings.profile(manifest.profile).backend
    except SettingsError as exc:
        raise ActionFailed(str(exc)) from None
    bounds = ctx.settings.worker_bounds.get(backend)
    argv = list(manifest.argv)
    index, current, joined = _flag_value(argv, flag)
    if index < 0 or current is None:
        return ActionResult("skipped", {"reason": f"no integer {flag} in the run's argv"})
    wanted = max(1, math.floor(current * float(arg)) if float(arg) < 1 else math.ceil(current * float(arg)))
    if bounds:
        wanted = min(max(wanted, bounds.floor), bounds.ceiling)
    argv[index] = f"{flag}={wanted}" if joined else str(wanted)
    ctx.update(lambda m: m.with_changes(argv=tuple(argv)))
    return ActionResult("workers scaled", {"from": current, "to": wanted, "backend": backend, "flag": flag})
