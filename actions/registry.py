"""Action names (as written in the rules file) → the functions that do them.

The names are ``expwatch.catalog.ACTION_NAMES``; this maps each to its function.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from expwatch.actions.config import scale_workers, set_env, switch_profile
from expwatch.actions.context import ActionContext, ActionResult
from expwatch.actions.halt import complete, halt
from expwatch.actions.notify import alert, alert_returns_at_once, exec_command
from expwatch.actions.process import free_gpu, kill, restart


def wait(ctx: ActionContext, arg: Any) -> ActionResult:
    """Sleep on the incident's own thread, so other runs keep being watched.

    The deadline is persisted when the step starts, so a watcher restarted
    mid-wait waits only for what is left.
    """
    if "until" not in ctx.step_info:
        # Never shorter than the server's retry hint (rules/retry_hint.py put it in the evidence).
        ctx.remember(until=time.time() + max(float(arg), float((ctx.evidence or {}).get("wait_at_least_s") or 0)))
    remaining = max(0.0, ctx.step_info["until"] - time.time())
    interrupted = ctx.stop.wait(remaining)
    return ActionResult("interrupted" if interrupted else "waited", {"seconds": float(arg), "remaining_at_start": round(remaining, 3)})


ACTIONS: dict[str, Callable[[ActionContext, Any], ActionResult]] = {
    "kill": kill,
    "wait": wait,
    "set_env": set_env,
    "switch_profile": switch_profile,
    "scale_workers": scale_workers,
    "restart": restart,
    "free_gpu": free_gpu,
    "halt": halt,
    "alert": alert,
    "exec": exec_command,
    "complete": complete,
}


# Steps that, with the argument given, return at once and touch no process: a plan made only of them
# is run on the engine thread (``IncidentExecutor.start``), where a thread of its own cost an
# informational incident more than its decision (thread start, GIL handoffs; BENCHMARKS.md, issue 16).
RETURNS_AT_ONCE: dict[str, Callable[[Any], bool]] = {
    "alert": alert_returns_at_once,
}


def returns_at_once(step: dict[str, Any]) -> bool:
    at_once = RETURNS_AT_ONCE.get(step["name"])
    return at_once is not None and at_once(step.get("arg"))
