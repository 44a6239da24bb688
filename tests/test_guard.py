"""The guard is pure: same rule twice without progress halts; progress resets; the restart budget counts exactly."""

from __future__ import annotations

from expwatch.rules.guard import GuardLimits, GuardState, judge, record_restart, reset

LIMITS = GuardLimits(same_rule_limit=2, restart_budget=3, restart_window_s=100)


def test_same_rule_twice_without_progress_halts_and_says_why():
    first = judge(GuardState(), "DEAD", 5, LIMITS, now=0, restarts=True)
    second = judge(first.state, "DEAD", 5, LIMITS, now=1, restarts=True)
    assert first.act and not second.act
    assert second.reason == "DEAD fired 2 times in a row with no progress (done stayed at 5)"


def test_progress_or_a_different_rule_starts_a_new_streak():
    state = judge(GuardState(), "DEAD", 5, LIMITS, now=0, restarts=True).state
    assert judge(state, "DEAD", 6, LIMITS, now=1, restarts=True).act
    assert judge(state, "STALE", 5, LIMITS, now=1, restarts=True).act


def test_a_per_rule_limit_overrides_the_global_one():
    state = GuardState()
    for _ in range(2):
        verdict = judge(state, "RATE_LIMIT", 0, LIMITS, now=0, restarts=False, rule_limit=3)
        assert verdict.act
        state = verdict.state
    assert not judge(state, "RATE_LIMIT", 0, LIMITS, now=0, restarts=False, rule_limit=3).act


def test_the_restart_budget_counts_restarts_inside_the_window_only():
    state = GuardState()
    for t in (0, 10, 20):
        state = record_restart(state, t)
    busy = judge(state, "OOM", 99, LIMITS, now=50, restarts=True)
    assert not busy.act and "restart budget spent: 3 restarts within 100s" == busy.reason
    assert judge(state, "OOM", 99, LIMITS, now=105, restarts=True).act  # the first restart left the window
    assert judge(state, "OOM", 99, LIMITS, now=50, restarts=False).act  # an alert costs no restart


def test_reset_forgets_the_streak_but_not_the_restart_history():
    state = judge(GuardState(), "DEAD", 5, LIMITS, now=0, restarts=True).state
    state = reset(record_restart(state, 1))
    assert judge(state, "DEAD", 5, LIMITS, now=2, restarts=True).act
    assert state.restarts == (1,)


def test_a_failure_that_is_not_the_runs_fault_leaves_the_streak_alone_but_spends_the_budget():
    state = judge(GuardState(), "DEAD", 5, LIMITS, now=0, restarts=True).state
    lost = judge(state, "NODE_LOST", 5, LIMITS, now=1, restarts=True, counts=False)
    assert lost.act and lost.state.last_rule == "DEAD" and lost.state.streak == 1
    for t in (0, 1, 2):
        state = record_restart(state, t)
    assert not judge(state, "NODE_LOST", 5, LIMITS, now=3, restarts=True, counts=False).act
