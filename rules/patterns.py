"""User patterns, compiled for linear-time matching: the one place a pattern becomes a matcher.

A rules file is written by a person, and log lines by a program that may be
failing in any way; Python's backtracking ``re`` turns some pairs of them
into exponential work (``(a+)+$`` against 34 ``a`` and a ``b`` pins a core
for hours). The engine thread matches every run's lines, so one such pair
would stall every run, and again after each restart, on the same line.

So patterns run on RE2 (``google-re2``), whose time is linear in the line's
length (a line is at most ``tail.max_line_bytes``) times the pattern's size,
whatever either contains. RE2 cannot express backreferences (``\\1``),
lookarounds (``(?=``, ``(?!``, ``(?<=``), atomic groups or possessive
quantifiers, because those are what need backtracking; there is no Python
``re`` fallback for them, since nothing could bound it per line on the
engine thread. ``rules check``, every hot reload and the tester reject such a
pattern with its file, line and field, and the previous rules keep running.

Semantics as in Python ``re`` for everything else, except that ``\\d``,
``\\w``, ``\\s`` and ``\\b`` are ASCII-only in RE2 (``(?i)`` still folds case
for all of Unicode).
"""

from __future__ import annotations

import re2

# What RE2 says, and what the person editing the rules file should do about it.
_ADVICE = (
    ("invalid perl operator: (?=", "lookahead"), ("invalid perl operator: (?!", "negative lookahead"),
    ("invalid perl operator: (?<", "lookbehind"), ("invalid escape sequence: \\", "backreference or escape"),
    ("invalid perl operator: (?>", "atomic group"), ("bad repetition operator: ++", "possessive quantifier"),
    ("bad repetition operator: *+", "possessive quantifier"), ("bad repetition operator: ?+", "possessive quantifier"),
)


class PatternError(ValueError):
    """A pattern the engine cannot run in bounded time; ``str()`` says why, in one line."""


Pattern = re2._Regexp


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # the error is raised with its place; RE2's stderr copy would only confuse
    return options


# RE2 syntax that Python's parser (which rules/prefilter.py reads required literals from) reads differently:
# POSIX classes ("[[:digit:]]" is a set then a literal "]" to Python) and \Q...\E quoting.
_RE2_ONLY_SYNTAX = ("[:", "\\Q")


def literals_readable(pattern: str) -> bool:
    """Whether the prefilter may take ``pattern``'s required literals from Python's parse of it."""
    return not any(marker in pattern for marker in _RE2_ONLY_SYNTAX)


def encodable(text: str) -> str:
    """``text`` with lone surrogates replaced: RE2 matches UTF-8, and JSON's ``"\\ud800"`` escapes decode to them."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def compile_pattern(pattern: str) -> Pattern:
    """``pattern`` compiled for RE2, or PatternError naming what in it needs backtracking."""
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    except (TypeError, ValueError) as exc:
        reason = str(exc)
    kind = next((what for prefix, what in _ADVICE if reason.startswith(prefix)), None)
    if kind is not None:
        raise PatternError(f"{reason} ({kind} needs backtracking, which cannot be bounded per line: rewrite the pattern without it)")
    raise PatternError(reason)
