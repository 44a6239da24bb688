"""Hypothesis profiles for the fuzz suite (tests marked ``fuzz``).

``ci`` (the default) keeps the whole suite within a minute on a shared
2-core machine; ``make fuzz`` selects ``fuzz-long`` with
``--hypothesis-profile``. ``deadline`` is the "no hang" bound: an input that
takes longer than it to load fails the test, however it ends.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, settings

# Inputs per loader kind; the live-watcher fuzz runs fewer, each being a real file change under a real watcher.
CI_EXAMPLES, LONG_EXAMPLES = 1000, 20000
CI_LIVE, LONG_LIVE = 100, 2000

_COMMON = dict(
    deadline=timedelta(seconds=2),
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("ci", max_examples=CI_EXAMPLES, **_COMMON)
settings.register_profile("fuzz-long", max_examples=LONG_EXAMPLES, **_COMMON)
settings.load_profile("ci")


def examples(share: float = 1.0) -> int:
    """``share`` of the loaded profile's inputs: kinds whose loader is slow (schema checks, a whole report) take fewer in CI."""
    return max(1, int(settings.default.max_examples * share))


def live_examples() -> int:
    """The live-watcher budget that goes with the loaded profile."""
    return LONG_LIVE if settings.default.max_examples >= LONG_EXAMPLES else CI_LIVE
