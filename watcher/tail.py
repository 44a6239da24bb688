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
(a first read of a run that has logged for days). The live path reads every
line: a crash is assembled from all of its lines (watcher/crash.py), most
of which no rule's literal is in.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

HEAD_BYTES = 4096
# Larger reads for a filtered catch-up: fewer copies of the carried partial line.
FILTERED_READ_CHUNK = 1 << 20


class LinePrefilter(Protocol):
    """Points at the lines of a buffer worth a look (rules/prefilter.py builds one).

    ``positions(buf)``: ascending offsets into ``buf``; any line not holding
    one of them is known to match nothing, and is counted but not returned.
    """

    def positions(self, buf: bytes) -> Sequence[int]: ...


@dataclass(frozen=True)
class TailPosition:
    """Where to resume reading; persist it and hand it to the next ``LogTailer``."""

    inode: int  # st_ino of the file the offset belongs to (0 = unknown)
    offset: int  # first byte not yet returned as part of a complete line
    head: str  # digest of the file's first line; "" while it is not known yet
    skipping: bool = False  # offset is inside a line already returned cut: drop the rest of it


@dataclass(frozen=True)
class TailLine:
    """One complete line; ``offset`` is where it starts in the file it came from."""

    offset: int
    text: str  # without "\n" / "\r\n"
    cut: bool = False  # the line was longer than max_line_bytes; text is its beginning


def head_digest(fd: int) -> str:
    """Fingerprint of the file's first line, or "" while it can still change.

    Until the first newline (or HEAD_BYTES bytes) is written, the prefix is not
    final, so hashing it would make a first line written in pieces look like a
    replaced file.
    """
    first = os.pread(fd, HEAD_BYTES, 0)
    newline = first.find(b"\n")
    if newline >= 0:
        first = first[: newline + 1]
    elif len(first) < HEAD_BYTES:
        return ""
    return hashlib.blake2b(first, digest_size=16).hexdigest()


def _decode(raw: bytes | bytearray) -> str:
    # "replace" yields exactly the strict decoding for valid UTF-8, so one pass
    # gives "strict, else replacement characters" without ever raising.
    return raw.decode("utf-8", errors="replace")


