"""Config drift: do two runs agree on the fields that decide the cache key?

A run's effective config is layered (defaults -> benchmark -> model -> user
file -> command-line overrides), so both sides are built the same way:
files deep-merged left to right, then ``a.b=value`` overrides. A result file
stands for the config it was produced with (its ``config`` object).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import yaml

from expwatch.settings import deep_merge

RESULT_KEYS = ("per_item", "completed_ids")


class ConfigError(ValueError):
    """A config layer or override that cannot be used (message names the file/line or option)."""


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Override:
    """One ``a.b=value`` setting; the value is parsed as YAML (``2`` is a number, ``'"2"'`` a string)."""

    field: str
    value: Any
    text: str

    @classmethod
    def parse(cls, text: str) -> Override:
        dotted, sep, raw = text.partition("=")
        if not sep or not dotted or any(not part for part in dotted.split(".")):
            raise ConfigError(f"override {text!r}: expected FIELD.PATH=VALUE")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: PyYAML's chr() of an escape past U+10FFFF
            raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
        return cls(field=dotted, value=value, text=text)

    def as_layer(self) -> dict[str, Any]:
        return reduce(lambda inner, key: {key: inner}, reversed(self.field.split(".")), self.value)


@dataclass(frozen=True)
class ConfigSide:
    """One side of a comparison: layer files (lowest first) then overrides."""

    files: tuple[Path, ...]
    overrides: tuple[Override, ...] = ()

    @property
    def label(self) -> str:
        return " + ".join([str(path) for path in self.files] + [f"--set {o.text}" for o in self.overrides])

    def merged(self) -> dict[str, Any]:
        layers = [load_config_file(path) for path in self.files] + [o.as_layer() for o in self.overrides]
        return reduce(deep_merge, layers, {})


@dataclass(frozen=True)
class FieldDrift:
    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.field}: {render_value(self.old)} -> {render_value(self.new)}"


def split_layers(spec: str) -> tuple[Path, ...]:
    """``a.yaml+b.yaml`` -> two layers; a file whose own name contains ``+`` stays whole."""
    if Path(spec).exists():
        return (Path(spec),)
    return tuple(Path(part) for part in spec.split("+") if part)


def load_config_file(path: Path) -> dict[str, Any]:
    """A YAML/JSON config as a dict; for a result file, the config it ran with."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: PyYAML's chr() of an escape past U+10FFFF
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    if _is_result(data):
        return data["config"]
    return data


def get_field(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def compare_fields(baseline: dict[str, Any], current: dict[str, Any], fields: tuple[str, ...]) -> list[FieldDrift]:
    drifts = []
    for dotted in fields:
        old, new = get_field(baseline, dotted), get_field(current, dotted)
        if not _same(old, new):
            drifts.append(FieldDrift(field=dotted, old=old, new=new))
    return drifts


def render_value(value: Any) -> str:
    if value is MISSING:
        return "<missing>"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _same(old: Any, new: Any) -> bool:
    if old is MISSING or new is MISSING:
        return old is new
    # True == 1 in Python, but a flag turned into a number is a different config.
    if isinstance(old, bool) != isinstance(new, bool):
        return False
    return old == new


def _is_result(data: dict[str, Any]) -> bool:
    # A file holding nothing but a config object is a result stripped of its items.
    return isinstance(data.get("config"), dict) and (any(key in data for key in RESULT_KEYS) or len(data) == 1)
