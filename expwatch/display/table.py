"""One frame of the live view, as a pure function of run rows, recent records and the terminal size.

Every line fits the width it is given (wide characters counted, control
characters from log text replaced), so a frame can be painted line by line
without wrapping, whatever the runs or their logs contain.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

from expwatch.terminal import terminal_text
from expwatch.display.records import clock, feed_records, summary, tone

RESET = "\033[0m"
BOLD, DIM = "1", "2"
STATE_SGR = {"RUNNING": "32", "COMPLETE": "36", "DEAD": "1;31", "HALTED": "1;97;41", "STALE": "1;33", "STOPPED": "2", "UNKNOWN": "2", "UNREADABLE": "1;35"}
TONE_SGR = {"bad": "31", "good": "32", "warn": "33", "": ""}
BAR_MIN, BAR_MAX, LAST_MIN = 8, 20, 18
RATE_WINDOW_S = 120.0
RATE_MIN_SPAN_S = 3.0

Segment = tuple[str, str]  # (text, SGR parameters or "")


def char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def clean(text: str) -> str:
    """Log text is untrusted: an escape sequence in it must not reach the terminal."""
    return terminal_text(text)


def visible(text: str) -> int:
    return sum(char_width(c) for c in text)


def cut(text: str, room: int) -> str:
    out, used = [], 0
    for ch in text:
        w = char_width(ch)
        if used + w > room:
            break
        out.append(ch)
        used += w
    return "".join(out)


def fit(segments: Sequence[Segment], width: int, colour: bool) -> str:
    """Segments joined and cut to ``width`` visible columns."""
    out, used = [], 0
    for text, sgr in segments:
        piece = cut(clean(text), width - used)
        if not piece:
            continue
        used += visible(piece)
        out.append(f"\033[{sgr}m{piece}{RESET}" if colour and sgr else piece)
        if used >= width:
            break
    return "".join(out)


class ProgressRates:
    """Items per second of each run over the last couple of minutes, from what the display saw."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def observe(self, name: str, done: int, now: float) -> None:
        samples = self._samples.setdefault(name, deque())
        if samples and done < samples[-1][1]:
            samples.clear()  # started over from scratch
        if not samples or samples[-1][1] != done:
            samples.append((now, done))
        while len(samples) > 1 and now - samples[1][0] > RATE_WINDOW_S:
            samples.popleft()

    def rate(self, name: str, now: float) -> float | None:
        samples = self._samples.get(name)
        if not samples:
            return None
        t0, d0 = samples[0]
        if now - t0 < RATE_MIN_SPAN_S:
            return None
        return (samples[-1][1] - d0) / (now - t0)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s / 86400:.1f}d"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 100:
        return f"{seconds:.0f}s"
    if seconds < 6000:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def rate_text(rate: float | None) -> str:
    if rate is None:
        return "-"
    if rate >= 1:
        return f"{rate:.1f}/s" if rate < 100 else f"{rate:.0f}/s"
    if rate * 60 >= 1:
        return f"{rate * 60:.0f}/m"
    return f"{rate * 3600:.0f}/h" if rate > 0 else "0/s"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    width: int
    right: bool = True


# Dropped in this order when the terminal is too narrow for all of them.
DROP_ORDER = ("log", "rst", "nulls", "eta", "rate", "acc")


def run_cells(view: Any, rate: float | None) -> dict[str, str]:
    expected = view.expected
    done = f"{view.done}/{expected if expected is not None else '?'}"
    running = view.state == "RUNNING"
    eta = (expected - view.done) / rate if running and rate and expected and expected > view.done else None
    return {
        "name": view.name,
        "state": view.state,
        "done": done,
        "rate": rate_text(rate) if running else "-",
        "eta": duration(eta) if eta is not None else "-",
        "acc": f"{view.correct / view.done:.3f}" if view.done else "-",
        "nulls": str(view.null_count),
        "log": age(view.log_age_s),
        "rst": str(view.restarts),
        "last": " · ".join(part for part in (view.job, view.last_incident, view.last_cause) if part),
    }


def layout_columns(rows: list[dict[str, str]], width: int) -> tuple[list[Column], int, int]:
    """The columns that fit, the bar's width (0: none) and the inline last-incident width (0: own line)."""
    name_w = min(max([len(r["name"]) for r in rows] + [4]), 22)
    done_w = max([len(r["done"]) for r in rows] + [4])
    columns = [
        Column("name", "NAME", name_w, right=False), Column("state", "STATE", 8, right=False),
        Column("done", "DONE", done_w), Column("rate", "RATE", 6), Column("eta", "ETA", 6),
        Column("acc", "ACC", 5), Column("nulls", "NULLS", 5), Column("log", "LOG", 4), Column("rst", "RST", 3),
    ]

    def room(cols: list[Column]) -> int:
        return width - sum(c.width for c in cols) - len(cols)  # a space after each column; the last one may be cut

    drops = list(DROP_ORDER)
    while room(columns) < BAR_MIN and drops:
        key = drops.pop(0)
        columns = [c for c in columns if c.key != key]
    if room(columns) < BAR_MIN and name_w > 10:
        columns[0] = Column("name", "NAME", max(10, name_w - (BAR_MIN - room(columns))), right=False)
    avail = room(columns)
    if avail >= BAR_MIN + 1 + LAST_MIN:
        bar = max(BAR_MIN, min(BAR_MAX, avail - 1 - LAST_MIN))
        return columns, bar, avail - 1 - bar
    bar = min(avail, BAR_MAX + 4) if avail >= BAR_MIN else 0  # no bar at all beats a stub of one
    return columns, bar, 0


