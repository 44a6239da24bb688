"""The Decider is pure: settling, priority, latches, the guard and the plan, tested without processes."""

from __future__ import annotations

import pytest

from expwatch.rules.decide import NOTHING, Decider, DecisionPolicy, RunDecisions, SUPPRESSED_IN_PROGRESS
from expwatch.rules.facts import RunFacts
from expwatch.rules.guard import GuardLimits
from expwatch.rules.loader import load_rules, parse_rules

SETTLE = 1.5
POLICY = DecisionPolicy(SETTLE, GuardLimits(same_rule_limit=2, restart_budget=5, restart_window_s=3600))


@pytest.fixture
def shipped():
    return load_rules(None)


def run_of(ruleset, **facts) -> tuple[Decider, RunDecisions, RunFacts]:
    f = RunFacts(ruleset, started_at=0.0, alive=True)
    for key, value in facts.items():
        setattr(f, key, value)
    return Decider(ruleset, POLICY), RunDecisions(), f


def line(decider, state, facts, text, now):
    return decider.on_line("r", state, facts, text, now, {"line": text})


def test_a_crash_is_one_incident_and_the_highest_priority_cause_wins(shipped):
    decider, state, facts = run_of(shipped)
    first = line(decider, state, facts, "Traceback (most recent call last):", 10.0)
    assert [m.rule.name for m in first.matches] == ["TRACEBACK"] and first.matches[0].opened
    assert first.settle_at == 10.0 + SETTLE
    facts.alive = False
    dead = decider.evaluate("r", state, facts, 10.5)
    assert [m.rule.name for m in dead.matches] == ["DEAD"] and not dead.matches[0].opened
    assert dead.matches[0].incident == first.matches[0].incident and dead.settle_at is None
    decision = decider.settle(state, facts.done, 11.5)
    assert decision.rule.name == "TRACEBACK" and decision.candidates == ("TRACEBACK", "DEAD")
    assert decision.act and [s.name for s in decision.plan] == ["restart"] and decision.streak == 1


def test_matches_while_an_incident_acts_are_suppressed_and_a_state_rule_fires_again_after(shipped):
    decider, state, facts = run_of(shipped)
    facts.alive = False
    opened = decider.evaluate("r", state, facts, 1.0)
    decider.settle(state, 0, 1.0 + SETTLE)
    during = line(decider, state, facts, "Traceback (most recent call last):", 3.0)
    assert during.matches[0].suppressed == SUPPRESSED_IN_PROGRESS and during.settle_at is None
    # DEAD stays latched while its incident acts: a safety poll does not open another.
    assert decider.evaluate("r", state, facts, 4.0).matches == ()
    assert decider.closed(state, opened.matches[0].incident, "restarted", 5.0)
    assert state.incident is None and len(state.guard.restarts) == 1


def crash_line(decider, state, facts, offset, now):
    text = "Traceback (most recent call last):"
    return decider.on_line("r", state, facts, text, now, {"line": text, "offset": offset})


def test_a_crash_the_restarted_process_wrote_before_the_restart_closed_opens_the_next_incident(shipped):
    """A watcher killed inside a restart step: the new process crashed while the resumed incident still acted."""
    decider, state, facts = run_of(shipped)
    first = crash_line(decider, state, facts, 100, 1.0)
    decider.settle(state, 0, 1.0 + SETTLE)
    own = crash_line(decider, state, facts, 200, 3.0)  # the old process's own lines, before the launch
    newer = crash_line(decider, state, facts, 900, 4.0)  # the restarted process's, after the log held 500 bytes
    assert own.matches[0].suppressed and newer.matches[0].suppressed
    assert state.held_from == 200
    after = decider.closed(state, first.matches[0].incident, "restarted", 5.0, log_from=500)
    assert [(m.rule.name, m.evidence["offset"], m.requeued, m.opened) for m in after.matches] == [("TRACEBACK", 900, True, True)]
    assert after.settle_at == 5.0 + SETTLE and state.held == [] and state.held_from is None
    decision = decider.settle(state, 0, 5.0 + SETTLE)
    assert decision.incident == after.matches[0].incident != first.matches[0].incident
    assert decision.act is False and decision.streak == 2  # the guard's second TRACEBACK without progress: halt


def test_held_matches_of_an_incident_that_did_not_restart_are_its_own(shipped):
    decider, state, facts = run_of(shipped)
    first = crash_line(decider, state, facts, 100, 1.0)
    decider.settle(state, 0, 1.0 + SETTLE)
    crash_line(decider, state, facts, 900, 3.0)
    assert decider.closed(state, first.matches[0].incident, "halted", 5.0, log_from=500) == NOTHING
    assert state.incident is None and state.held == []


def test_a_new_process_clears_the_state_rules_latches(shipped):
    decider, state, facts = run_of(shipped)
    facts.alive = False
    opened = decider.evaluate("r", state, facts, 1.0)
    decider.settle(state, 0, 1.0 + SETTLE)
    decider.closed(state, opened.matches[0].incident, "restarted", 2.0, log_from=0)
    assert decider.evaluate("r", state, facts, 2.5).matches == ()  # still latched: the same dead process
    decider.new_process(state)  # the restart's process was found dead too
    again = decider.evaluate("r", state, facts, 3.0)
    assert [m.rule.name for m in again.matches] == ["DEAD"] and again.matches[0].opened


