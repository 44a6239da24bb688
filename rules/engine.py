"""durable-rules behind a small interface of ours, owned by one thread.

durable-rules 2.0.28 is not thread-safe, and ``Host.__init__`` starts two
``threading.Timer`` loops that call into the C engine every 0.2 s from their
own threads. ``_QuietHost`` does not start them; we never use durable timers
or its action queue, so nothing else touches the engine. The owner thread
asserts a run's fact snapshot, collects which rules matched (callbacks only
record the name), and retracts it again.

Every run's facts go to one durable session (``sid``): each rule is one
condition over one fact (``rules/compile.py``) and every fact is retracted
right after it is evaluated, so a fact never meets another run's. A session
per run cost the C engine 231 KB each, never given back (below): 23 MB
at 100 runs, 230 MB at a lab's 1,000 (BENCHMARKS.md, issue 16). Nothing is
ever deleted from the session: durable-rules' ``delete_state`` in 2.0.28
frees state that the engine's node cache still points to, and the next
assert dies with SIGSEGV or SIGABRT (issue 15; jruizgit/rules PR #297 fixes
the same eviction bug in v0's C state code).
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from durable import engine as durable

from expwatch.rules.compile import ruleset_definition
from expwatch.rules.model import RuleSet

# durable-rules refuses objects with more properties than this.
MAX_FACT_PROPERTIES = 255
SESSION = "runs"  # the one durable session every run's facts are evaluated in

_generation = itertools.count(1)


class _QuietHost(durable.Host):
    def _run(self) -> None:
        """No dispatch/timer threads: the owner thread drives the engine."""


class EngineError(Exception):
    """durable-rules refused one run's fact: that run's problem, audited, never the watcher's."""


class RuleEngine:
    """Evaluate every enabled rule of a RuleSet against one run's facts."""

    def __init__(self, ruleset: RuleSet):
        self.ruleset = ruleset
        self._owner = threading.get_ident()
        self._host = _QuietHost()
        # Ruleset names are global inside the C engine and cannot be removed,
        # so every (re)load registers under a fresh name.
        self._name = f"expwatch_{next(_generation)}"
        self._matched: list[str] = []
        self._ids = itertools.count(1)
        definition = ruleset_definition(ruleset)
        for rule_name in definition:
            definition[rule_name]["run"] = self._recorder(rule_name)
        if definition:
            self._host.register_rulesets({self._name: definition})
        self._empty = not definition

    def _recorder(self, rule_name: str):
        def record(_context: Any) -> None:
            self._matched.append(rule_name)

        return record

    def evaluate(self, run: str, facts: dict[str, Any]) -> list[str]:
        """Names of the rules whose condition holds for these facts, in file order."""
        if threading.get_ident() != self._owner:
            raise EngineError("RuleEngine used from a thread that does not own it")
        if self._empty:
            return []
        fact = {**facts, "sid": SESSION, "id": next(self._ids)}
        if len(fact) > MAX_FACT_PROPERTIES:
            raise EngineError(f"run {run!r}: {len(fact)} fact properties exceed durable-rules' limit of {MAX_FACT_PROPERTIES}")
        self._matched = []
        try:
            self._host.assert_fact(self._name, fact)
        except durable.MessageNotHandledException:
            return []
        except durable.MessageObservedException as exc:
            raise EngineError(f"run {run!r}: fact id reused ({exc})") from None
        except Exception as exc:  # the C engine reports every other refusal as a bare Exception
            raise EngineError(f"run {run!r}: durable-rules refused the fact ({exc})") from None
        matched = self._matched
        try:
            self._host.retract_fact(self._name, fact)
        except durable.MessageNotHandledException:
            pass
        except Exception as exc:
            raise EngineError(f"run {run!r}: durable-rules could not retract the fact ({exc})") from None
        order = {r.name: i for i, r in enumerate(self.ruleset.rules)}
        return sorted(set(matched), key=order.__getitem__)
