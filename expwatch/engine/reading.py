"""Reading a run's files into typed events: its log as ``LogLine``s, its result as ``Progress``.

The engine loop calls these on watchdog events and on the safety poll; they
read, they never decide. Reading stays on the engine thread on purpose: the
tailer's position and the facts it feeds are engine-owned, and a read of
what was just appended costs less than a hop through a queue.
"""

from __future__ import annotations

import os
import stat
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
from expwatch.watcher.tail import TailPosition, open_for_reading
from expwatch.watcher.tailfile import head_digest


@dataclass
class LogRead:
    """The outcome of one read of a run's log, besides its lines."""

    count: int = 0  # lines consumed, including those a prefilter skipped
    notes: tuple[str, ...] = ()  # what happened to the file (rotation, truncation, ...)


def log_lines(run: WatchedRun, replay: bool, prefilter: LinePrefilter | None, read: LogRead,
              until: int | None = None, appended: bool = False) -> Iterator[LogLine]:
    """Every complete new line of the run's log worth a look; ``read`` collects the count and file notes.

    ``prefilter`` skips, in raw bytes, the lines that can change nothing:
    for history (``replay``, which only feeds counters) the lines no rule can
    match; live, also those that start no crash (``LineClassifier.live_prefilter``).
    A skipped live line still counts as log activity, and the crash
    assembler's last lines before a crash are handed over ahead of each line
    returned. While a crash is open or an incident collects evidence every
    line is read, from the line on which that began. ``until``: read nothing
    from that offset on (where history ends, ``history_end``). ``appended``:
    the path was only written to since the last read (``LogTailer.read_new``).
    """
    notes: list[str] = []
    before = 0 if replay else run.crashes.limits.context_lines
    while True:
        filtered = prefilter if replay or not run.reads_every_line else None
        lines = run.tailer.read_new(filtered, before, until, appended)
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


def quiet_lines(run: WatchedRun, prefilter: LinePrefilter | None) -> int | None:
    """How many new lines of the run's log a write added if none is worth a look; None: read them with ``log_lines``.

    For a log inotify saw only written to (``LogTailer.skip_quiet``); the
    lines count as log activity, as in ``log_lines``.
    """
    if prefilter is None or run.reads_every_line:
        return None
    count = run.tailer.skip_quiet(prefilter, run.crashes.limits.context_lines)
    if count:
        run.facts.note_activity(time.time())
    return count


def history_end(log: str, limits: CrashLimits, tail_bytes: int) -> int | None:
    """Where a first read of ``log`` stops being history: the start of the crash it ends inside, else its end.

    History triggers nothing, but a crash still open at the end of the log
    is not over: its writer is still writing it, or died while no watcher
    read it. Its lines are news, read as a watcher that had been there would
    have read them (found twice: a run that crashed before any watcher read
    its log was decided as a bare DEAD, and a run discovered while writing its
    traceback lost the traceback's cause). Only the log's last
    ``tail_bytes`` are searched; None when the log cannot be read.
    """
    ending = _log_ending(log, limits, tail_bytes)
    return None if ending is None else ending.history_end


def history_position(log: str, limits: CrashLimits, tail_bytes: int, max_line_bytes: int) -> TailPosition | None:
    """Where a first read of a finished run's log would leave its tailer, found from the log's end alone.

    A run that finished long ago is released right after that read, and its
    replayed lines only fed counters that a release drops: so the read
    position is all a first read leaves behind. ``LogTailer`` stops at the
    last complete line before ``history_end`` and keeps the first line's
    digest. None when the end alone cannot tell (no line yet, an unfinished
    last line over ``max_line_bytes``, which the tailer returns cut, or a
    file that is not a regular one): then the log is read.
    """
    ending = _log_ending(log, limits, tail_bytes)
    if ending is None or not ending.head:
        return None
    if ending.history_end != ending.size:
        return TailPosition(ending.inode, ending.history_end, ending.head)  # a crash's first line: a line's start
    if ending.size - ending.last_line_end > max_line_bytes or ending.last_line_end < 0:
        return None
    return TailPosition(ending.inode, ending.last_line_end, ending.head)


@dataclass(frozen=True)
class _LogEnding:
    inode: int
    size: int
    head: str  # the first line's digest ("" while there is no first line)
    history_end: int  # see history_end
    last_line_end: int  # just past the last newline in the bytes read (-1: none there)


def _log_ending(log: str, limits: CrashLimits, tail_bytes: int) -> _LogEnding | None:
    try:
        fd = open_for_reading(log)  # non-blocking: a FIFO put in the log's place must not hang the engine
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        size = info.st_size
        start = max(0, size - tail_bytes)
        data = os.pread(fd, size - start, start)
        head = head_digest(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    newline = data.rfind(b"\n")
    last_line_end = start + newline + 1 if newline >= 0 else -1
    raw_lines = data.split(b"\n")[:-1]  # the bytes after the last newline are not a line yet
    offset = start
    if start and raw_lines:
        offset += len(raw_lines.pop(0)) + 1  # it begins inside a line
    assembler, opened_at = CrashAssembler(limits), None
    for raw in raw_lines:
        was_reading = assembler.reading
        closed = assembler.feed(raw.decode("utf-8", "replace"), offset)
        if assembler.reading and (closed or not was_reading):
            opened_at = offset
        offset += len(raw) + 1
    return _LogEnding(info.st_ino, size, head, opened_at if assembler.reading else size, last_line_end)


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
