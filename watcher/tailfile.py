"""Lines out of one open log file's raw bytes: what ``LogTailer`` reads with, per descriptor.

``LogTailer`` (watcher/tail.py) follows a path across rotations and
restarts; ``OpenLogFile`` is the read state of one descriptor the path
named: the offset of the first byte not yet returned as part of a complete
line, the partial line carried over, and a prefiltered read that builds a
``str`` only for the lines a ``LinePrefilter`` points at. ``SkippedLines``
keeps the last few lines such a read skipped, so a reader can still be
handed the lines just before each returned one.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from dataclasses import dataclass
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
class TailLine:
    """One complete line; ``offset`` is where it starts in the file it came from."""

    offset: int
    text: str  # without "\n" / "\r\n"
    cut: bool = False  # the line was longer than max_line_bytes; text is its beginning


def head_digest(fd: int) -> str:
    """Fingerprint of the file's first line, or "" while it can still change."""
    return _head(fd)[0]


def _head(fd: int) -> tuple[str, bytes]:
    """The first line's fingerprint and bytes; ("", b"") while it can still change.

    Until the first newline (or HEAD_BYTES bytes) is written, the prefix is not
    final, so hashing it would make a first line written in pieces look like a
    replaced file.
    """
    first = os.pread(fd, HEAD_BYTES, 0)
    newline = first.find(b"\n")
    if newline >= 0:
        first = first[: newline + 1]
    elif len(first) < HEAD_BYTES:
        return "", b""
    return hashlib.blake2b(first, digest_size=16).hexdigest(), first


def _decode(raw: bytes | bytearray) -> str:
    # "replace" yields exactly the strict decoding for valid UTF-8, so one pass
    # gives "strict, else replacement characters" without ever raising.
    return raw.decode("utf-8", errors="replace")


class SkippedLines:
    """The last few lines a prefiltered read skipped since it last returned one, as raw bytes.

    Shared by the tailer's files, so the lines just before a rotation are
    still the ones before the first line of the new file. Decoded only when
    a returned line follows them, i.e. almost never. Kept as the spans they
    were read in (a live read skips a line or two at a time), each cut to its
    last ``keep`` lines, so remembering a span is one slice: splitting every
    span into lines was a tenth of the live path.
    """

    def __init__(self, max_line_bytes: int):
        self.keep = 0
        self._max_line = max_line_bytes
        # (offset, raw lines without the last newline) per span, decoded when handed over; the rare
        # lines that are not complete ones ready made.
        self._spans: deque[tuple[int, bytes] | TailLine] = deque(maxlen=0)

    def resize(self, keep: int) -> None:
        """Keep ``keep`` lines from now on; a change forgets those kept (a history read keeps none)."""
        if keep != self.keep:
            self.keep = keep
            self._spans = deque(maxlen=keep)

    def remember(self, offset: int, buf: bytes, start: int, end: int) -> None:
        """Lines of ``buf[start:end]`` (each ended by a newline; ``buf[0]`` is at ``offset``) were skipped."""
        if start >= end:
            return
        if buf.count(b"\n", start, end) > self.keep:
            cut = end
            for _ in range(self.keep):
                cut = buf.rfind(b"\n", start, cut - 1) + 1
            start = cut
        self._spans.append((offset + start, buf[start:end - 1]))

    def remember_line(self, line: TailLine) -> None:
        """A skipped line that is not a complete one (cut, or a rotated file's unterminated last line)."""
        self._spans.append(line)

    def hand_over(self, lines: list[TailLine]) -> None:
        """Put the remembered lines before the line about to be returned, and forget them."""
        if not self._spans:
            return
        kept: list[TailLine] = []
        for span in self._spans:
            if isinstance(span, TailLine):
                kept.append(span)
                continue
            offset, raw = span
            for part in raw.split(b"\n"):
                kept.append(_line(offset, part, self._max_line))
                offset += len(part) + 1
        lines.extend(kept[-self.keep:])
        self._spans.clear()

    def forget(self) -> None:
        self._spans.clear()