def bar_segments(view: Any, width: int, ascii_only: bool) -> list[Segment]:
    full, empty = ("#", ".") if ascii_only else ("█", "░")
    if not view.expected:
        return [(" " * width, "")]
    filled = min(width, round(width * view.done / view.expected))
    return [(full * filled, STATE_SGR.get(view.state, "")), (empty * (width - filled), DIM)]


def _cell(column: Column, text: str) -> str:
    text = cut(clean(text), column.width)
    return text.rjust(column.width) if column.right else text.ljust(column.width)


def table_lines(views: list[Any], rates: ProgressRates, width: int, now: float, colour: bool, ascii_only: bool) -> tuple[list[str], list[list[str]]]:
    """The header line and, per run, its row (and its last-incident line when that does not fit inline)."""
    rows = [run_cells(v, rates.rate(v.name, now)) for v in views]
    columns, bar_w, last_w = layout_columns(rows, width)
    head: list[Segment] = []
    for col in columns[:2]:
        head += [(_cell(col, col.header), BOLD), (" ", "")]
    if bar_w:
        head += [("PROGRESS".ljust(bar_w), BOLD), (" ", "")]
    for col in columns[2:]:
        head += [(_cell(col, col.header), BOLD), (" ", "")]
    if last_w:
        head += [("LAST INCIDENT", BOLD)]
    out = []
    for view, cells in zip(views, rows):
        segs: list[Segment] = []
        for col in columns[:2]:
            segs += [(_cell(col, cells[col.key]), STATE_SGR.get(view.state, "") if col.key == "state" else ""), (" ", "")]
        if bar_w:
            segs += [*bar_segments(view, bar_w, ascii_only), (" ", "")]
        for col in columns[2:]:
            segs += [(_cell(col, cells[col.key]), ""), (" ", "")]
        if last_w:
            segs.append((cells["last"], DIM))
        lines = [fit(segs, width, colour)]
        if cells["last"] and not last_w:
            lines.append(fit([("  -> " if ascii_only else "  ↳ ", DIM), (cells["last"], DIM)], width, colour))
        out.append(lines)
    return [fit(head, width, colour)], out


def feed_lines(records: list[dict[str, Any]], count: int, width: int, colour: bool) -> list[str]:
    shown = feed_records(records)[-count:] if count > 0 else []
    name_w = min(max([len(str(r.get("run") or "")) for r in shown] + [1]), 16)
    return [
        fit([(clock(r) + " ", DIM), (cut(str(r.get("run") or "-"), name_w).ljust(name_w) + " ", ""),
             (summary(r), TONE_SGR[tone(r)])], width, colour)
        for r in shown
    ]


def render_frame(title: str, views: list[Any], rates: ProgressRates, records: list[dict[str, Any]],
                 width: int, height: int, now: float, colour: bool = True, ascii_only: bool = False) -> list[str]:
    """At most ``height`` lines, none wider than ``width``."""
    counts: dict[str, int] = {}
    for v in views:
        counts[v.state] = counts.get(v.state, 0) + 1
    tally = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))
    right = " Ctrl-C to stop"
    left = f"expwatch  {len(views)} run{'s' if len(views) != 1 else ''}" + (f": {tally}" if tally else "")
    room = width - visible(left) - len(right) - 2
    place = clean(title)
    if visible(place) > room:  # the end of a path tells which experiments these are
        place = "…" + place[len(place) - room + 1:] if room > 12 else ""
    left += f"  {place}" if place else ""
    segs: list[Segment] = [(left, BOLD)]
    if visible(left) + len(right) <= width:
        segs = [(left, BOLD), (" " * (width - len(right) - visible(left)), ""), (right, DIM)]
    lines = [fit(segs, width, colour)]
    lines.append("")
    if not views:
        lines.append(fit([("no runs yet: start one with  expwatch launch --name NAME --log FILE --dir DIR -- CMD ...", DIM)], width, colour))
    else:
        head, rows = table_lines(views, rates, width, now, colour, ascii_only)
        keep_for_feed = 5 if height >= 16 else 0
        budget = max(1, height - len(lines) - 1 - keep_for_feed)
        lines += head
        used, shown = 0, 0
        for row in rows:
            if used + len(row) > budget - 1 and shown < len(rows) - 1:
                lines.append(fit([(f"... and {len(rows) - shown} more runs (expwatch status shows them all)", DIM)], width, colour))
                break
            lines += row
            used += len(row)
            shown += 1
    feed_room = height - len(lines) - 2
    if feed_room > 0:
        rule = "-" if ascii_only else "─"
        lines.append("")
        lines.append(fit([(rule * 2 + " latest incidents and actions ", DIM), (rule * width, DIM)], width, colour))
        lines += feed_lines(records, feed_room, width, colour)
    return lines[:height]
