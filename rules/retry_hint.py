"""Adjust an incident's plan to what the crash says: the server's retry hint, the fix to name.

Pure: a plan (list of ``{"name", "arg"}`` steps) and the incident evidence
in, a new plan and evidence out. Called once where an incident is decided.

- **Waits obey the server.** A crash carrying a retry hint (``Please try again
  in 20s``, ``retry after 86400 seconds``) makes the plan wait at least that
  long before it restarts (bounded by ``crash.retry_wait_max_s``; the wait
  action reads ``wait_at_least_s`` from the evidence). A hint longer than
  ``crash.retry_halt_above_s`` means the quota is gone for hours: sleeping
  and failing again helps nobody, so the plan becomes a halt that says when.
- **Halts name the fix.** A halt reason may hold ``{advice}``, ``{status}``,
  ``{code}``, ``{cause}``, ``{item}`` and ``{key_env}``; they are filled from the
  crash and the advice table (``crash.advice`` in the settings, matched by
  the rules' own crash matcher), and ``fix`` in the evidence becomes the
  first line of the diagnosis bundle.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from expwatch.rules.crashmatch import holds
from expwatch.rules.model import CrashAtom
from expwatch.rules.patterns import Pattern, compile_pattern
from expwatch.watcher.events import Crash, Frame


@dataclass(frozen=True)
class Advice:
    atoms: tuple[CrashAtom, ...]  # all must hold
    say: str


@dataclass(frozen=True)
class CrashPolicy:
    """The ``crash`` settings the plan adjustment needs."""

    retry_wait_max_s: float = 900.0
    retry_halt_above_s: float = 3600.0
    advice: tuple[Advice, ...] = ()
    key_env: tuple[tuple[str, str], ...] = ()  # (exception module prefix, its API key variable)
    # RE2, like every user pattern: it reads the log lines before a crash, on the engine thread.
    # The settings check (expwatch/settings_schema.py) refuses one RE2 cannot run, or one with no group.
    item_pattern: Pattern = compile_pattern(r"\bitem[ =:#]+([\w./-]+)")

    @classmethod
    def from_settings(cls, crash: dict[str, Any]) -> "CrashPolicy":
        advice = []
        for i, entry in enumerate(crash.get("advice") or []):
            atoms = tuple(CrashAtom(f"advice_{i}_{field}", field, tuple(v) if isinstance(v, list) else (v,))
                          for field, v in entry["when"].items())
            advice.append(Advice(atoms, str(entry["say"])))
        return cls(float(crash.get("retry_wait_max_s", 900)), float(crash.get("retry_halt_above_s", 3600)), tuple(advice),
                   tuple((str(k), str(v)) for k, v in (crash.get("key_env") or {}).items()),
                   compile_pattern(str(crash["item_pattern"])) if "item_pattern" in crash else cls.item_pattern)


def crash_from_json(data: dict[str, Any]) -> Crash:
    frame = data.get("frame")
    return Crash(
        kind=data["kind"], chain=tuple((t, m) for t, m in data["chain"]), status=data.get("status"),
        error_code=data.get("error_code"), error_type=data.get("error_type"), retry_after_s=data.get("retry_after_s"),
        frame=Frame(frame["file"], frame["line"], frame["function"]) if frame else None,
        lines=tuple(data.get("lines") or ()), lines_dropped=data.get("lines_dropped", 0), offset=data.get("offset", -1), end_offset=data.get("end_offset", -1),
        before=tuple(data.get("before") or ()),
    )


class _Fields(string.Formatter):
    def get_value(self, key, args, kwargs):
        return kwargs.get(key, "?")


def fields(crash: Crash, policy: CrashPolicy) -> dict[str, str]:
    modules = [t.split(".", 1)[0] for t, _ in crash.chain]
    key_env = next((var for prefix, var in policy.key_env if prefix in modules), "the API key variable")
    item = None
    for line in reversed(crash.before):
        if m := policy.item_pattern.search(line):
            item = m.group(1)
            break
    values = {
        "status": str(crash.status) if crash.status is not None else "no status",
        "code": crash.error_code or crash.error_type or crash.final[0].rsplit(".", 1)[-1],
        "cause": crash.cause(), "key_env": key_env, "item": item or "(unknown: the log did not name it)",
    }
    said = next((a.say for a in policy.advice if all(holds(atom, crash) for atom in a.atoms)), None)
    values["advice"] = _Fields().format(said, **values) if said else f"the server refused the request ({values['status']} {values['code']})"
    return values


def adjust(plan: list[dict[str, Any]], evidence: dict[str, Any], policy: CrashPolicy, now: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The plan and evidence to act on, given the crash the evidence carries (unchanged without one)."""
    if not evidence.get("crash"):
        return plan, evidence
    crash = crash_from_json(evidence["crash"])
    evidence = dict(evidence)
    hint = crash.retry_after_s
    if hint is not None and any(step["name"] == "restart" for step in plan):
        if hint > policy.retry_halt_above_s:
            at = datetime.fromtimestamp(now, timezone.utc) + timedelta(seconds=hint)
            reason = f"quota exhausted: the server asks to retry after {hint:g} s (at {at.isoformat(timespec='seconds')})"
            evidence["fix"] = reason
            return [{"name": "halt", "arg": reason}], evidence
        wait = min(hint, policy.retry_wait_max_s)
        evidence["wait_at_least_s"] = wait
        if not any(step["name"] == "wait" for step in plan):
            first_restart = next(i for i, step in enumerate(plan) if step["name"] == "restart")
            plan = plan[:first_restart] + [{"name": "wait", "arg": wait}] + plan[first_restart:]
    if any(step["name"] == "halt" and isinstance(step["arg"], str) and "{" in step["arg"] for step in plan):
        values = fields(crash, policy)
        plan = [{**step, "arg": _Fields().format(step["arg"], **values)} if step["name"] == "halt" and isinstance(step["arg"], str) else step
                for step in plan]
        evidence["fix"] = next(step["arg"] for step in plan if step["name"] == "halt")
    return plan, evidence
