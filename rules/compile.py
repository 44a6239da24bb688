"""Compile typed conditions into durable-rules' JSON ruleset form.

Everything that needs a regex, a time window or a ratio is computed in
Python first and reaches the engine as a plain fact property (``log_3: 1``,
``nulls_5: 0.12``), because durable-rules' ``$mt`` is its own regex dialect
and it has no time windows. What the engine then does is the part it is good
at: evaluating the boolean structure of every rule against a run's facts.
"""

from __future__ import annotations

from typing import Any

from expwatch.rules.model import Condition, CrashAtom, LogAtom, NullRateAtom, RatioAtom, RuleSet


def expression(cond: Condition) -> dict[str, Any]:
    if cond.op in ("all", "any"):
        parts = [expression(c) for c in cond.children]
        return parts[0] if len(parts) == 1 else {"$and" if cond.op == "all" else "$or": parts}
    atom = cond.atom
    if isinstance(atom, (LogAtom, CrashAtom)):
        return {atom.key: 1}
    if isinstance(atom, NullRateAtom):
        return {"$gt": {atom.key: atom.above}}
    if isinstance(atom, RatioAtom):
        return {"$lt": {atom.key: atom.below}}
    if cond.op == "compare":
        return {cond.fact: cond.value} if cond.cmp == "eq" else {"$gte": {cond.fact: cond.value}}
    raise ValueError(f"cannot compile condition {cond.op!r}")


def ruleset_definition(ruleset: RuleSet) -> dict[str, dict[str, Any]]:
    """Engine-neutral → durable: one durable rule per enabled expwatch rule."""
    return {rule.name: {"all": [{"m": expression(rule.when)}]} for rule in ruleset.enabled}