def test_a_crash_whose_process_still_lives_waits_for_the_exit_a_bounded_while(shipped):
    decider = Decider(shipped, DecisionPolicy(SETTLE, POLICY.limits, exit_wait_s=3.0))
    state, facts = RunDecisions(), RunFacts(shipped, started_at=0.0, alive=True)
    crash_line(decider, state, facts, 0, 1.0)
    assert not decider.awaits_exit(state, True, 2.0)  # a traceback line, not yet a whole crash
    state.incident.crash = {"cause": "KeyError: 'choices'"}
    assert decider.awaits_exit(state, True, 2.0) and not decider.awaits_exit(state, False, 2.0)
    assert not decider.awaits_exit(state, True, 4.0)  # bounded: decided without the exit after 3 s


def test_a_state_rule_held_off_by_a_resumed_incident_is_recorded_once_not_every_poll(shipped):
    decider, state, facts = run_of(shipped)
    decider.claim("r", state, "i-previous", informational=False, now=0.0)  # a previous watcher's restart, resumed
    facts.alive = False
    first = decider.evaluate("r", state, facts, 1.0)
    assert [(m.rule.name, m.suppressed) for m in first.matches] == [("DEAD", SUPPRESSED_IN_PROGRESS)]
    assert decider.evaluate("r", state, facts, 2.0).matches == ()
    decider.closed(state, "i-previous", "restarted", 3.0, log_from=0)
    assert [m.rule.name for m in decider.evaluate("r", state, facts, 4.0).matches] == ["DEAD"]  # its own incident now


def test_the_same_rule_twice_without_progress_halts_with_the_reason(shipped):
    decider, state, facts = run_of(shipped)
    decisions = []
    for t in (0.0, 10.0):
        outcome = line(decider, state, facts, "Traceback (most recent call last):", t)
        decisions.append(decider.settle(state, facts.done, t + SETTLE))
        decider.closed(state, outcome.matches[0].incident, "restarted", t + 2)
    assert decisions[0].act and not decisions[1].act
    assert decisions[1].reason == "TRACEBACK fired 2 times in a row with no progress (done stayed at 0)"
    assert [s.name for s in decisions[1].plan] == ["halt"] and decisions[1].streak == 2


def test_progress_between_two_crashes_starts_a_new_streak(shipped):
    decider, state, facts = run_of(shipped)
    for t, done in ((0.0, 3), (10.0, 7)):
        facts.done = done
        outcome = line(decider, state, facts, "Traceback (most recent call last):", t)
        decision = decider.settle(state, facts.done, t + SETTLE)
        decider.closed(state, outcome.matches[0].incident, "restarted", t + 2)
        assert decision.act and decision.streak == 1


def test_guarded_false_rules_do_not_count_toward_the_streak_but_the_budget_still_halts(shipped):
    """Two NODE_LOST in a row with no progress restart twice; the restart budget still applies."""
    policy = DecisionPolicy(SETTLE, GuardLimits(same_rule_limit=2, restart_budget=3, restart_window_s=3600))
    facts = RunFacts(shipped, started_at=0.0, alive=False)
    decider, state = Decider(shipped, policy), RunDecisions()
    verdicts = []
    for t in (0.0, 10.0, 20.0, 30.0):
        facts.job_state = "NODE_FAIL"
        outcome = decider.evaluate("r", state, facts, t)
        assert [m.rule.name for m in outcome.matches] == ["NODE_LOST", "DEAD"]
        decision = decider.settle(state, 0, t + SETTLE)
        assert decision.rule.name == "NODE_LOST"
        verdicts.append((decision.act, decision.streak))
        decider.closed(state, decision.incident, "restarted" if decision.act else "halted", t + 2)
        facts.new_process(t + 3)
        assert decider.evaluate("r", state, facts, t + 3).matches == ()  # the new job runs: nothing holds
        facts.alive = False
    assert verdicts[:3] == [(True, None), (True, None), (True, None)]
    assert verdicts[3] == (False, None)
    assert "restart budget spent: 3 restarts" in decision.reason


def test_a_per_rule_same_rule_limit_overrides_the_global_one():
    rules = parse_rules("""
version: 1
rules:
  - name: FLAKY
    same_rule_limit: 3
    when: {log: {pattern: 'flaky'}}
    actions: [restart]
""", "inline.yaml")
    decider, state, facts = run_of(rules)
    acts = []
    for t in (0.0, 10.0, 20.0):
        outcome = line(decider, state, facts, "flaky", t)
        acts.append(decider.settle(state, 0, t + SETTLE).act)
        decider.closed(state, outcome.matches[0].incident, "restarted", t + 2)
    assert acts == [True, True, False]


def test_informational_rules_are_decided_at_once_on_their_own_incident_and_never_guarded(shipped):
    decider, state, facts = run_of(shipped, done=40, null_reasons={"content_filter": 4})
    outcome = decider.evaluate("r", state, facts, 0.0)
    assert [d.rule.name for d in outcome.decisions] == ["HIGH_NULL"]
    side = outcome.decisions[0]
    assert side.informational and side.streak is None and side.incident in state.side_incidents
    assert state.incident is None and outcome.settle_at is None
    # Latched: the next evaluation does not alert again.
    assert decider.evaluate("r", state, facts, 1.0).decisions == ()
    assert not decider.closed(state, side.incident, "done", 2.0)


def test_a_human_resume_forgets_the_streak_and_the_latches(shipped):
    decider, state, facts = run_of(shipped)
    facts.alive = False
    decider.evaluate("r", state, facts, 0.0)
    decider.settle(state, 0, SETTLE)
    assert "DEAD" in state.latches and state.guard.streak == 1
    decider.resumed(state)
    assert not state.latches and state.guard.streak == 0
