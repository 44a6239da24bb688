"""The user's rules file as an override of the shipped rules, like fail2ban's ``.local`` files.

A user's file names only what it changes: a rule with a shipped name patches
that rule field by field (``when`` and ``actions`` are replaced whole, since
half a condition tree or half an action list has no clear meaning), and a new
name adds a rule. The shipped rules are read on every load, so a fix shipped
in a new release reaches everyone who only overrides. ``replace: true`` at the
top opts out: the file is then the whole rule set, as before.

Merging works on validated raw mappings and keeps, per field, the document
and rule index it came from; the loader builds typed rules from that, so a
bad regex in a patched ``when`` is reported at the user's line and a shipped
field at the shipped line.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from expwatch.rules.document import RulesDocument, RulesError
from expwatch.rules.model import FieldOrigin
from expwatch.settings import shipped_text

# Every field a rule has, in the order `rules show` prints them, from the one published schema
# (so a field added there is merged and shown without a second list). `name` is the key, never patched.
RULE_FIELDS = tuple(json.loads(shipped_text("rules.schema.json"))["$defs"]["rule_patch"]["properties"])


@dataclass(frozen=True)
class FieldSource:
    """Where one field of a merged rule was written: a document and the rule's index in it."""

    document: RulesDocument
    index: int

    def line(self, name: str) -> int:
        return self.document.key_line(["rules", self.index, name])


@dataclass(frozen=True)
class RuleEntry:
    """A rule's raw fields after merging, each with the place it came from."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, FieldSource] = field(default_factory=dict)

    @classmethod
    def written(cls, raw: dict[str, Any], source: FieldSource) -> "RuleEntry":
        return cls(raw["name"], dict(raw), {k: source for k in raw})

    def patched(self, raw: dict[str, Any], source: FieldSource) -> "RuleEntry":
        patch = {k: v for k, v in raw.items() if k != "name"}
        return RuleEntry(self.name, {**self.fields, **patch}, {**self.sources, **{k: source for k in patch}})

    def origins(self) -> tuple[FieldOrigin, ...]:
        found = []
        for name in RULE_FIELDS:
            if name in self.sources:
                src = self.sources[name]
                found.append(FieldOrigin(self.name, name, src.document.source, src.line(name), _one_line(self.fields[name])))
            else:
                found.append(FieldOrigin(self.name, name, "", 0, ""))
        return tuple(found)


def _one_line(value: Any) -> str:
    if isinstance(value, (dict, list, bool)) or value is None:
        return yaml.safe_dump(value, default_flow_style=True, width=1 << 20, sort_keys=False).removesuffix("...\n").strip()
    return " ".join(str(value).split())


def _unique(document: RulesDocument) -> list[tuple[int, dict[str, Any]]]:
    """The document's rules with their indices; a name given twice is an error at its second line."""
    seen: dict[str, int] = {}
    for index, raw in enumerate(document.data["rules"] or []):
        line = document.key_line(["rules", index, "name"])
        if raw["name"] in seen:
            raise RulesError(document.source, line, f"rule '{raw['name']}': duplicate name (first at line {seen[raw['name']]})")
        seen[raw["name"]] = line
    return list(enumerate(document.data["rules"] or []))


def entries_of(document: RulesDocument) -> list[RuleEntry]:
    """A complete rules file (the shipped one, or a user's with ``replace: true``)."""
    return [RuleEntry.written(raw, FieldSource(document, i)) for i, raw in _unique(document)]


def merge(shipped: RulesDocument, user: RulesDocument) -> list[RuleEntry]:
    """The shipped rules patched and extended by the user's override file (already schema-valid)."""
    merged = {entry.name: entry for entry in entries_of(shipped)}
    for index, raw in _unique(user):
        source = FieldSource(user, index)
        name = raw["name"]
        if name in merged:
            merged[name] = merged[name].patched(raw, source)
            continue
        missing = [k for k in ("when", "actions") if k not in raw]
        if missing:
            hint = difflib.get_close_matches(name, list(merged), n=1)
            why = f"did you mean '{hint[0]}'?" if hint else f"shipped: {', '.join(merged)}"
            raise RulesError(user.source, source.line("name"),
                             f"rule '{name}': a new rule needs {' and '.join(repr(k) for k in missing)} (no shipped rule has this name; {why})")
        merged[name] = RuleEntry.written(raw, source)
    return list(merged.values())
