"""The rules in force, printed with where each field was written (``expwatch rules show``).

A user who only overrides a few fields needs to see the merged result and,
for each field, whether it is theirs or shipped: that is what tells them a
shipped fix reached them, or that their override is the reason it did not.
"""

from __future__ import annotations

from expwatch.rules.loader import SHIPPED
from expwatch.rules.model import FieldOrigin, Rule, RuleSet


def changes(ruleset: RuleSet) -> tuple[list[str], list[str]]:
    """Names of the shipped rules a user's file patches and of the rules it adds (both empty without an override)."""
    if not overrides(ruleset):
        return [], []
    patched, added = [], []
    for rule in ruleset.rules:
        origins = ruleset.origins_of(rule.name)
        if next(o.source for o in origins if o.field == "name") != SHIPPED:
            added.append(rule.name)
        elif any(o.source not in ("", SHIPPED) for o in origins):
            patched.append(rule.name)
    return patched, added


def overrides(ruleset: RuleSet) -> bool:
    """True when the rule set is the shipped rules under a user's file (not the shipped or a whole copy alone)."""
    sources = {o.source for o in ruleset.origins} - {""}
    return SHIPPED in sources and len(sources) > 1


def _value(rule: Rule, origin: FieldOrigin) -> str:
    if origin.source:
        return origin.text
    value = getattr(rule, origin.field)
    if value is None:
        return "(the guard's same_rule_limit setting)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def render(ruleset: RuleSet, root: str) -> str:
    patched, added = changes(ruleset)
    out = [f"rules in force for {root}: {ruleset.source} (digest {ruleset.digest})"]
    width = max((len(o.where) for o in ruleset.origins), default=0)
    for rule in ruleset.rules:
        marks = ["enabled" if rule.enabled else "disabled", f"priority {rule.priority}"]
        marks += ["patched"] * (rule.name in patched) + ["added"] * (rule.name in added)
        out.append(f"\n{rule.name} ({', '.join(marks)})")
        for origin in ruleset.origins_of(rule.name):
            if origin.field != "name":
                out.append(f"  {origin.field:<16} {origin.where:<{width}}  {_value(rule, origin)}".rstrip())
    return "\n".join(out)
