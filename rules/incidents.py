"""One failure is one incident: collecting matches, then choosing the cause.

A crash prints many lines (retries, a traceback, chained exceptions) and
then the process exits; each of those may match a rule. The first match
opens an incident and starts a short settle window; matches inside it join
the incident as evidence, and when it closes the rule with the highest
priority decides. A crash whose traceback ends in ``RateLimitError`` is
therefore handled as a rate limit, not halted as a code bug.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from expwatch.rules.model import Rule


def new_incident_id() -> str:
    return "i-" + uuid.uuid4().hex[:10]


@dataclass
class Candidate:
    rule: Rule
    evidence: dict[str, Any]
    at: float


@dataclass
class Incident:
    id: str
    run: str
    opened_at: float
    settle_until: float
    candidates: list[Candidate] = field(default_factory=list)
    captured: list[str] = field(default_factory=list)
    capture_left: int = 0
    acting: bool = False
    crash: dict[str, Any] | None = None  # the crash read while collecting evidence, when no candidate carries one
    suppressed_states: set[str] = field(default_factory=set)  # state rules already recorded as held off while it acts
    last_line_at: int = -1  # log offset of the last line read while it collected: output after its crash?

    def add(self, rule: Rule, evidence: dict[str, Any], now: float) -> None:
        self.candidates.append(Candidate(rule, evidence, now))
        wanted = max((a.capture_lines for a in rule.log_atoms), default=0)
        if wanted and evidence.get("line") is not None and not self.captured:
            self.captured.append(evidence["line"])
            self.capture_left = wanted

    def capture(self, line: str) -> None:
        if self.capture_left > 0:
            self.captured.append(line)
            self.capture_left -= 1

    def winner(self) -> Candidate:
        """Highest priority; the earliest of equals (a stable, explainable choice)."""
        return max(self.candidates, key=lambda c: (c.rule.priority, -c.at))

    def crashes(self) -> list[dict[str, Any]]:
        """Every crash in its evidence (as ``Crash.to_json``): the one read while collecting, then its candidates'."""
        return [c for c in [self.crash, *(c.evidence.get("crash") for c in self.candidates)] if c]

    def evidence(self) -> dict[str, Any]:
        best = self.winner()
        crash = best.evidence.get("crash") or self.crash
        return {
            **({"crash": crash, "cause": crash["cause"]} if crash else {}),
            **best.evidence,
            "captured": list(self.captured),
            "candidates": [c.rule.name for c in self.candidates],
        }
