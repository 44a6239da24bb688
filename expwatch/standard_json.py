"""JSON for other programs: standard JSON only (RFC 8259).

Python's ``json`` reads and writes ``NaN`` and ``Infinity``, and eval scripts
written in Python put them in their result files. Passed through to a
``--json`` output, they break ``jq``, JavaScript and most other parsers. Every
non-finite float becomes the string that names it, so the value is still
visible and the output parses everywhere.
"""

from __future__ import annotations

import math
from typing import Any


def standard_json(value: Any) -> Any:
    """A copy of ``value`` with every NaN / ±Infinity float replaced by ``"NaN"`` / ``"Infinity"`` / ``"-Infinity"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: standard_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [standard_json(v) for v in value]
    return value
