"""Tail one log file the way a careful human would, across restarts and rotations.

Evaluation runs write logs that get rotated, copy-truncated, deleted and
recreated while we watch, and expwatch itself restarts. The tailer hides all
of that: each call returns only lines the writer has finished (a line written
in pieces is one line), and its ``position`` lets a restarted process resume
without repeating or losing lines. It never blocks and never decides anything;
the engine thread calls it on watchdog events and on a slow safety poll.

What happened to the file (rotation, truncation, deletion, ...) is not a line,
so it is reported separately through ``drain_notes()`` for the audit trail.

Given a ``LinePrefilter`` the tailer scans whole chunks of raw bytes and
builds ``TailLine`` objects only for the few lines the prefilter points at,
counting the rest in ``lines_read``. Catch-up on a long history needs that
(a first read of a run that has logged for days), and so does the live path,
where building a ``str`` per line was most of the watcher's work. Two
readers of the live lines need more than the lines the prefilter points at,
and the tailer serves both while keeping no more of the log than a few lines:

- a reader that remembers the last few lines before something (the crash
  assembler's ``before``) gets, ahead of each returned line, the
  ``lines_before`` lines skipped just before it, so what it remembers is
  what it would have remembered given every line;
- a reader that, at some returned line, needs every line after it (a crash
  opened, an incident collects evidence) calls ``reread_after``: the file
  itself is the buffer of recent raw bytes, so those lines are read again.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from expwatch.watcher.tailfile import LinePrefilter, OpenLogFile, SkippedLines, TailLine, head_digest

__all__ = ["LinePrefilter", "LogTailer", "TailLine", "TailPosition", "head_digest"]


@dataclass(frozen=True)
class TailPosition:
    """Where to resume reading; persist it and hand it to the next ``LogTailer``."""

    inode: int  # st_ino of the file the offset belongs to (0 = unknown)
    offset: int  # first byte not yet returned as part of a complete line
    head: str  # digest of the file's first line; "" while it is not known yet
    skipping: bool = False  # offset is inside a line already returned cut: drop the rest of it


READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO put in the log's place must not hang the engine


def open_for_reading(path: Path | str) -> int:
    """A log's descriptor, without access-time updates where the kernel allows it (the file's owner).

    A read of a file written since its last read updates its access time
    (relatime): for a log read after every write, an inode journalled
    per read, 3% of the watcher's CPU at 100 chatty runs (BENCHMARKS.md,
    issue 16). O_NOATIME is refused (EPERM) to anyone but the owner; then
    the log is opened as usual.
    """
    try:
        return os.open(path, READ_FLAGS | os.O_NOATIME)
    except PermissionError:
        return os.open(path, READ_FLAGS)


class LogTailer:
    """Follow ``path`` by name: returns every complete line written since the last call.

    Call ``read_new()`` until ``more_pending`` is False to catch up on a large
    backlog in bounded batches; call ``drain_notes()`` afterwards to collect
    what happened to the file itself, e.g. ``"rotated (inode 12 -> 34)"``.
    """

    def __init__(
        self,
        path: Path,
        position: TailPosition | None = None,
        max_line_bytes: int = 1 << 20,
        read_chunk: int = 1 << 16,
        max_batch_bytes: int = 8 << 20,
    ):
        self._path = Path(path)
        self._resume = position
        self._max_line = max_line_bytes
        self._read_chunk = read_chunk
        self._max_batch = max_batch_bytes
        self._current: OpenLogFile | None = None
        # The file the path named before a rotation: drained to its end before
        # the new file, so lines written just before the rename are not lost.
        self._retired: OpenLogFile | None = None
        self._notes: list[str] = []
        self._open_error = ""
        self._more_pending = False
        self._lines_read = 0
        self._skipped = SkippedLines(max_line_bytes)
        # (index of its first line in the last batch, file) per file that batch read, to rewind into it.
        self._batch_files: list[tuple[int, OpenLogFile]] = []
        self._last_lines: list[TailLine] = []

    @property
    def position(self) -> TailPosition:
        """What to persist so a restarted process resumes exactly here."""
        f = self._retired or self._current
        if f is None:
            return self._resume or TailPosition(0, 0, "")
        return TailPosition(f.inode, f.offset, f.head, f.skipping)

    @property
    def lines_read(self) -> int:
        """Lines the last ``read_new()`` consumed, including those a prefilter did not return."""
        return self._lines_read

    @property
    def more_pending(self) -> bool:
        """The last ``read_new()`` stopped at its batch limit; call it again now."""
        return self._more_pending

    def drain_notes(self) -> list[str]:
        """File-level happenings since the last drain, oldest first."""
        notes, self._notes = self._notes, []
        return notes

    def read_new(self, prefilter: LinePrefilter | None = None, lines_before: int = 0, until: int | None = None,
                 appended: bool = False) -> list[TailLine]:
        """Every complete line written since the last call; [] if none or no file.

        With ``until``, no byte of the file the path names at or past that
        offset is read (a history read that stops where news begins).

        ``appended``: the caller knows the path was only written to since the
        last call (inotify saw no rename, creation or deletion), so the path
        is not looked up again for a rotation; the first line is still
        compared (a file rewritten in place), and a read that finds nothing
        new (a truncation in place) looks the careful way.

        With a ``prefilter``, only the lines it points at are returned; the
        read position advances past all of them just the same. With
        ``lines_before``, each returned line comes after the last that many
        lines skipped before it (by this read or an earlier one with the same
        ``lines_before``), so the last lines before any returned one are
        always those of the file.
        """
        lines: list[TailLine] = []
        self._more_pending = False
        self._skipped.resize(lines_before)
        self._batch_files = []
        seen = [f for f in (self._retired, self._current) if f is not None]
        for f in seen:
            f.lines_read = 0
        try:
            cur = self._current
            quick = appended and until is None and self._retired is None and cur is not None and not cur.missing
            while True:
                budget = self._max_batch
                if quick:
                    read_to = cur.offset + len(cur.carry)
                    self._check_head(cur)
                elif self._retired is None:
                    self._follow_path()
                if self._retired is not None:
                    self._batch_files.append((len(lines), self._retired))
                    budget = self._retired.read(budget, lines, prefilter)
                    if budget <= 0:
                        self._more_pending = True
                        return lines
                    self._retired.finish(lines, prefilter)
                    self._retired.close()
                    self._retired = None
                if self._current is not None:
                    self._batch_files.append((len(lines), self._current))
                    self._more_pending = self._current.read(budget, lines, prefilter, until) <= 0
                if quick and self._current is cur and cur.offset + len(cur.carry) == read_to:
                    quick = False  # nothing new where a write was seen: truncated in place? Look the careful way.
                    self._batch_files = []
                    continue
                break
        except OSError as exc:
            # Lines already collected stay valid: read state advances chunk by chunk.
            self._notes.append(f"read error ({exc})")
        finally:
            seen += [f for f in (self._retired, self._current) if f is not None and f not in seen]
            self._lines_read = sum(f.lines_read for f in seen)
            self._last_lines = lines
        return lines

    def skip_quiet(self, prefilter: LinePrefilter, lines_before: int) -> int | None:
        """The live path's shortcut after a write: the new complete lines if the prefilter points at none.

        Call it when the path was only written to since the last read
        (``FileChanged.appended``). Those lines are consumed as ``read_new``
        would consume them (remembered for ``lines_before``) and their count
        is returned. None, with nothing consumed, when the read needs
        ``read_new``: a line worth a look, a partial line carried, a rotated
        file still drained, a backlog of more than one chunk, or nothing new
        (a truncation in place, which ``read_new`` notices). Nearly every
        write is a line no rule can match; ``read_new``'s general bookkeeping
        for them was most of the watcher's CPU at 100 chatty runs. The first
        line is not compared here: a file rewritten in place is noticed by the
        next ``read_new`` (a line worth a look, or the engine's safety poll).
        """
        f = self._current
        if f is None or self._retired is not None or f.carry or f.skipping or f.missing or not f.head \
                or lines_before != self._skipped.keep:
            return None
        try:
            chunk = os.pread(f.fd, self._read_chunk, f.offset)
        except OSError:
            return None  # read_new meets it again and notes it
        end = chunk.rfind(b"\n")
        if end < 0 or len(chunk) == self._read_chunk:
            return None
        hits = prefilter.positions(chunk)
        if hits and hits[0] <= end:
            return None
        if lines_before:
            self._skipped.remember(f.offset, chunk, 0, end + 1)
        f.offset += end + 1
        return chunk.count(b"\n", 0, end + 1)

    def reread_after(self, index: int) -> bool:
        """Make the next ``read_new()`` resume right after line ``index`` of the last batch.

        For a prefiltered read whose reader found, at that line, that it needs
        every following line too: the lines skipped after it are read again
        from the file, and no longer counted in ``lines_read``. False (nothing
        changed) when the line came from a rotated file already drained and
        closed: its later lines are gone.
        """
        owner = next((f for first, f in reversed(self._batch_files) if first <= index), None)
        if owner is None or owner not in (self._retired, self._current) or index >= len(self._last_lines):
            return False
        line = self._last_lines[index]
        try:
            consumed = os.pread(owner.fd, owner.offset - line.offset, line.offset).count(b"\n")
        except OSError:
            return False
        # Resume at the line's start while dropping the rest of it: exactly the bytes after it.
        owner.seek(line.offset, True)
        self._lines_read -= consumed - 1
        self._skipped.forget()  # they follow the line, and are read again
        if owner is self._retired:
            self._more_pending = True
        return True

    def close(self) -> None:
        for f in (self._retired, self._current):
            if f is not None:
                f.close()
        self._retired = self._current = None

    def _follow_path(self) -> None:
        """Notice what happened to the path since the last call, before reading."""
        try:
            st = os.stat(self._path)
        except OSError:
            st = None
        cur = self._current
        if cur is None:
            if st is not None:
                self._open_first()
            return
        if st is None:
            if not cur.missing:
                cur.missing = "deleted" if os.fstat(cur.fd).st_nlink == 0 else "moved away"
                self._notes.append(cur.missing)
            return
        if st.st_ino != cur.inode:
            new = self._open()
            if new is not None:
                how = "recreated" if cur.missing == "deleted" else "rotated"
                self._notes.append(f"{how} (inode {cur.inode} -> {new.inode})")
                self._retired, self._current = cur, new
            return
        cur.missing = ""
        read_to = cur.offset + len(cur.carry)
        if st.st_size < read_to:
            self._notes.append(f"truncated (size {st.st_size} < offset {read_to})")
            cur.seek(0, False)
            cur.head = ""
        else:
            self._check_head(cur)

    def _check_head(self, cur: OpenLogFile) -> None:
        if cur.head and cur.head_changed():
            self._notes.append("replaced (head changed)")
            cur.seek(0, False)
            cur.head = ""

    def _open(self) -> OpenLogFile | None:
        try:
            fd = open_for_reading(self._path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._note_open_error(f"cannot open ({exc.strerror})")
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            self._note_open_error("not a regular file")
            return None
        self._open_error = ""
        return OpenLogFile(fd, st.st_ino, self._max_line, self._read_chunk, self._skipped)

    def _note_open_error(self, error: str) -> None:
        # The safety poll retries forever; one note per distinct problem is enough.
        if error != self._open_error:
            self._open_error = error
            self._notes.append(error)

    def _open_first(self) -> None:
        """Open the file for the first time, resuming from the persisted position if it still fits."""
        new = self._open()
        if new is None:
            return
        self._current = new
        pos, self._resume = self._resume, None
        if pos is None:
            return
        size = os.fstat(new.fd).st_size
        same_inode = pos.inode in (0, new.inode)
        same_head = not pos.head or pos.head == head_digest(new.fd)
        if same_inode and same_head and size >= pos.offset:
            new.seek(pos.offset, pos.skipping)
        elif not same_inode:
            self._notes.append(f"rotated while down (inode {pos.inode} -> {new.inode})")
            self._retired = self._find_rotated(pos)
        elif not same_head:
            self._notes.append("replaced while down (head changed)")
        else:
            self._notes.append(f"truncated while down (size {size} < offset {pos.offset})")

    def _find_rotated(self, pos: TailPosition) -> OpenLogFile | None:
        """Reopen the file we were reading if a rotation renamed it within the same directory.

        Lines written between the last persisted position and the rotation live
        only there; without this they would be lost.
        """
        try:
            with os.scandir(self._path.parent) as entries:
                match = next((e.path for e in entries if e.inode() == pos.inode), None)
            if match is None:
                return None
            fd = open_for_reading(match)
        except OSError:
            return None
        st = os.fstat(fd)
        if (
            st.st_ino != pos.inode
            or not stat.S_ISREG(st.st_mode)
            or st.st_size < pos.offset
            or (pos.head and head_digest(fd) != pos.head)
        ):
            os.close(fd)
            return None
        old = OpenLogFile(fd, st.st_ino, self._max_line, self._read_chunk, self._skipped)
        old.seek(pos.offset, pos.skipping)
        old.head = pos.head
        self._notes.append(f"draining rotated file {Path(match).name} from offset {pos.offset}")
        return old
