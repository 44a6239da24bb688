"""Hot reload of the rules file: a valid edit replaces the Decider, an invalid one is refused.

A refused edit never stops the watcher: the previous rules keep running and
the refusal (file, line, reason) goes to the audit log and the console.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from expwatch.audit.log import AuditLog
from expwatch.engine.runs import RunTable
from expwatch.rules.decide import Decider
from expwatch.rules.loader import RulesError, load_rules


def reload_decider(current: Decider, path: Path, profiles: set[str], runs: RunTable, audit: AuditLog,
                   console: Callable[[str], None]) -> Decider:
    """The Decider for the rules now on disk (the current one if they are unchanged or invalid)."""
    try:
        ruleset = load_rules(path, profiles)
    except RulesError as exc:
        audit.record("rules reload refused", file=str(path), error=str(exc), kept=current.ruleset.digest)
        console(f"rules reload refused, previous rules keep running: {exc}")
        return current
    if ruleset.digest == current.ruleset.digest and ruleset.source == current.ruleset.source:
        return current
    decider = Decider(ruleset, current.policy)
    for run in runs:
        run.facts.rebind(ruleset)
        decider.rebind(run.decisions)
    audit.record("rules reloaded", file=ruleset.source, digest=ruleset.digest, rules=[r.name for r in ruleset.enabled])
    console(f"rules reloaded from {ruleset.source} ({len(ruleset.enabled)} enabled)")
    return decider
