"""Match a structured crash against the rules' crash conditions: the one matcher for watcher and tester.

Like ``LineClassifier`` for lines, ``CrashMatcher`` turns a ``Crash`` into
the fact keys it satisfies (``crash_7: 1``); durable-rules then evaluates
each rule's ``any``/``all`` structure over them together with the run's
other facts. ``explain`` says, per rule, which crash condition held and
which did not and what the crash had instead, for ``rules test`` and for
the diagnosis of a surprising classification.

Semantics:
- ``exception: [globs]``: any type in the chain matches a glob (``fnmatchcase``:
  ``*.RateLimitError`` matches ``openai.RateLimitError``; the bare name
  ``RateLimitError`` also matches a qualified type's last part).
- ``status: [codes]``: the HTTP status the crash's messages carry.
- ``error_code: [codes]``: the provider's error code or error type.
- ``message: regex``: a search over each message of the chain, in RE2 (linear time, as every user pattern).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from expwatch.rules.patterns import Pattern, compile_pattern, encodable
from expwatch.rules.model import CrashAtom, RuleSet, atoms
from expwatch.watcher.events import Crash


@dataclass(frozen=True)
class AtomVerdict:
    field: str
    wanted: tuple[Any, ...]
    held: bool
    had: str  # what the crash offered for this field

    def line(self) -> str:
        mark = "yes" if self.held else "no "
        shown = ", ".join(map(str, self.wanted[:5])) + (f", ... ({len(self.wanted)} in all)" if len(self.wanted) > 5 else "")
        wanted = self.wanted[0] if self.field == "message" else f"[{shown}]"
        return f"{mark} {self.field} {wanted} (crash: {self.had})"


@dataclass(frozen=True)
class RuleExplanation:
    rule: str
    verdicts: tuple[AtomVerdict, ...]


def _type_matches(glob: str, type_: str) -> bool:
    return fnmatchcase(type_, glob) or ("." not in glob and fnmatchcase(type_.rsplit(".", 1)[-1], glob))


def holds(atom: CrashAtom, crash: Crash) -> bool:
    if atom.field == "exception":
        return any(_type_matches(glob, t) for glob in atom.values for t, _ in crash.chain)
    if atom.field == "status":
        return crash.status is not None and crash.status in atom.values
    if atom.field == "error_code":
        return bool({crash.error_code, crash.error_type} & set(atom.values))
    if atom.field == "message":
        rx = _regex(atom.values[0])
        return any(rx.search(encodable(message)) for _, message in crash.chain)
    raise ValueError(f"unknown crash field {atom.field!r}")


_compiled: dict[str, Pattern] = {}


def _regex(pattern: str) -> Pattern:
    rx = _compiled.get(pattern)
    if rx is None:
        rx = _compiled[pattern] = compile_pattern(pattern)
    return rx


def _had(field: str, crash: Crash) -> str:
    if field == "exception":
        return ", ".join(t for t, _ in crash.chain) or "-"
    if field == "status":
        return str(crash.status) if crash.status is not None else "no status"
    if field == "error_code":
        return ", ".join(c for c in (crash.error_code, crash.error_type) if c) or "no code"
    return (crash.final[1].splitlines() or [""])[0][:120] or "no message"


class CrashMatcher:
    """Every crash atom of a rule set, evaluated against one crash."""

    def __init__(self, ruleset: RuleSet):
        self.ruleset = ruleset
        self._atoms = [a for a in ruleset.all_atoms() if isinstance(a, CrashAtom)]

    def satisfied(self, crash: Crash) -> tuple[str, ...]:
        return tuple(a.key for a in self._atoms if holds(a, crash))

    def explain(self, crash: Crash) -> list[RuleExplanation]:
        """Per enabled rule with crash conditions: which held and which did not, and why."""
        out = []
        for rule in self.ruleset.enabled:
            crash_atoms = [a for a in atoms(rule.when) if isinstance(a, CrashAtom)]
            if crash_atoms:
                out.append(RuleExplanation(rule.name, tuple(
                    AtomVerdict(a.field, a.values, holds(a, crash), _had(a.field, crash)) for a in crash_atoms)))
        return out

