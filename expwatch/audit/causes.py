"""The cause of each run's last classified incident, read back from the audit trail for `expwatch status`.

Status runs without a watcher, so the cause comes from the one place that
keeps it: the ``cause`` field of ``incident classified`` records. Only the
tail of the current audit file is read (``TAIL_BYTES``), so status stays
quick on a log of many megabytes; a run whose last incident is older than
that tail shows none.
"""

from __future__ import annotations

import json
from pathlib import Path

TAIL_BYTES = 1 << 20


def last_causes(audit_path: Path) -> dict[str, str]:
    try:
        with open(audit_path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - TAIL_BYTES))
            tail = fh.read().split(b"\n")
    except FileNotFoundError:
        return {}
    causes: dict[str, str] = {}
    for raw in tail:
        if b'"incident classified"' not in raw or b'"cause"' not in raw:
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # the torn first line of the tail, or a foreign writer's
        if record.get("event") == "incident classified" and record.get("cause") and record.get("run"):
            causes[record["run"]] = str(record["cause"])
    return causes
