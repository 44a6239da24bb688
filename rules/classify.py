"""Classify log lines with Python ``re``: the one matcher for watcher and tester.

``expwatch rules test`` and the live watcher both call ``LineClassifier``, so
a pattern that works in the tester works in production (fail2ban's lesson).
One combined alternation rejects the common case (a line that matches no
pattern) in a single scan; only lines it accepts are tried per pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from expwatch.rules.model import LogAtom, RatioAtom, RuleSet


@dataclass(frozen=True)
class LineHits:
    log_keys: tuple[str, ...] = ()  # LogAtom keys whose pattern matched
    ratio_terms: tuple[tuple[str, str], ...] = ()  # (RatioAtom key, "num" | "den")

    def __bool__(self) -> bool:
        return bool(self.log_keys or self.ratio_terms)


class LineClassifier:
    def __init__(self, ruleset: RuleSet):
        self._log: list[tuple[str, re.Pattern]] = []
        self._ratio: list[tuple[str, str, re.Pattern]] = []
        sources: list[str] = []
        for atom in ruleset.all_atoms():
            if isinstance(atom, LogAtom):
                joined = "|".join(f"(?:{p})" for p in atom.patterns)
                self._log.append((atom.key, re.compile(joined)))
                sources.append(joined)
            elif isinstance(atom, RatioAtom):
                self._ratio.append((atom.key, "num", re.compile(atom.numerator)))
                sources.append(atom.numerator)
                for p in atom.denominator:
                    self._ratio.append((atom.key, "den", re.compile(p)))
                    sources.append(p)
        self._any = re.compile("|".join(f"(?:{s})" for s in sources)) if sources else None

    def classify(self, text: str) -> LineHits:
        if self._any is None or not self._any.search(text):
            return LineHits()
        return LineHits(
            tuple(key for key, rx in self._log if rx.search(text)),
            tuple((key, role) for key, role, rx in self._ratio if rx.search(text)),
        )
