"""Audit records as one line of text: greppable ``key=value`` lines, and short feed lines.

Both come from the record alone, so what the terminal shows is what
``expwatch audit`` will show tomorrow.
"""

from __future__ import annotations

import json
import re
from typing import Any

from expwatch.audit.reader import parse_ts
from expwatch.audit.timeline import detail, shorten

# Written first, in this order; the rest follow in the record's own order, the log line last.
_FIRST = ("run", "event", "rule", "incident", "action", "arg", "outcome", "decision", "reason", "error")
_LAST = ("line",)
# Bookkeeping a person reading the stream does not need; `expwatch audit --json` has it all.
_OMITTED = frozenset({"ts", "file", "offset", "severity", "priority", "step", "rules_digest", "resumed_at_offset"})
_BARE = re.compile(r"^[\w./:@+,%~-]+$")
VALUE_LIMIT = 200
# Values a reader copies and pastes (discovery's `expwatch adopt ...` line): never shortened.
_WHOLE = frozenset({"command"})

# Never in the live feed: they would push every incident off the screen.
FEED_SKIPPED = frozenset({"progress", "action planned", "history read"})


def shown(record: dict[str, Any]) -> bool:
    """Whether a record gets a line of its own on a terminal at all.

    A run found long finished at start is not: a lab's start would print a
    line per run that finished yesterday, and its one ``runs asleep`` record
    speaks for them all (each is in the audit log and ``expwatch audit``).
    """
    return not (record.get("asleep") and record.get("event") == "run discovered")


def rings_bell(record: dict[str, Any]) -> bool:
    """An ``alert`` step done (not a dry run's): the terminal bell goes with its line."""
    return record.get("event") == "action finished" and record.get("action") == "alert" and not record.get("dry_run")


def feed_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records worth a line of a small screen, oldest first.

    A crash matches its rule once per line of the traceback; the first match
    of each rule in an incident says it all. An action's start is shown only
    for a wait (the one step that takes long); its end always follows.
    """
    seen: set[tuple[Any, Any]] = set()
    kept = []
    for record in records:
        event = record.get("event")
        if event in FEED_SKIPPED or (event == "action started" and record.get("action") != "wait") or not shown(record):
            continue
        if event == "rule matched":
            key = (record.get("incident"), record.get("rule"))
            if key in seen:
                continue
            seen.add(key)
        kept.append(record)
    return kept


def clock(record: dict[str, Any]) -> str:
    ts = parse_ts(record.get("ts"))
    return ts.astimezone().strftime("%H:%M:%S") if ts else "??:??:??"


def _value(value: Any, whole: bool = False) -> str:
    if isinstance(value, str):
        text = value if whole else shorten(value, VALUE_LIMIT)
        return text if _BARE.match(text) else json.dumps(text, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def plain_line(record: dict[str, Any]) -> str:
    """``12:00:01 run=gpt4o event="rule matched" rule=RATE_LIMIT incident=i-… line="…"``"""
    present = {k: v for k, v in record.items() if v is not None and k not in _OMITTED}
    keys = [k for k in _FIRST if k in present]
    keys += [k for k in present if k not in _FIRST and k not in _LAST]
    keys += [k for k in _LAST if k in present]
    return " ".join([clock(record), *(f"{k}={_value(present[k], k in _WHOLE)}" for k in keys)])


def _exit_text(record: dict[str, Any]) -> str:
    if record.get("job_id"):
        return f"job {record['job_id']} {record.get('job_state')} on {record.get('node') or '?'} (exit {record.get('returncode')})"
    if record.get("signal"):
        return f"killed by signal {record['signal']}" + (" (OOM killer)" if record.get("oom_killed") else "")
    return f"exited {record.get('returncode')}"


def summary(record: dict[str, Any]) -> str:
    """What happened, in words, without time or run (the feed has columns for those)."""
    event, rule = str(record.get("event", "?")), record.get("rule")
    action, outcome = record.get("action"), record.get("outcome")
    if event == "rule matched":
        line = record.get("line")
        text = f"{rule} matched" + (" (incident in progress)" if record.get("suppressed") else "")
        return text + (f": {shorten(line, 120)}" if isinstance(line, str) else "")
    if event == "incident classified":
        text = f"{rule}: {'HALT' if record.get('decision') == 'halt' else 'acting'}"
        text += f" ({record['reason']})" if record.get("reason") else ""
        return text + (f" — {shorten(record['cause'], 100)}" if record.get("cause") else "")
    if event == "action started" and action == "wait" and isinstance(record.get("arg"), (int, float)):
        return f"{rule}: waiting {record['arg']:g}s"
    if event == "action started":
        return f"{rule or ''} {action}{'' if record.get('arg') is None else ' ' + _value(record['arg'])} ...".strip()
    if event == "action finished":
        if action == "halt":
            return f"HALTED: {record.get('reason') or ''} (diagnosis: {record.get('bundle')}; expwatch resume {record.get('run')})"
        if action == "complete":
            acc = record.get("raw_acc")
            issues = record.get("issues")
            return "COMPLETE" + (f", raw accuracy {acc:.3f}" if isinstance(acc, (int, float)) else "") + (
                f", {len(issues)} validation issue(s)" if isinstance(issues, list) else "")
        extra = record.get("reason") or record.get("pid") or record.get("message")
        return f"{action}: {outcome}" + (f" ({extra})" if extra else "")
    if event == "action failed":
        return f"{action} FAILED: {record.get('error')}"
    if event == "incident closed":
        return f"{rule} incident closed: {outcome}"
    if event == "process exited":
        return f"process {record.get('pid')} {_exit_text(record)}"
    if event == "run discovered":
        return "run discovered, " + ("process alive" if record.get("alive") else "no live process") + (
            f", halted: {record['halted']}" if record.get("halted") else "")
    if event == "runs asleep":
        return (f"{record.get('count')} finished run(s) asleep, {record.get('unchanged')} of them unchanged since the last watcher: "
                "watched again when their files change")
    if event in ("run suggested", "run adopted"):
        which = f"SLURM job {record['job_id']}" if record.get("job_id") else f"pid {record.get('pid')}"
        if event == "run suggested":
            return f"found {which} started by hand; to watch it: {record.get('command')}"
        inferred = record.get("inferred") or {}
        expected = (inferred.get("expected") or {}).get("value")
        return f"adopted {which} (expected {expected or '?'}, log {(inferred.get('log') or {}).get('value')})"
    if event == "notify sent":
        return f"notified ({record.get('notify')})"
    if event == "notify failed":
        return f"notification FAILED ({record.get('notify')}): {record.get('error')}"
    tail = detail(record)
    return f"{event}: {tail}" if tail else event


def tone(record: dict[str, Any]) -> str:
    """bad | good | warn | '' : how a display should colour the record."""
    event = str(record.get("event", ""))
    if "fail" in event or "refused" in event or record.get("decision") == "halt" or record.get("action") == "halt" \
            or record.get("outcome") == "halted":
        return "bad"
    if record.get("action") == "complete" or record.get("outcome") in ("restarted", "completed") or "recovered" in event:
        return "good"
    if event in ("rule matched", "incident classified", "process exited"):
        return "warn"
    return ""
