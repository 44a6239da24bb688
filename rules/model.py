"""Typed rules: what a validated rules file becomes.

A ``RuleSet`` is only ever built by the loader after the file passed the
JSON Schema and the semantic checks, so everything downstream trusts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from expwatch.catalog import INFORMATIONAL_ACTIONS


@dataclass(frozen=True)
class LogAtom:
    """A regex over log lines, with an optional exact counting window."""

    key: str  # fact property, e.g. "log_3"
    patterns: tuple[str, ...]
    min_count: int = 1
    window_s: float | None = None
    capture_lines: int = 0


@dataclass(frozen=True)
class NullRateAtom:
    key: str
    above: float
    min_items: int = 1
    exclude_reasons: tuple[str, ...] = ()
    only_reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class RatioAtom:
    """numerator matches / sum of denominator matches, judged after ``after_s``."""

    key: str
    numerator: str
    denominator: tuple[str, ...]
    below: float
    after_s: float = 0.0
    min_count: int = 1


@dataclass(frozen=True)
class CrashAtom:
    """A test on a structured crash (rules/crashmatch.py): one of ``CRASH_FIELDS`` against its values."""

    key: str  # fact property, e.g. "crash_7"
    field: str  # exception | status | error_code | message
    values: tuple[Any, ...]  # globs, status codes, codes, or one regex


CRASH_FIELDS = ("exception", "status", "error_code", "message")


@dataclass(frozen=True)
class Condition:
    """A node of the condition tree: ``op`` is all/any (with children) or an atom."""

    op: str  # all | any | log | crash | null_rate | ratio | compare
    children: tuple["Condition", ...] = ()
    atom: LogAtom | CrashAtom | NullRateAtom | RatioAtom | None = None
    fact: str = ""  # for compare: the fact property
    cmp: str = ""  # eq | gte
    value: Any = None


@dataclass(frozen=True)
class ActionSpec:
    name: str
    arg: Any = None
    line: int = 0


@dataclass(frozen=True)
class Rule:
    name: str
    when: Condition
    actions: tuple[ActionSpec, ...]
    severity: str = "warning"
    priority: int = 50
    enabled: bool = True
    description: str = ""
    same_rule_limit: int | None = None
    guarded: bool = True  # False: not the run's fault (node failure, preemption); no same-rule streak
    line: int = 0

    @property
    def log_atoms(self) -> tuple[LogAtom, ...]:
        return tuple(a for a in atoms(self.when) if isinstance(a, LogAtom))

    @property
    def crash_atoms(self) -> tuple[CrashAtom, ...]:
        return tuple(a for a in atoms(self.when) if isinstance(a, CrashAtom))

    @property
    def trigger_atoms(self) -> tuple[LogAtom | CrashAtom, ...]:
        """Atoms that hold for one moment (a line, a crash), not as a state."""
        return tuple(a for a in atoms(self.when) if isinstance(a, (LogAtom, CrashAtom)))

    @property
    def compared_facts(self) -> frozenset[str]:
        """The run facts its ``compare`` conditions read (``alive``, ``silent_s``, ``probe_failing_s``...)."""
        return frozenset(c.fact for c in walk(self.when) if c.op == "compare")

    @property
    def informational(self) -> bool:
        return all(a.name in INFORMATIONAL_ACTIONS for a in self.actions)

    @property
    def edge_triggered(self) -> bool:
        """Rules with a log or crash condition fire per matching line or crash; the rest on a rising edge."""
        return bool(self.trigger_atoms)


@dataclass(frozen=True)
class FieldOrigin:
    """Where one field of an effective rule was written (the shipped file or the user's override)."""

    rule: str
    field: str
    source: str  # "" when the field was written nowhere and has its default
    line: int
    text: str  # the value as written, on one line ("" for a default)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.source else "default"


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source: str
    digest: str
    origins: tuple[FieldOrigin, ...] = ()

    def origins_of(self, name: str) -> tuple[FieldOrigin, ...]:
        return tuple(o for o in self.origins if o.rule == name)

    @property
    def enabled(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled)

    def by_name(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def all_atoms(self) -> list[Any]:
        return [a for r in self.enabled for a in atoms(r.when)]

    def silence_thresholds(self) -> list[float]:
        return sorted(
            float(c.value) for r in self.enabled for c in walk(r.when) if c.op == "compare" and c.fact == "silent_s"
        )

    def stale_after_s(self, fallback_s: float) -> float:
        """When a live run's silent log makes it STALE: the shortest ``log_silent_s`` of the rules in force."""
        thresholds = self.silence_thresholds()
        return thresholds[0] if thresholds else fallback_s

    def probe_thresholds(self) -> list[float]:
        return sorted(
            float(c.value) for r in self.enabled for c in walk(r.when) if c.op == "compare" and c.fact == "probe_failing_s"
        )


def walk(cond: Condition):
    yield cond
    for child in cond.children:
        yield from walk(child)


def atoms(cond: Condition) -> list[Any]:
    return [c.atom for c in walk(cond) if c.atom is not None]


@dataclass
class Counter:
    """A mutable count used while building atoms (keeps fact keys unique per file)."""

    n: int = 0

    def next(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"
