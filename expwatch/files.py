"""Crash-safe file primitives shared by every stage.

Evaluation scripts and expwatch itself rewrite JSON files while other
processes read them. Writers go through a temp file + rename so readers see
either the old or the new content; readers still meet files written by
scripts that do not (a plain ``open(..., "w")``), so a parse failure is
reported as "not readable yet" and retried, never raised as a crash.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

from expwatch.limits import input_limits


class NotReadyYet(Exception):
    """A file exists but cannot be parsed now (half-written, or mid-rename)."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: not readable yet ({reason})")
        self.path = path
        self.reason = reason


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` so that no reader ever sees a partial file.

    The file is 0600 (mkstemp's mode, whatever the umask) unless ``mode`` says otherwise.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, data: Any, mode: int | None = None) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", mode)


class Unreadable(NotReadyYet):
    """A file that waiting will not fix: not a regular file, too large, too deep, absurd numbers.

    A subclass of NotReadyYet so that every reader that already survives a
    torn file survives this too; callers that show a reason can tell them apart.
    """

    def __init__(self, path: Path | str, reason: str):
        super().__init__(path, reason)
        self.args = (f"{path}: unreadable ({reason})",)


NOT_REGULAR = "not a regular file"


def open_regular(path: Path | str) -> int:
    """A non-blocking descriptor of the regular file at ``path``, for readers that stream it themselves.

    FileNotFoundError if absent; Unreadable for anything else, a FIFO (it
    would block the reader), a device (opening one can act), a symlink loop,
    no permission. As ``read_bounded``, stat is asked before the open and
    fstat after it, which closes the race of a file swapped in between.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise Unreadable(path, NOT_REGULAR)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise Unreadable(path, exc.strerror or str(exc)) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Unreadable(path, NOT_REGULAR)
    return fd


# Called with the open file's fstat before anything is read (expwatch/trust.py's owner and mode check).
FileCheck = Callable[[Path | str, os.stat_result], None]


def read_bounded(path: Path | str, max_bytes: int, check: FileCheck | None = None) -> bytes:
    """A regular file's bytes, at most ``max_bytes``; FileNotFoundError if absent.

    Opened with O_NONBLOCK and checked with fstat before reading, so a FIFO
    or a device planted where a result file should be is refused at once
    instead of blocking the reader forever. ``path`` may be a string: the
    readers of a lab's 11,000 runs call this twice a run, and building a
    Path costs more than the read.
    """
    # Opening a device can itself act (a tape rewinds): refuse what stat already shows; fstat below closes the race.
    # Every error but absence is the file's (a symlink loop, no permission, EIO), reported as its reason:
    # raised as OSError, one such manifest had stopped the watcher at every start.
    try:
        kind = os.stat(path).st_mode
        if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind) or stat.S_ISFIFO(kind)):
            raise Unreadable(path, "not a regular file (socket or device)")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except IsADirectoryError as exc:
        raise NotReadyYet(path, "is a directory") from exc
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise Unreadable(path, exc.strerror or str(exc)) from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise NotReadyYet(path, "is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable(path, "not a regular file (FIFO, socket or device)")
        if check is not None:
            check(path, info)
        if info.st_size > max_bytes:
            raise Unreadable(path, f"{info.st_size} bytes, more than the {max_bytes} allowed")
        # Asking for the size fstat gave (plus one, to see growth) rather than a fixed 1 MB:
        # CPython allocates what is asked, and a buffer that large is an mmap, mremap and munmap
        # per read, which were half the syscalls of `status` over a lab's 11,000 runs.
        chunks, total, want = [], 0, min(info.st_size + 1, max_bytes + 1)
        while chunk := os.read(fd, want):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise Unreadable(path, f"grew past the {max_bytes} bytes allowed while being read")
            if len(chunk) < want:  # a short read of a regular file is its end
                break
            want = min(1 << 20, max_bytes + 1 - total)
        return b"".join(chunks)
    except OSError as exc:  # EIO from a failing disk or a dropped network mount
        raise Unreadable(path, exc.strerror or str(exc)) from exc
    finally:
        os.close(fd)


# Strings are removed first so that brackets inside them do not count; then
# every opening bracket becomes +1 and every closing one -1 (as signed bytes),
# and the running sum's maximum is the depth, all in C.
# (The unrolled string pattern costs ~10 ms per MB, a few times json.loads itself.)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def _json_depth(raw: bytes) -> int:
    steps = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", raw)).translate(_STEP)
    return max(itertools.accumulate(memoryview(steps).cast("b")), default=0)


def _bounded_loads(raw: bytes, path: Path | str, where: str = "") -> Any:
    """One JSON value within configs/limits.yaml's depth and integer-digit bounds.

    The depth is measured before parsing (json's decoder would raise
    RecursionError deep inside), integers are bounded by digits (Python
    refuses more than 4300 with a ValueError of its own).
    """
    limits = input_limits().json
    # No deeper than its count of opening brackets: most files (manifests, small results) are not scanned.
    shallow = raw.count(b"[") + raw.count(b"{") <= limits.max_depth
    if not shallow and (depth := _json_depth(raw)) > limits.max_depth:
        raise Unreadable(path, f"{where}nested {depth} levels deep, more than the {limits.max_depth} allowed")

    def bounded_int(text: str) -> int:
        if len(text.lstrip("-")) > limits.max_int_digits:
            raise Unreadable(path, f"{where}an integer of {len(text.lstrip('-'))} digits, more than the {limits.max_int_digits} allowed")
        return int(text)

    try:
        return json.loads(raw.decode("utf-8", errors="replace"), parse_int=bounded_int)
    except RecursionError as exc:  # only below the depth bound if the interpreter's own limit is lower
        raise Unreadable(path, f"{where}nested too deeply to parse") from exc


def read_json(path: Path | str, check: FileCheck | None = None) -> Any:
    """Parse a JSON file within configs/limits.yaml's bounds.

    FileNotFoundError if absent, NotReadyYet if torn (retry), Unreadable if
    it breaks a bound.
    """
    raw = read_bounded(path, input_limits().json.max_bytes, check)
    if not raw.strip():
        raise NotReadyYet(path, "empty")
    try:
        return _bounded_loads(raw, path)
    except json.JSONDecodeError as exc:
        raise NotReadyYet(path, f"invalid JSON at line {exc.lineno} column {exc.colno}") from exc


def read_text(path: Path, check: FileCheck | None = None) -> str:
    """A UTF-8 text input (rules, settings) within the YAML size bound; UnicodeDecodeError if not UTF-8."""
    return read_bounded(path, input_limits().yaml.max_bytes, check).decode("utf-8")


def read_json_lines(path: Path) -> list[Any]:
    """Parse a JSON Lines file, one value per line, within the same bounds as ``read_json``.

    FileNotFoundError if absent. A last line without its newline that does
    not parse is a record being written: it is left out (the next read picks
    it up), never an error. A broken line anywhere else is NotReadyYet
    naming its line number.
    """
    path = Path(path)
    lines = read_bounded(path, input_limits().json.max_bytes).split(b"\n")
    values = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            values.append(_bounded_loads(line, path, f"line {number}: "))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise NotReadyYet(path, f"invalid JSON at line {number} column {exc.colno}") from exc
    return values
