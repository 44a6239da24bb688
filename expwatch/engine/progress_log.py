"""Throttled ``progress`` audit records, so ``expwatch report`` can draw progress over time.

A record is written when a run's progress changed and either the period
(``audit.progress_every_s``) has passed or it is a milestone (first sight, a
restart, completion). Called on every read, the safety poll included, so a
change held back by the throttle is still written within one poll.
"""

from __future__ import annotations

import time

from expwatch.audit.log import AuditLog
from expwatch.engine.runs import WatchedRun


def note_progress(run: WatchedRun, audit: AuditLog, every_s: float) -> None:
    f, m = run.facts, run.manifest
    sample = (f.done, m.restarts)
    if sample == run.progress_noted:
        return
    now = time.time()
    milestone = run.progress_noted is None or m.restarts != run.progress_noted[1] or bool(m.expected and f.done >= m.expected)
    if not milestone and now - run.progress_noted_at < every_s:
        return
    run.progress_noted, run.progress_noted_at = sample, now
    audit.record("progress", run=run.name, done=f.done, expected=m.expected, correct=f.correct,
                 nulls=sum(f.null_reasons.values()), restarts=m.restarts)
