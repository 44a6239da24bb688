"""Hot reload of the rules file: a valid edit replaces the Decider, an invalid one is refused once.

A refused edit never stops the watcher: the previous rules keep running and
the refusal (file, line, reason) goes to the audit log and the console. An
editor's save is several file events (truncate, write, close), so a file
found empty mid-save waits for the write's own event, and the same refusal
is recorded once, not once per event.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from expwatch.audit.log import AuditLog
from expwatch.engine.runs import RunTable
from expwatch.rules.decide import Decider
from expwatch.rules.loader import RulesError, load_rules


class RulesReloader:
    def __init__(self, path: Path, profiles: set[str], audit: AuditLog, console: Callable[[str], None]):
        self._path, self._profiles, self._audit, self._console = path, profiles, audit, console
        self._refused: str | None = None

    def reload(self, current: Decider, runs: RunTable) -> Decider:
        """The Decider for the rules now on disk (the current one if they are unchanged, mid-save or invalid)."""
        if os.path.exists(self._path) and os.path.getsize(self._path) == 0:
            return current
        try:
            ruleset = load_rules(self._path, self._profiles)
        except RulesError as exc:
            if str(exc) != self._refused:
                self._refused = str(exc)
                self._audit.record("rules reload refused", file=str(self._path), error=str(exc), kept=current.ruleset.digest)
                self._console(f"rules reload refused, previous rules keep running: {exc}")
            return current
        self._refused = None
        if ruleset.digest == current.ruleset.digest and ruleset.source == current.ruleset.source:
            return current
        decider = Decider(ruleset, current.policy)
        for run in runs:
            run.facts.rebind(ruleset)
            decider.rebind(run.decisions)
        self._audit.record("rules reloaded", file=ruleset.source, digest=ruleset.digest, rules=[r.name for r in ruleset.enabled])
        self._console(f"rules reloaded from {ruleset.source} ({len(ruleset.enabled)} enabled)")
        return decider