def _line(offset: int, raw: bytes, max_line: int) -> TailLine:
    if len(raw) > max_line:
        return TailLine(offset, _decode(raw[:max_line]), cut=True)
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return TailLine(offset, _decode(raw))


class OpenLogFile:
    """Read state of one open file descriptor (the path may point elsewhere by now)."""

    def __init__(self, fd: int, inode: int, max_line_bytes: int, read_chunk: int, skipped: SkippedLines):
        self.fd = fd
        self.inode = inode
        self.offset = 0
        self.carry = bytearray()  # bytes from offset on, read but without a newline yet
        self.skipping = False
        self.head = ""
        self._head_line = b""  # the first line itself, once its digest is known from this descriptor
        self.missing = ""  # "deleted" / "moved away" while the path no longer names this file
        self._max_line = max_line_bytes
        self._read_chunk = read_chunk
        self._skipped = skipped
        self.lines_read = 0  # lines consumed by the current read_new(), returned or skipped by a prefilter

    def seek(self, offset: int, skipping: bool) -> None:
        self.offset = offset
        self.carry.clear()
        self.skipping = skipping

    def read(self, budget: int, lines: list[TailLine], prefilter: LinePrefilter | None = None, until: int | None = None) -> int:
        """Append complete lines to ``lines``, reading no byte at or past ``until``; return the budget left (<= 0: stopped early)."""
        # A first read of the usual size: a live read finds a line or two, and asking for 1 MiB costs
        # a 1 MiB allocation each time (8 µs, more than the read); only a backlog goes on in larger reads.
        size = self._read_chunk
        while budget > 0:
            at = self.offset + len(self.carry)
            want = size if until is None else min(size, until - at)
            if want <= 0:
                break
            chunk = os.pread(self.fd, want, at)
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
            if len(chunk) < want:
                # The end of the file as of this read: asking again costs a syscall per read to learn
                # nothing. A write after it sends its own event (and the safety poll backs that up).
                break
            if prefilter is not None:
                size = max(self._read_chunk, FILTERED_READ_CHUNK)
        if not self.head:
            self.head, self._head_line = _head(self.fd)
        return budget

    def head_changed(self) -> bool:
        """Whether the file's first line is no longer the one ``head`` was taken of (the file was replaced).

        Asked before every read: comparing the line's own bytes costs one
        small pread, where its digest cost a 4 KiB one and a hash.
        """
        if not self._head_line:  # known only by a digest saved by an earlier watcher
            return head_digest(self.fd) != self.head
        return os.pread(self.fd, len(self._head_line), 0) != self._head_line

    def finish(self, lines: list[TailLine], prefilter: LinePrefilter | None = None) -> None:
        """Return the unterminated last line of a file nobody will append to through our path."""
        if self.carry and not self.skipping:
            self.lines_read += 1
            if prefilter is None or prefilter.positions(bytes(self.carry)):
                self._skipped.hand_over(lines)
                lines.append(TailLine(self.offset, _decode(self.carry)))
            elif self._skipped.keep:
                self._skipped.remember_line(TailLine(self.offset, _decode(self.carry)))

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
                self._skipped.hand_over(lines)
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
                self._skipped.hand_over(lines)
                lines.append(TailLine(self.offset, _decode(head), cut=True))
            elif self._skipped.keep:
                self._skipped.remember_line(TailLine(self.offset, _decode(head), cut=True))
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
            if self._skipped.keep:
                self._skipped.remember(self.offset, buf, line_end + 1, start)
                self._skipped.hand_over(lines)
            line_end = buf.find(b"\n", hit, end + 1)
            lines.append(self._line(self.offset + start, buf[start:line_end]))
        if self._skipped.keep:
            self._skipped.remember(self.offset, buf, line_end + 1, end + 1)

    def _line(self, offset: int, raw: bytes) -> TailLine:
        return _line(offset, raw, self._max_line)

    def close(self) -> None:
        os.close(self.fd)
