"""Find the few log lines worth classifying without looking at every line.

Catching up on a long log (the watcher's first read of a run that has been
going for days) would otherwise cost a Python ``re.search`` per line, about
80x slower than ``grep``. Almost every line matches no rule, so the catch-up
path scans whole chunks of raw bytes for *required literals* and hands only
the lines that contain one to ``LineClassifier``, which still decides with the
rules' own Python patterns. The prefilter may let through lines that match
nothing (they are classified and dropped); it must never hold back a line
that could match, and that is the one promise this module makes.

A required literal of a pattern is a string that every match of it must
contain, read off ``re``'s own parse tree: ``\\b429\\b`` needs ``429``,
``[Rr]ate limit (reached|exceeded)`` needs ``ate limit ``. A pattern with no
such string (``\\d+ errors?`` has ``" error"``, but ``\\w+`` has none) turns the
prefilter off, and every line is classified as before.

Scanning uses Hyperscan when it is installed (several GB/s for any number of
literals), else one ``re`` alternation of the literals over bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

try:  # re's own parser: private, so any surprise just turns the prefilter off
    from re import _constants as sre_c
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover - Python < 3.11 is not supported anyway
    sre_parse = sre_c = None

try:
    import hyperscan
except ImportError:  # pragma: no cover - depends on the platform's wheels
    hyperscan = None

# ASCII letters that Python's re, under IGNORECASE, also matches with a
# non-ASCII character (İ/ı, ſ, the Kelvin sign K): a caseless literal made of
# bytes would miss those, so such letters end a caseless literal.
_UNICODE_FOLDING = frozenset("iIkKsS")
# A literal must survive the trip text -> UTF-8 bytes unchanged: a newline
# never occurs inside a line, and U+FFFD in a line may come from any invalid byte.
_NEVER_IN_LITERAL = frozenset("\n\ufffd")


@dataclass(frozen=True, order=True)
class Literal:
    text: str
    caseless: bool = False


def _usable(char: str, caseless: bool) -> bool:
    if char in _NEVER_IN_LITERAL:
        return False
    if caseless:
        return char.isascii() and char not in _UNICODE_FOLDING
    return True


def _better(a: frozenset[Literal] | None, b: frozenset[Literal] | None) -> frozenset[Literal] | None:
    """The more selective of two sets: the one whose shortest literal is longer, then the smaller."""
    if a is None:
        return b
    if b is None:
        return a
    score = lambda s: (min(len(lit.text) for lit in s), -len(s))  # noqa: E731
    return b if score(b) > score(a) else a


def _required(items: list, caseless: bool) -> frozenset[Literal] | None:
    """A set of literals one of which every match of this sequence contains, or None."""
    best: frozenset[Literal] | None = None
    run: list[str] = []

    def close() -> None:
        nonlocal best
        if run:
            best = _better(best, frozenset({Literal("".join(run), caseless)}))
            run.clear()

    for op, av in items:
        if op is sre_c.LITERAL and _usable(chr(av), caseless):
            run.append(chr(av))
            continue
        close()
        if op is sre_c.SUBPATTERN:
            _group, add, remove, sub = av
            inner = (caseless or bool(add & sre_c.SRE_FLAG_IGNORECASE)) and not remove & sre_c.SRE_FLAG_IGNORECASE
            best = _better(best, _required(sub, inner))
        elif op is sre_c.ATOMIC_GROUP:
            best = _better(best, _required(av, caseless))
        elif op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT) and av[0] >= 1:
            best = _better(best, _required(av[2], caseless))
        elif op is sre_c.BRANCH:
            branches = [_required(branch, caseless) for branch in av[1]]
            if all(branches):
                best = _better(best, frozenset().union(*branches))
        # Anything else (classes, anchors, lookarounds, optional parts) guarantees no literal.
    close()
    return best


def required_literals(pattern: str) -> frozenset[Literal] | None:
    """Literals one of which is in every string ``pattern`` matches; None if there are none."""
    if sre_parse is None:
        return None
    try:
        parsed = sre_parse.parse(pattern)
    except Exception:
        return None
    found = _required(list(parsed), bool(parsed.state.flags & sre_c.SRE_FLAG_IGNORECASE))
    if not found or any(not lit.text for lit in found):
        return None
    return found


def _minimal(literals: Iterable[Literal]) -> list[Literal]:
    """Drop literals that contain another one: a line holding the longer holds the shorter."""
    ordered = sorted(set(literals), key=lambda lit: (len(lit.text), lit))
    kept: list[Literal] = []
    for lit in ordered:
        covered = any(
            (k.text.lower() in lit.text.lower() and lit.text.isascii()) if k.caseless
            else (k.text in lit.text and not lit.caseless)
            for k in kept
        )
        if not covered:
            kept.append(lit)
    return kept


class _ReScan:
    """One alternation of the literals over raw bytes; one hit per line is enough."""

    engine = "re"

    def __init__(self, literals: list[Literal]):
        parts = [
            b"(?i:" + re.escape(lit.text.encode()) + b")" if lit.caseless else re.escape(lit.text.encode())
            for lit in literals
        ]
        self._rx = re.compile(b"|".join(parts))

    def positions(self, buf: bytes) -> list[int]:
        found = []
        search, find = self._rx.search, buf.find
        pos = 0
        while True:
            m = search(buf, pos)
            if m is None:
                return found
            found.append(m.start())
            end = find(b"\n", m.end())
            if end < 0:
                return found
            pos = end + 1


class _HyperscanScan:
    """Hyperscan's literal compiler: every occurrence of every literal in one pass."""

    engine = "hyperscan"

    def __init__(self, literals: list[Literal]):
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._db.compile(
            expressions=[lit.text.encode() for lit in literals],
            ids=list(range(len(literals))),
            elements=len(literals),
            flags=[hyperscan.HS_FLAG_CASELESS if lit.caseless else 0 for lit in literals],
            literal=True,
        )

    def positions(self, buf: bytes) -> list[int]:
        found: list[int] = []
        add = found.append

        def on_match(_id: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
            add(end - 1)  # the literal's last byte lies in the line that holds it

        self._db.scan(buf, match_event_handler=on_match)
        found.sort()  # reported by end offset per literal; across literals almost in order
        return found


class LinePrefilter:
    """Raw-byte positions of lines that may match any of ``patterns``.

    ``positions(buf)`` returns ascending offsets into ``buf``; every line of
    ``buf`` that one of the patterns could match contains at least one of
    them. Build it with ``LinePrefilter.build``, which returns None when some
    pattern has no required literal (then no line may be skipped).
    """

    def __init__(self, literals: list[Literal], use_hyperscan: bool | None = None):
        self.literals = tuple(literals)
        if use_hyperscan is None:
            use_hyperscan = hyperscan is not None
        self._scan = _HyperscanScan(literals) if use_hyperscan and hyperscan is not None else _ReScan(literals)
        self.engine = self._scan.engine
        self.positions = self._scan.positions

    @classmethod
    def build(cls, patterns: Iterable[str], use_hyperscan: bool | None = None) -> "LinePrefilter | None":
        literals: list[Literal] = []
        for pattern in patterns:
            found = required_literals(pattern)
            if found is None:
                return None
            literals.extend(found)
        if not literals:
            return None
        return cls(_minimal(literals), use_hyperscan)

    def text_pattern(self) -> re.Pattern:
        """The same literals for one decoded line: a quick 'no rule can match' test."""
        return re.compile("|".join(f"(?i:{re.escape(lit.text)})" if lit.caseless else re.escape(lit.text) for lit in self.literals))
