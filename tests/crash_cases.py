"""The recorded-failure corpus, tests/data/crashes: each file's text, how its process ended, and what it must give.

Like fail2ban's ``# failJSON:`` sample logs, each file says where its text
comes from (``# source:``), how the process that printed it ended
(``# exit: {"code": N}`` or ``{"signal": N}``) and what that must give
(``# expect: {json}``): the incident's winning rule, the plan after the crash
adjusted it, and optionally the retry wait, the halt reason's start and the
one-line cause. A healthy log's run exits 0: its only incident is COMPLETE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "crashes"
CASES = sorted(CORPUS.glob("*.log"))


@dataclass(frozen=True)
class CrashCase:
    path: Path
    expect: dict
    exit_code: int | None
    exit_signal: int | None
    lines: tuple[str, ...]

    @property
    def exit_args(self) -> list[str]:
        """How the process ended, as `rules test` and tests/log_replayer.py take it."""
        return ["--exit", str(self.exit_code)] if self.exit_code is not None else ["--signal", str(self.exit_signal)]


def read_case(path: Path) -> CrashCase:
    header, lines = {}, []
    for raw in path.read_text().splitlines():
        if not lines and raw.startswith("# "):
            key, _, value = raw[2:].partition(": ")
            header[key] = value
        else:
            lines.append(raw)
    assert header.get("source"), f"{path.name}: no '# source:' line"
    end = json.loads(header["exit"])
    assert len(end) == 1 and set(end) <= {"code", "signal"}, f"{path.name}: '# exit:' is one of code or signal"
    return CrashCase(path, json.loads(header["expect"]), end.get("code"), end.get("signal"), tuple(lines))
