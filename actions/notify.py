"""alert and exec: tell a human, or run the user's own command.

Incident fields reach the user's command as EXPWATCH_* environment
variables, never through a shell: log text is untrusted.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from expwatch.actions.command_env import exec_env, exec_text
from expwatch.actions.context import ActionContext, ActionFailed, ActionResult
from expwatch.redact import redact_env


def incident_env(ctx: ActionContext, message: str) -> dict[str, str]:
    evidence = ctx.evidence or {}
    incident = {
        "EXPWATCH_RUN": ctx.run,
        "EXPWATCH_RULE": ctx.rule,
        "EXPWATCH_INCIDENT": ctx.incident,
        "EXPWATCH_MESSAGE": message,
        "EXPWATCH_DIR": str(ctx.layout.root),
        "EXPWATCH_EVIDENCE": str(evidence.get("line") or evidence.get("reason") or "")[:4000],
    }
    # The watcher's own environment passes as it is; only the incident's text comes from the run:
    # redacted, and with NUL bytes escaped (they cannot be in an environment).
    return exec_env({**os.environ, **redact_env(incident)})


def run_command(ctx: ActionContext, argv: list[str], message: str, timeout_s: float) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [exec_text(a) for a in argv], env=incident_env(ctx, message), stdin=subprocess.DEVNULL, capture_output=True,
            text=True, errors="replace", timeout=timeout_s,
        )
    except FileNotFoundError:
        raise ActionFailed(f"command {argv[0]!r} not found") from None
    except OSError as exc:  # not executable, a directory, too many processes ...
        raise ActionFailed(f"command {argv[0]!r} cannot be run: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise ActionFailed(f"command {argv[0]!r} did not finish within {timeout_s:g}s") from None
    if done.returncode != 0:
        raise ActionFailed(f"command {argv[0]!r} exited {done.returncode}: {done.stderr.strip()[:200]}")
    return {"argv": argv, "returncode": 0, "stdout": done.stdout.strip()[:500]}


def alert_returns_at_once(arg: Any) -> bool:
    """An alert without a command only writes a console line and an audit record."""
    return not (isinstance(arg, dict) and arg.get("argv"))


def alert(ctx: ActionContext, arg: Any) -> ActionResult:
    """The terminal bell is the display's (``display.records.rings_bell``): written here, on whatever
    thread runs the step, it could block on a pipe nobody reads."""
    spec = arg if isinstance(arg, dict) else {"message": arg or ""}
    message = spec.get("message") or f"{ctx.rule} on run {ctx.run}"
    ctx.console(f"ALERT {ctx.run}: {ctx.rule}: {message}")
    details: dict[str, Any] = {"message": message}
    if spec.get("argv"):
        # An alert only informs: its command failing is recorded, and the incident goes on.
        try:
            details["command"] = run_command(ctx, list(spec["argv"]), message, float(spec.get("timeout_s", 30)))
        except ActionFailed as exc:
            return ActionResult("alert command failed", {**details, "error": str(exc)})
    return ActionResult("alerted", details)


def exec_command(ctx: ActionContext, arg: Any) -> ActionResult:
    message = arg.get("message") or f"{ctx.rule} on run {ctx.run}"
    return ActionResult("executed", run_command(ctx, list(arg["argv"]), message, float(arg.get("timeout_s", 60))))
