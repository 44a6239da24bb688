"""Reading a run's files into typed events: its log as ``LogLine``s, its result as ``Progress``.

The engine loop calls these on watchdog events and on the safety poll; they
read, they never decide. Reading stays on the engine thread on purpose: the
tailer's position and the facts it feeds are engine-owned, and a read of
what was just appended costs less than a hop through a queue.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from expwatch.files import NotReadyYet, Unreadable
from expwatch.engine.runs import WatchedRun
from expwatch.results.progress import read_progress
from expwatch.rules.prefilter import LinePrefilter
from expwatch.watcher.crash import CrashAssembler, CrashLimits
from expwatch.watcher.events import LogLine, Progress


@dataclass
class LogRead:
    """The outcome of one read of a run's log, besides its lines."""

    count: int = 0  # lines consumed, including those a prefilter skipped
    notes: tuple[str, ...] = ()  # what happened to the file (rotation, truncation, ...)


def log_lines(run: WatchedRun, replay: bool, prefilter: LinePrefilter | None, read: LogRead) -> Iterator[LogLine]:
    """Every complete new line of the run's log worth a look; ``read`` collects the count and file notes.

    ``prefilter`` skips, in raw bytes, the lines that can change nothing:
    for history (``replay``, which only feeds counters) the lines no rule can
    match; live, also those that start no crash (``LineClassifier.live_prefilter``).
    A skipped live line still counts as log activity, and the crash
    assembler's last lines before a crash are handed over ahead of each line
    returned. While a crash is open or an incident collects evidence every
    line is read, from the line on which that began.
    """
    notes: list[str] = []
    before = 0 if replay else run.crashes.limits.context_lines
    while True:
        filtered = prefilter if replay or not run.reads_every_line else None
        lines = run.tailer.read_new(filtered, before)
        notes.extend(run.tailer.drain_notes())
        rewound = False
        for index, line in enumerate(lines):
            yield LogLine(run.name, run.manifest.log, line.offset, line.text, replay)
            if filtered is not None and not replay and run.reads_every_line:
                rewound = run.tailer.reread_after(index)
                if rewound:
                    break
        read.count += run.tailer.lines_read
        if not run.tailer.more_pending and not rewound:
            break
    if read.count and not replay:
        run.facts.note_activity(time.time())  # the lines skipped after the last one returned are activity too
    read.notes = tuple(notes)


def ending_crash_lines(run: WatchedRun, limits: CrashLimits, tail_bytes: int) -> list[LogLine]:
    """The lines of the crash the run's log ends inside, if it does, from its last ``tail_bytes``.

    Only a crash still open at the end counts (one followed by other lines is
    over, and history). For a run found dead whose log no watcher had read.
    """
    log = run.manifest.log
    try:
        with open(log, "rb") as fh:
            start = max(0, fh.seek(0, os.SEEK_END) - tail_bytes)
            fh.seek(start)
            data = fh.read(tail_bytes)
    except OSError:
        return []
    raw_lines = data.split(b"\n")[:-1]  # the bytes after the last newline are not a line yet
    offset = start
    if start and raw_lines:
        offset += len(raw_lines.pop(0)) + 1  # it begins inside a line
    assembler, lines, opened_at = CrashAssembler(limits), [], 0
    for raw in raw_lines:
        text, was_reading = raw.decode("utf-8", "replace"), assembler.reading
        closed = assembler.feed(text, offset)
        if assembler.reading and (closed or not was_reading):
            opened_at = len(lines)
        lines.append(LogLine(run.name, log, offset, text, False))
        offset += len(raw) + 1
    return lines[opened_at:] if assembler.reading else []


def progress_of(run: WatchedRun) -> Progress | None:
    """What the run's result and checkpoint say now; None while unknown or not readable yet (retried).

    Raises Unreadable when a file can never be read as it is (a FIFO, over a
    bound): the run's problem to report, not the watcher's.
    """
    m = run.manifest
    try:
        snap = read_progress(Path(m.result) if m.result else None, Path(m.checkpoint) if m.checkpoint else None)
    except Unreadable:
        raise
    except NotReadyYet:
        return None
    if snap is None:
        return None
    reasons = dict(snap.null_reasons)
    return Progress(run.name, snap.done, m.expected, snap.correct, sum(reasons.values()), reasons)
