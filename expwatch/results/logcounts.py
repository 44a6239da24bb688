"""A run's log lines counted by the validation patterns: read a chunk at a time, each line bounded, matched by RE2.

Both `expwatch validate --log` and the watcher's `complete` action count
them, and the log is a program's output. It can be hundreds of MB (HTTP
debug logging on), so it is never read whole. It can hold anything, and
Python's backtracking ``re`` is quadratic in a long line for some shipped
patterns: a 120 kB line of ``cache `` held ``cache\\b.*\\bstale\\b`` for 13 s,
and a 1 MB line would hold it for about 15 minutes. ``re`` keeps the GIL, so
that would stall the whole watcher. The patterns are therefore compiled by
rules/patterns.py (RE2, linear in the line), and a line is searched in its
first ``max_line_bytes`` only.

Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r``, so a progress bar's redraws
stay separate lines, as ``str.splitlines`` had kept them (it also split at
rarer separators such as ``\\x0c``, which a log line now keeps). A ``\\r\\n``
split across two reads leaves an empty line, which no useful pattern matches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from expwatch.files import Unreadable, open_regular
from expwatch.rules.patterns import Pattern, compile_pattern

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class LogPatterns:
    """``log_patterns`` of configs/validation.yaml, compiled; ``either`` matches where any of them does."""

    patterns: dict[str, Pattern]
    either: Pattern | None
    max_line_bytes: int

    @classmethod
    def of(cls, patterns: dict[str, Pattern], max_line_bytes: int) -> "LogPatterns":
        # RE2 scopes an inline flag such as (?i) to its group, so each pattern keeps its own.
        either = compile_pattern("|".join(f"(?:{p.pattern})" for p in patterns.values())) if patterns else None
        return cls(patterns, either, max_line_bytes)


class _Counter:
    def __init__(self, log_patterns: LogPatterns):
        self.counts = dict.fromkeys(log_patterns.patterns, 0)
        self._patterns, self._either = log_patterns.patterns, log_patterns.either

    def line(self, line: bytes) -> None:
        if self._either is None or self._either.search(line) is None:  # most lines: one search, not one per pattern
            return
        for name, pattern in self._patterns.items():
            if pattern.search(line) is not None:
                self.counts[name] += 1


def count_log_lines(path: Path | str, log_patterns: LogPatterns) -> dict[str, int]:
    """Lines of the log at ``path`` matching each pattern (a line may count for several).

    Raises FileNotFoundError when the log is absent, Unreadable when it is not a
    regular file (a FIFO would block the reader forever) or cannot be read.
    """
    counter, max_line_bytes = _Counter(log_patterns), log_patterns.max_line_bytes
    fd = open_regular(path)
    try:
        carry, cut = b"", False  # cut: the line in hand was searched in its first max_line_bytes; skip to its end
        while chunk := os.read(fd, CHUNK_BYTES):
            # Without their endings, as Python's splitlines gave them: RE2's `$` does not match before a "\n".
            data = carry + chunk
            lines = data.splitlines()
            carry = b"" if data.endswith((b"\n", b"\r")) else lines.pop()
            for line in lines:
                if cut:
                    cut = False
                    continue
                counter.line(line[:max_line_bytes])
            if len(carry) > max_line_bytes:
                if not cut:
                    counter.line(carry[:max_line_bytes])
                carry, cut = b"", True
        if carry and not cut:
            counter.line(carry[:max_line_bytes])  # a last line without its newline
    except OSError as exc:
        raise Unreadable(path, exc.strerror or str(exc)) from exc
    finally:
        os.close(fd)
    return counter.counts
