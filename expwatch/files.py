"""Crash-safe file primitives shared by every stage.

Evaluation scripts and expwatch itself rewrite JSON files while other
processes read them. Writers go through a temp file + rename so readers see
either the old or the new content; readers still meet files written by
scripts that do not (a plain ``open(..., "w")``), so a parse failure is
reported as "not readable yet" and retried, never raised as a crash.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class NotReadyYet(Exception):
    """A file exists but cannot be parsed now (half-written, or mid-rename)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: not readable yet ({reason})")
        self.path = path
        self.reason = reason


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that no reader ever sees a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    """Parse a JSON file; FileNotFoundError if absent, NotReadyYet if torn."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError as exc:
        raise NotReadyYet(path, "is a directory") from exc
    if not raw.strip():
        raise NotReadyYet(path, "empty")
    try:
        return json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise NotReadyYet(path, f"invalid JSON at line {exc.lineno} column {exc.colno}") from exc


def read_json_lines(path: Path) -> list[Any]:
    """Parse a JSON Lines file, one value per line; FileNotFoundError if absent.

    A last line without its newline that does not parse is a record being
    written: it is left out (the next read picks it up), never an error. A
    broken line anywhere else is NotReadyYet naming its line number.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError as exc:
        raise NotReadyYet(path, "is a directory") from exc
    lines = raw.split(b"\n")
    values = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line.decode("utf-8", errors="replace")))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise NotReadyYet(path, f"invalid JSON at line {number} column {exc.colno}") from exc
    return values
