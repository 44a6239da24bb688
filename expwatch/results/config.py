"""The typed view of configs/validation.yaml (plus a user's override file).

Every field is checked once, here, so the checks downstream trust the types;
a bad value is reported with the file, line and dotted field it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, reduce
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import yaml

from expwatch.results.fields import FieldMap, Normalisation
from expwatch.results.logcounts import LogPatterns
from expwatch.rules.patterns import PatternError, compile_pattern
from expwatch.settings import deep_merge, yaml_mapping

SHIPPED_NAME = "validation.yaml"


class ValidationSettingsError(ValueError):
    """A validation settings file that cannot be used (message names file, line and field)."""


@dataclass(frozen=True)
class SmokeOptions:
    """How to run one eval script on a few items into a throwaway result."""

    n: int
    limit_flag: str
    output_flag: str
    timeout_s: float


@dataclass(frozen=True)
class NoiseRule:
    """How a noise floor is derived from the difference between two identical runs."""

    min_points: float
    factor: float

    def floor(self, observed_delta: float) -> float:
        return max(self.min_points, self.factor * abs(observed_delta))

    def explain(self, observed_delta: float) -> str:
        scaled = self.factor * abs(observed_delta)
        return (
            f"max({self.min_points:g} points, {self.factor:g} x |observed delta| {abs(observed_delta):.2f}"
            f" = {scaled:.2f}) = {self.floor(observed_delta):.2f} points"
        )


@dataclass(frozen=True)
class PipelineOptions:
    """How ``expwatch pipeline`` moves from phase to phase."""

    noise_goes_on: bool
    poll_s: float
    watcher_start_timeout_s: float
    launch_timeout_s: float


@dataclass(frozen=True)
class ValidationSettings:
    null_warn_rate: float
    bias_max_share: float
    backward_task_types: frozenset[str]
    leak_tolerance: float
    log_patterns: LogPatterns
    smoke_default: SmokeOptions
    smoke_scripts: dict[str, SmokeOptions]
    drift_fields: tuple[str, ...]
    noise: NoiseRule
    field_map: FieldMap
    normalise: Normalisation
    item_keys: tuple[str, ...]
    jsonl_suffixes: tuple[str, ...]
    pipeline: PipelineOptions


def load_validation_settings(override: Path | None = None) -> ValidationSettings:
    """Shipped defaults, with ``override`` (same shape, any subset) deep-merged on top."""
    shipped = resources.files("expwatch.configs") / SHIPPED_NAME
    sources = [_Source.parse(f"configs/{SHIPPED_NAME}", shipped.read_text(encoding="utf-8"))]
    if override is not None:
        try:
            text = Path(override).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValidationSettingsError(f"{override}: cannot read ({exc.strerror or exc})") from None
        sources.append(_Source.parse(str(override), text))
    fields = _Fields(sources)
    default = SmokeOptions(
        n=fields.count("smoke", "default", "n"),
        limit_flag=fields.text("smoke", "default", "limit_flag"),
        output_flag=fields.text("smoke", "default", "output_flag"),
        timeout_s=fields.number("smoke", "default", "timeout_s"),
    )
    return ValidationSettings(
        null_warn_rate=fields.share("nulls", "warn_rate"),
        bias_max_share=fields.share("answer_bias", "max_share"),
        backward_task_types=frozenset(fields.texts("leak", "backward_task_types")),
        leak_tolerance=fields.number("leak", "tolerance"),
        log_patterns=_log_patterns(fields),
        smoke_default=default,
        smoke_scripts={name: _smoke_override(fields, name, default) for name in fields.mapping("smoke", "scripts")},
        drift_fields=fields.texts("drift", "fields"),
        noise=NoiseRule(min_points=fields.number("noise", "min_points"), factor=fields.number("noise", "factor")),
        field_map=_field_map(fields),
        normalise=Normalisation(
            case=fields.flag("correct_from_response", "case"),
            whitespace=fields.flag("correct_from_response", "whitespace"),
        ),
        item_keys=fields.texts("readers", "item_keys"),
        jsonl_suffixes=fields.texts("readers", "jsonl_suffixes"),
        pipeline=PipelineOptions(
            noise_goes_on=fields.flag("pipeline", "noise_goes_on"),
            poll_s=fields.number("pipeline", "poll_s"),
            watcher_start_timeout_s=fields.number("pipeline", "watcher_start_timeout_s"),
            launch_timeout_s=fields.number("pipeline", "launch_timeout_s"),
        ),
    )


def _log_patterns(fields: _Fields) -> LogPatterns:
    patterns = {}
    for name in fields.mapping("log_patterns"):
        try:
            patterns[name] = compile_pattern(fields.text("log_patterns", name))
        except PatternError as exc:
            fields.fail(("log_patterns", name), f"not a pattern RE2 can run: {exc}")
    return LogPatterns.of(patterns, fields.count("log_line_max_bytes"))


def _field_map(fields: _Fields) -> FieldMap:
    declared = fields.mapping("fields")
    unknown = sorted(set(declared) - set(FieldMap.names()))
    if unknown:
        fields.fail(("fields", unknown[0]), f"unknown field (known: {', '.join(FieldMap.names())})")
    return FieldMap(**{name: fields.optional_text("fields", name) for name in FieldMap.names()})


def _smoke_override(fields: _Fields, script: str, default: SmokeOptions) -> SmokeOptions:
    fields.mapping("smoke", "scripts", script)
    at = ("smoke", "scripts", script)
    return SmokeOptions(
        n=fields.count(*at, "n") if fields.has(*at, "n") else default.n,
        limit_flag=fields.text(*at, "limit_flag") if fields.has(*at, "limit_flag") else default.limit_flag,
        output_flag=fields.text(*at, "output_flag") if fields.has(*at, "output_flag") else default.output_flag,
        timeout_s=fields.number(*at, "timeout_s") if fields.has(*at, "timeout_s") else default.timeout_s,
    )


@dataclass(frozen=True)
class _Source:
    label: str
    data: dict
    root: yaml.Node | None

    @classmethod
    def parse(cls, label: str, text: str) -> _Source:
        data = yaml_mapping(text, label, ValidationSettingsError)
        return cls(label, data, yaml.compose(text))

    def line_of(self, parts: tuple[str, ...]) -> int | None:
        node = self.root
        for part in parts:
            if not isinstance(node, yaml.MappingNode):
                return None
            node = next((value for key, value in node.value if key.value == part), None)
        return node.start_mark.line + 1 if node is not None else None


class _Fields:
    """Typed, located access to the merged settings."""

    def __init__(self, sources: list[_Source]):
        self.sources = sources
        self.data = reduce(deep_merge, (source.data for source in sources))

    def has(self, *parts: str) -> bool:
        node: Any = self.data
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    def get(self, *parts: str) -> Any:
        if not self.has(*parts):
            self.fail(parts, "field is missing")
        return reduce(lambda node, part: node[part], parts, self.data)

    def fail(self, parts: tuple[str, ...], problem: str) -> NoReturn:
        where = self.sources[-1].label
        for source in reversed(self.sources):
            line = source.line_of(parts)
            if line is not None:
                where = f"{source.label}:{line}"
                break
        raise ValidationSettingsError(f"{where}: {'.'.join(parts)}: {problem}")

    def number(self, *parts: str) -> float:
        value = self.get(*parts)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            self.fail(parts, f"must be a non-negative number, got {value!r}")
        return float(value)

    def share(self, *parts: str) -> float:
        value = self.number(*parts)
        if value > 1:
            self.fail(parts, f"must be a share between 0 and 1, got {value!r}")
        return value

    def count(self, *parts: str) -> int:
        value = self.get(*parts)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail(parts, f"must be a positive integer, got {value!r}")
        return value

    def text(self, *parts: str) -> str:
        value = self.get(*parts)
        if not isinstance(value, str) or not value:
            self.fail(parts, f"must be a non-empty string, got {value!r}")
        return value

    def optional_text(self, *parts: str) -> str | None:
        if self.get(*parts) is None:
            return None
        return self.text(*parts)

    def flag(self, *parts: str) -> bool:
        value = self.get(*parts)
        if not isinstance(value, bool):
            self.fail(parts, f"must be true or false, got {value!r}")
        return value

    def texts(self, *parts: str) -> tuple[str, ...]:
        value = self.get(*parts)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(parts, f"must be a list of strings, got {value!r}")
        return tuple(value)

    def mapping(self, *parts: str) -> dict:
        value = self.get(*parts)
        if not isinstance(value, dict):
            self.fail(parts, f"must be a mapping, got {value!r}")
        return value


@lru_cache(maxsize=1)
def shipped_validation_settings() -> ValidationSettings:
    """The shipped settings, parsed once: the watcher reads progress many times a second."""
    return load_validation_settings()