class _OpenFile:
    """Read state of one open file descriptor (the path may point elsewhere by now)."""

    def __init__(self, fd: int, inode: int, max_line_bytes: int, read_chunk: int):
        self.fd = fd
        self.inode = inode
        self.offset = 0
        self.carry = bytearray()  # bytes from offset on, read but without a newline yet
        self.skipping = False
        self.head = ""
        self.missing = ""  # "deleted" / "moved away" while the path no longer names this file
        self._max_line = max_line_bytes
        self._read_chunk = read_chunk
        self.lines_read = 0  # lines consumed by the current read_new(), returned or skipped by a prefilter

    def seek(self, offset: int, skipping: bool) -> None:
        self.offset = offset
        self.carry.clear()
        self.skipping = skipping

    def read(self, budget: int, lines: list[TailLine], prefilter: LinePrefilter | None = None) -> int:
        """Append complete lines to ``lines``; return the budget left (<= 0: stopped early)."""
        size = self._read_chunk if prefilter is None else max(self._read_chunk, FILTERED_READ_CHUNK)
        while budget > 0:
            chunk = os.pread(self.fd, size, self.offset + len(self.carry))
            if not chunk:
                break
            last = chunk.rfind(b"\n") if prefilter is not None and not self.carry and not self.skipping else -1
            if last >= 0:
                # Straight from the chunk, no copy: the unfinished tail is read again next time.
                self._pick(chunk, last, lines, prefilter)
                self.offset += last + 1
                budget -= last + 1
            else:
                budget -= len(chunk)
                self._consume(chunk, lines, prefilter)
            if len(chunk) < size:
                # The end of the file as of this read: asking again costs a syscall per read to learn
                # nothing. A write after it sends its own event (and the safety poll backs that up).
                break
        if not self.head:
            self.head = head_digest(self.fd)
        return budget

    def finish(self, lines: list[TailLine], prefilter: LinePrefilter | None = None) -> None:
        """Return the unterminated last line of a file nobody will append to through our path."""
        if self.carry and not self.skipping:
            self.lines_read += 1
            if prefilter is None or prefilter.positions(bytes(self.carry)):
                lines.append(TailLine(self.offset, _decode(self.carry)))

    def _consume(self, chunk: bytes, lines: list[TailLine], prefilter: LinePrefilter | None) -> None:
        if self.skipping:
            newline = chunk.find(b"\n")
            if newline < 0:
                self.offset += len(chunk)
                return
            self.seek(self.offset + newline + 1, False)
            chunk = chunk[newline + 1 :]
        last = chunk.rfind(b"\n")
        if last < 0:
            self.carry += chunk
        else:
            complete = bytes(self.carry) + chunk[:last] if self.carry else chunk[:last]
            if prefilter is None:
                pos = self.offset
                for raw in complete.split(b"\n"):
                    lines.append(self._line(pos, raw))
                    pos += len(raw) + 1
                self.lines_read += complete.count(b"\n") + 1
                self.carry = bytearray(chunk[last + 1 :])
            else:
                self._pick(complete + b"\n", len(complete), lines, prefilter)
                self.carry = bytearray()  # the tail is read again, by the copy-free path in read()
            self.offset += len(complete) + 1
        if len(self.carry) > self._max_line:
            self.lines_read += 1
            head = bytes(self.carry[: self._max_line])
            if prefilter is None or prefilter.positions(head):
                lines.append(TailLine(self.offset, _decode(head), cut=True))
            self.seek(self.offset + len(self.carry), True)

    def _pick(self, buf: bytes, end: int, lines: list[TailLine], prefilter: LinePrefilter) -> None:
        """The lines of ``buf[:end]`` the prefilter points at; ``buf[end]`` is a newline, ``buf[0]`` is at ``offset``."""
        self.lines_read += buf.count(b"\n", 0, end + 1)
        line_end = -1
        for hit in prefilter.positions(buf):
            if hit >= end:
                break  # in the unfinished tail
            if hit <= line_end:
                continue  # another hit in a line already taken
            start = buf.rfind(b"\n", 0, hit) + 1
            line_end = buf.find(b"\n", hit, end + 1)
            lines.append(self._line(self.offset + start, buf[start:line_end]))

    def _line(self, offset: int, raw: bytes) -> TailLine:
        if len(raw) > self._max_line:
            return TailLine(offset, _decode(raw[: self._max_line]), cut=True)
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return TailLine(offset, _decode(raw))

    def close(self) -> None:
        os.close(self.fd)


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
        self._current: _OpenFile | None = None
        # The file the path named before a rotation: drained to its end before
        # the new file, so lines written just before the rename are not lost.
        self._retired: _OpenFile | None = None
        self._notes: list[str] = []
        self._open_error = ""
        self._more_pending = False
        self._lines_read = 0
        # (index of its first line in the last batch, file) per file that batch read, to rewind into it.

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

    def read_new(self, prefilter: LinePrefilter | None = None) -> list[TailLine]:
        """Every complete line written since the last call; [] if none or no file.

        With a ``prefilter``, only the lines it points at are returned; the
        read position advances past all of them just the same.
        """
        lines: list[TailLine] = []
        self._more_pending = False
        seen = [f for f in (self._retired, self._current) if f is not None]
        for f in seen:
            f.lines_read = 0
        try:
            budget = self._max_batch
            if self._retired is None:
                self._follow_path()
            if self._retired is not None:
                budget = self._retired.read(budget, lines, prefilter)
                if budget <= 0:
                    self._more_pending = True
                    return lines
                self._retired.finish(lines, prefilter)
                self._retired.close()
                self._retired = None
            if self._current is not None:
                self._more_pending = self._current.read(budget, lines, prefilter) <= 0
        except OSError as exc:
            # Lines already collected stay valid: read state advances chunk by chunk.
            self._notes.append(f"read error ({exc})")
        finally:
            seen += [f for f in (self._retired, self._current) if f is not None and f not in seen]
            self._lines_read = sum(f.lines_read for f in seen)
        return lines

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
        elif cur.head and head_digest(cur.fd) != cur.head:
            self._notes.append("replaced (head changed)")
            cur.seek(0, False)
            cur.head = ""

    def _open(self) -> _OpenFile | None:
        try:
            # O_NONBLOCK: opening a FIFO put in the log's place must not hang the engine.
            fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
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
        return _OpenFile(fd, st.st_ino, self._max_line, self._read_chunk)

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

    def _find_rotated(self, pos: TailPosition) -> _OpenFile | None:
        """Reopen the file we were reading if a rotation renamed it within the same directory.

        Lines written between the last persisted position and the rotation live
        only there; without this they would be lost.
        """
        try:
            with os.scandir(self._path.parent) as entries:
                match = next((e.path for e in entries if e.inode() == pos.inode), None)
            if match is None:
                return None
            fd = os.open(match, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
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
        old = _OpenFile(fd, st.st_ino, self._max_line, self._read_chunk)
        old.seek(pos.offset, pos.skipping)
        old.head = pos.head
        self._notes.append(f"draining rotated file {Path(match).name} from offset {pos.offset}")
        return old
