"""The "same error twice → halt" guard and the restart budget, as pure logic.

The guard exists because an automatic fix that does not fix anything turns a
failure into a loop that burns quota and hides the bug. It counts exactly:
the same rule firing again for a run with no completed item in between
extends a streak; any progress, or a different rule, starts a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class GuardState:
    last_rule: str | None = None
    streak: int = 0
    done_at_last: int = -1
    restarts: tuple[float, ...] = ()  # times of restarts, for the budget


@dataclass(frozen=True)
class GuardLimits:
    same_rule_limit: int
    restart_budget: int
    restart_window_s: float


@dataclass(frozen=True)
class Verdict:
    act: bool
    reason: str = ""
    state: GuardState = field(default_factory=GuardState)


def judge(
    state: GuardState, rule: str, done: int, limits: GuardLimits, now: float, restarts: bool,
    rule_limit: int | None = None, counts: bool = True,
) -> Verdict:
    """Decide whether an incident of ``rule`` may act, and the guard's next state.

    ``counts=False`` (a failure that is not the run's fault, such as a lost
    node) leaves the streak untouched; the restart budget still applies.
    """
    recent = tuple(t for t in state.restarts if t > now - limits.restart_window_s)
    if counts:
        streak = state.streak + 1 if rule == state.last_rule and done == state.done_at_last else 1
        nxt = replace(state, last_rule=rule, streak=streak, done_at_last=done, restarts=recent)
        if streak >= (rule_limit or limits.same_rule_limit):
            return Verdict(False, f"{rule} fired {streak} times in a row with no progress (done stayed at {done})", nxt)
    else:
        nxt = replace(state, restarts=recent)
    if restarts and len(recent) >= limits.restart_budget:
        return Verdict(
            False, f"restart budget spent: {len(recent)} restarts within {limits.restart_window_s:g}s", nxt
        )
    return Verdict(True, "", nxt)


def record_restart(state: GuardState, now: float) -> GuardState:
    return replace(state, restarts=state.restarts + (now,))


def reset(state: GuardState) -> GuardState:
    """A human resumed the run: forget the streak, keep the restart history."""
    return replace(state, last_rule=None, streak=0, done_at_last=-1)
