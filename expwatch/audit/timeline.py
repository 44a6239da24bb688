"""Render audit records as a timeline a person reads at 9 a.m. after a night of runs.

One line per record, fixed column order (time, run, event, rule, incident,
detail) so ``grep`` and ``sort`` work on it. A date line is printed when the
day changes, because long runs cross midnight and ``HH:MM:SS`` alone would
lie about order. The detail column picks the one thing that tells the story
of the record: what action and how it ended, what error, or which log line
matched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

from expwatch.audit.reader import parse_ts

LINE_LIMIT = 100
# Short ids keep their full form; longer ones keep the tail, where generated
# ids carry their distinguishing counter or random part.
INCIDENT_WIDTH = 8

_RED, _GREEN, _YELLOW, _RESET = "\033[31m", "\033[32m", "\033[33m", "\033[0m"


def shorten(text: str, limit: int = LINE_LIMIT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_incident(incident: Any) -> str:
    if incident is None:
        return "-"
    text = str(incident)
    return text if len(text) <= INCIDENT_WIDTH + 4 else text[-INCIDENT_WIDTH:]


def _cell_value(value: Any) -> str:
    """Bare words stay bare; anything with spaces is quoted so columns still split."""
    if isinstance(value, str) and value and not any(c.isspace() or c == '"' for c in value):
        return shorten(value)
    return json.dumps(shorten(value) if isinstance(value, str) else value, ensure_ascii=False, default=str)


def _matched_line(record: dict[str, Any]) -> str | None:
    """The log line that made a rule fire: the last one, it is usually the fatal one."""
    for holder in (record, record.get("evidence")):
        if isinstance(holder, list) and holder:
            holder = holder[-1]
        if isinstance(holder, str):
            return holder
        if not isinstance(holder, dict):
            continue
        if isinstance(holder.get("line"), str):
            return holder["line"]
        lines = holder.get("lines")
        if isinstance(lines, list) and lines and isinstance(lines[-1], str):
            return lines[-1]
        if isinstance(holder.get("text"), str):
            return holder["text"]
    return None


def detail(record: dict[str, Any]) -> str:
    """The most telling part of a record besides its linking fields."""
    parts = []
    for key in ("action", "outcome", "returncode", "error", "reason"):
        if record.get(key) is not None:
            parts.append(f"{key}={_cell_value(record[key])}")
    line = _matched_line(record)
    if line is not None:
        parts.append(json.dumps(shorten(line), ensure_ascii=False))
    if parts:
        return " ".join(parts)
    rest = {k: v for k, v in record.items() if k not in ("ts", "event", "run", "rule", "incident")}
    return shorten(" ".join(f"{k}={json.dumps(v, default=str)}" for k, v in rest.items()))


def _colour(event: str) -> str:
    if any(word in event for word in ("fail", "refused", "error", "halt")):
        return _RED
    if any(word in event for word in ("finished", "completed", "recovered")):
        return _GREEN
    if "matched" in event:
        return _YELLOW
    return ""


def render_line(record: dict[str, Any], colour: bool = False) -> str:
    ts = parse_ts(record.get("ts"))
    clock = ts.astimezone().strftime("%H:%M:%S.%f")[:-3] if ts else "??:??:??.???"
    event = str(record.get("event", "?"))
    event_cell = f"{event:<20}"
    if colour and _colour(event):
        event_cell = f"{_colour(event)}{event_cell}{_RESET}"
    cells = [
        clock,
        f"{record.get('run') or '-':<16}",
        event_cell,
        f"{record.get('rule') or '-':<14}",
        f"{short_incident(record.get('incident')):<12}",
        detail(record),
    ]
    return " ".join(cells).rstrip()


def render_timeline(records: Iterable[dict[str, Any]], colour: bool = False) -> Iterator[str]:
    """Timeline lines, with a ``--- YYYY-MM-DD ---`` line whenever the local day changes."""
    day: date | None = None
    for record in records:
        ts = parse_ts(record.get("ts"))
        if ts is not None and ts.astimezone().date() != day:
            day = ts.astimezone().date()
            yield f"--- {day.isoformat()} ---"
        yield render_line(record, colour)
