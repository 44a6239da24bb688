"""Classify log lines with RE2 (``rules/patterns.py``): the one matcher for watcher and tester.

``expwatch rules test`` and the live watcher both call ``LineClassifier``, so
a pattern that works in the tester works in production (fail2ban's lesson).
Most lines match nothing, so a line is first checked for the rules' required
literals (``rules/prefilter.py``), a test far cheaper than the patterns;
only lines that hold one are tried per pattern. The same literals let the
catch-up path skip whole stretches of raw log (``prefilter``). Live lines
also feed the crash assembler, so the live path's ``live_prefilter`` adds
the words every crash starts with (``watcher/crash.py`` ``STARTS``, the one
list of them): a crash's first line is never skipped, and once a crash is
open the reader takes every line again (``expwatch/engine/reading.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from expwatch.rules.model import LogAtom, RatioAtom, RuleSet
from expwatch.rules.patterns import Pattern, compile_pattern, encodable, literals_readable
from expwatch.rules.prefilter import LinePrefilter
from expwatch.watcher.crash import STARTS


@dataclass(frozen=True)
class LineHits:
    log_keys: tuple[str, ...] = ()  # LogAtom keys whose pattern matched
    ratio_terms: tuple[tuple[str, str], ...] = ()  # (RatioAtom key, "num" | "den")

    def __bool__(self) -> bool:
        return bool(self.log_keys or self.ratio_terms)


_NO_HITS = LineHits()


class LineClassifier:
    def __init__(self, ruleset: RuleSet, use_hyperscan: bool | None = None):
        # Each pattern is compiled on its own: joined into one alternation, a
        # pattern that starts with global flags such as (?i) would not compile.
        self._log: list[tuple[str, tuple[Pattern, ...]]] = []
        self._ratio: list[tuple[str, str, Pattern]] = []
        patterns: list[str] = []
        for atom in ruleset.all_atoms():
            if isinstance(atom, LogAtom):
                self._log.append((atom.key, tuple(compile_pattern(p) for p in atom.patterns)))
                patterns.extend(atom.patterns)
            elif isinstance(atom, RatioAtom):
                for role, p in [("num", atom.numerator), *(("den", d) for d in atom.denominator)]:
                    self._ratio.append((atom.key, role, compile_pattern(p)))
                    patterns.append(p)
        # Raw-byte line finder for bulk reads; None when some pattern has no
        # required literal, and then every line must be classified.
        readable = all(literals_readable(p) for p in patterns)
        self.prefilter: LinePrefilter | None = LinePrefilter.build(patterns, use_hyperscan) if patterns and readable else None
        # Without log patterns no line can match, and only crash starts are worth a look.
        self.live_prefilter = LinePrefilter.build([*patterns, STARTS.pattern], use_hyperscan) if readable else None
        self._quick = self.prefilter.text_pattern() if self.prefilter is not None else None
        self._some = bool(patterns)

    def classify(self, text: str) -> LineHits:
        if not self._some or (self._quick is not None and not self._quick.search(text)):
            return _NO_HITS
        try:
            return self._matches(text)
        except UnicodeEncodeError:  # lone surrogates: rare, so paid for only when met
            return self._matches(encodable(text))

    def _matches(self, text: str) -> LineHits:
        log_keys = tuple(key for key, rxs in self._log if any(rx.search(text) for rx in rxs))
        ratio_terms = tuple((key, role) for key, role, rx in self._ratio if rx.search(text))
        return LineHits(log_keys, ratio_terms) if log_keys or ratio_terms else _NO_HITS
