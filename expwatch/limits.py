"""How large, deep and wide an input file may be before it is refused.

The bounds are data (configs/limits.yaml). They are shipped only, because
the user's own settings file is one of the inputs they bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class YamlLimits:
    max_bytes: int
    max_depth: int
    max_aliases: int
    max_nodes: int


@dataclass(frozen=True)
class JsonLimits:
    max_bytes: int
    max_depth: int
    max_int_digits: int


@dataclass(frozen=True)
class InputLimits:
    yaml: YamlLimits
    json: JsonLimits


@lru_cache(maxsize=1)
def input_limits() -> InputLimits:
    # The shipped file is ours and small: a plain safe_load is the bootstrap.
    data = yaml.safe_load((resources.files("expwatch.configs") / "limits.yaml").read_text(encoding="utf-8"))
    return InputLimits(YamlLimits(**data["yaml"]), JsonLimits(**data["json"]))
