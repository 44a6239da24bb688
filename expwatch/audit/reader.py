"""Read the audit trail back, oldest first, across rotated files.

The reader runs while a watcher may be appending or rotating, and after a
crash that may have left a torn tail (a full disk, or a foreign writer). A
line that does not parse is skipped and counted, never fatal: the point of
reading the audit log is usually that something went wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

# The fields every reader (timeline, report, live feed) relies on, with the one type each may have.
# A record where one of them has another type was not written by expwatch: skipped and counted.
HEADER_TYPES: dict[str, type] = {"ts": str, "event": str, "run": str, "rule": str, "incident": str, "action": str,
                                 "outcome": str, "decision": str, "reason": str}

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ts(value: Any) -> datetime | None:
    """A record's ``ts`` as an aware datetime, or None if missing or malformed."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``90s`` / ``30m`` / ``2h`` / ``1d`` ago, or an ISO timestamp (naive = local time)."""
    match = _DURATION.match(text)
    if match:
        now = now or datetime.now(timezone.utc)
        return now - timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected a duration like 90s, 30m, 2h, 1d or an ISO timestamp"
        ) from None
    # A person typing a timestamp means their wall clock, not UTC.
    return parsed if parsed.tzinfo else parsed.astimezone()


def audit_files(audit_path: Path) -> list[Path]:
    """The live file and its rotated backups, oldest first (``.N`` … ``.1``, then live)."""
    audit_path = Path(audit_path)
    backups = []
    for candidate in audit_path.parent.glob(f"{audit_path.name}.*"):
        suffix = candidate.name[len(audit_path.name) + 1 :]
        if suffix.isdigit():
            backups.append((int(suffix), candidate))
    ordered = [path for _, path in sorted(backups, reverse=True)]
    if audit_path.exists():
        ordered.append(audit_path)
    return ordered


class AuditRecords(Iterator[dict[str, Any]]):
    """Iterator over matching records; ``skipped`` counts unparseable lines seen so far."""

    def __init__(self, files: list[Path], keep: Callable[[dict[str, Any]], bool]):
        self.skipped = 0
        self._records = self._read(files, keep)

    def __next__(self) -> dict[str, Any]:
        return next(self._records)

    def _read(self, files: list[Path], keep: Callable[[dict[str, Any]], bool]) -> Iterator[dict[str, Any]]:
        for path in files:
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                continue  # rotated away between listing and opening
            with handle:
                # Binary iteration splits on b"\n" only; a U+2028 inside a log
                # line must not split a record.
                for raw in handle:
                    if not raw.strip():
                        continue
                    record = self._parse(raw)
                    if record is not None and keep(record):
                        yield record

    def _parse(self, raw: bytes) -> dict[str, Any] | None:
        try:
            record = json.loads(raw.decode("utf-8", errors="replace"))
        except (ValueError, RecursionError):
            # ValueError covers torn JSON and integers longer than int() accepts;
            # RecursionError a line nested deeper than the parser recurses.
            record = None
        if not well_formed(record):
            self.skipped += 1
            return None
        return record


def well_formed(record: Any) -> bool:
    """An object with an ``event``, whose header fields have the types expwatch writes (None allowed but for event)."""
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return False
    return all(record.get(key) is None or isinstance(record[key], kind) for key, kind in HEADER_TYPES.items())


def iter_records(
    audit_path: Path,
    run: str | None = None,
    rule: str | None = None,
    since: datetime | None = None,
) -> AuditRecords:
    """Records of ``audit_path`` and its backups, oldest first, filtered.

    With ``since``, records whose ``ts`` cannot be read are left out: they
    cannot be shown to be recent.
    """
    if since is not None and since.tzinfo is None:
        since = since.astimezone()

    def keep(record: dict[str, Any]) -> bool:
        if run is not None and record.get("run") != run:
            return False
        if rule is not None and record.get("rule") != rule:
            return False
        if since is not None:
            ts = parse_ts(record.get("ts"))
            return ts is not None and ts >= since
        return True

    return AuditRecords(audit_files(audit_path), keep)
