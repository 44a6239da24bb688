"""The quick scale: the shipped settings and rules on seconds, as the tests and the benchmarks run them.

Both halves are data in configs/ (quick.yaml, the settings; quick_rules.yaml,
how far the shipped rules' waits and silence are shortened) and this is their
one reader. The test suite must not import bench/ and the benchmarks should
not import tests/, so the one copy lives in the package both already import:
a figure in BENCHMARKS.md is then measured on the very configuration the tests
pass on.
"""

from __future__ import annotations

from expwatch.rules.loader import shipped_rules_quickened
from expwatch.settings import shipped_text, shipped_yaml

FAST_SETTINGS = shipped_text("quick.yaml")


def fast_rules(silent_s: float | None = None, wait_s: float | None = None) -> str:
    """The shipped rules on the quick scale; a caller that needs a longer silence (or wait) names only that."""
    scale = shipped_yaml("quick_rules.yaml")
    return shipped_rules_quickened(scale["max_wait_s"] if wait_s is None else wait_s,
                                   scale["log_silent_s"] if silent_s is None else silent_s)
