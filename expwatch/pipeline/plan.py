"""The plan file of ``expwatch pipeline``: a baseline and an ordered list of phases.

The plan is checked completely when it is loaded, and every error names the
plan file, the line and the field (``plan.yaml:14: phases[1].set: ...``), so
a typo is found before the first phase is launched, not hours into the run.
Relative paths are relative to the plan file, which is also the phases' cwd.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from expwatch.bounded_yaml import YamlRefused, parse_yaml

from expwatch.manifest import ManifestError, validate_name
from expwatch.results.drift import Override
from expwatch.results.fields import FieldMap

PLACEHOLDERS = ("config", "result", "log", "name", "dir")
SCRIPT_SUFFIXES = (".py", ".sh")
PLAN_KEYS = {"name", "baseline", "phases"}
BASELINE_KEYS = {"config", "result", "criteria"}
PHASE_KEYS = {"name", "command", "result", "log", "expected", "profile", "set", "changes", "smoke", "fields"}


class PlanError(ValueError):
    """A plan file that cannot be used (message names file, line and field)."""


@dataclass(frozen=True)
class Baseline:
    config: Path
    result: Path
    criteria: Path  # written by `expwatch noise`; holds the recorded noise floor


@dataclass(frozen=True)
class Phase:
    """One launch of the ablation: the baseline config with ``overrides``, run by ``command``."""

    name: str
    command: tuple[str, ...]  # may hold {config} {result} {log} {name} {dir}
    result: Path
    log: Path
    expected: int
    profile: str | None
    overrides: tuple[Override, ...]
    changes: frozenset[str]  # cache-key fields this phase means to change
    smoke: int | None  # items for the smoke run; None: the configured default
    fields: dict[str, str | None]  # field map of this run's result, written beside it


@dataclass(frozen=True)
class Plan:
    path: Path
    name: str
    baseline: Baseline
    phases: tuple[Phase, ...]

    @property
    def root(self) -> Path:
        return self.path.parent

    def named_files(self) -> tuple[Path, ...]:
        """The files the plan relies on existing before any phase runs: the baseline's, and each phase's scripts.

        A phase's script is an argument of its command ending in one of
        ``SCRIPT_SUFFIXES`` (relative to the plan's folder); its outputs
        (result, log) do not exist yet and are not named here.
        """
        scripts = tuple(dict.fromkeys(
            (self.root / arg).resolve() for phase in self.phases for arg in phase.command
            if arg.endswith(SCRIPT_SUFFIXES) and "{" not in arg))
        return (self.baseline.config, self.baseline.result, self.baseline.criteria, *scripts)


def load_plan(path: Path) -> Plan:
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        document = parse_yaml(text, str(path))  # bounded before anything is built (expwatch/bounded_yaml.py)
    except YamlRefused as exc:
        raise PlanError(str(exc)) from None
    return _Reader(path, document.root).plan(document.data)


class _Reader:
    """Typed, located reads of the plan's YAML."""

    def __init__(self, path: Path, root: yaml.Node | None):
        self.path = path
        self.root = root

    def fail(self, at: tuple[Any, ...], problem: str) -> PlanError:
        node, line = self.root, None
        for part in at:
            if isinstance(node, yaml.MappingNode):
                node = next((value for key, value in node.value if key.value == part), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
            else:
                break
            if node is not None:
                line = node.start_mark.line + 1
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in at).lstrip(".")
        return PlanError(f"{self.path}{f':{line}' if line else ''}: {where or 'plan'}: {problem}")

    def mapping(self, value: Any, at: tuple[Any, ...], keys: set[str], required: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(at, f"must be a mapping, got {type(value).__name__}")
        unknown = sorted(set(value) - keys)
        if unknown:
            raise self.fail((*at, unknown[0]), f"unknown key (known: {', '.join(sorted(keys))})")
        missing = sorted(required - set(value))
        if missing:
            raise self.fail(at, f"missing {missing[0]!r}")
        return value

    def file(self, value: Any, at: tuple[Any, ...]) -> Path:
        if not isinstance(value, str) or not value:
            raise self.fail(at, f"must be a path, got {value!r}")
        return (self.path.parent / value).resolve()

    def plan(self, data: Any) -> Plan:
        data = self.mapping(data, (), PLAN_KEYS, {"baseline", "phases"})
        base = self.mapping(data["baseline"], ("baseline",), BASELINE_KEYS, BASELINE_KEYS)
        baseline = Baseline(*(self.file(base[key], ("baseline", key)) for key in ("config", "result", "criteria")))
        phases = data["phases"]
        if not isinstance(phases, list) or not phases:
            raise self.fail(("phases",), "must be a non-empty list of phases")
        parsed = tuple(self.phase(phase, index) for index, phase in enumerate(phases))
        names = [phase.name for phase in parsed]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise self.fail(("phases", index, "name"), f"phase {name!r} appears twice")
        return Plan(self.path, self.name(data.get("name", self.path.stem), ("name",)), baseline, parsed)

    def name(self, value: Any, at: tuple[Any, ...]) -> str:
        try:
            return validate_name(str(value))
        except ManifestError as exc:
            raise self.fail(at, str(exc)) from None

    def phase(self, data: Any, index: int) -> Phase:
        at = ("phases", index)
        # `expected` is required: the watcher marks a run COMPLETE when done reaches it, and the pipeline waits for that.
        data = self.mapping(data, at, PHASE_KEYS, {"name", "command", "result", "log", "expected"})
        command = data["command"]
        if not isinstance(command, list) or not command or not all(isinstance(a, (str, int, float)) for a in command):
            raise self.fail((*at, "command"), "must be a non-empty argv list (no shell is used)")
        argv = tuple(str(arg) for arg in command)
        for arg in argv:
            try:
                arg.format(**dict.fromkeys(PLACEHOLDERS, ""))
            except (KeyError, IndexError, ValueError) as exc:
                raise self.fail((*at, "command"), f"{arg!r}: unknown placeholder {exc} (known: {', '.join(PLACEHOLDERS)})") from None
        return Phase(
            name=self.name(data["name"], (*at, "name")),
            command=argv,
            result=self.file(data["result"], (*at, "result")),
            log=self.file(data["log"], (*at, "log")),
            expected=self.count(data["expected"], (*at, "expected")),
            profile=self.text(data.get("profile"), (*at, "profile")),
            overrides=self.overrides(data.get("set", {}), (*at, "set")),
            changes=frozenset(self.texts(data.get("changes", []), (*at, "changes"))),
            smoke=self.count(data.get("smoke"), (*at, "smoke")),
            fields=self.fields(data.get("fields", {}), (*at, "fields")),
        )

    def count(self, value: Any, at: tuple[Any, ...]) -> int | None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise self.fail(at, f"must be a positive integer, got {value!r}")
        return value

    def text(self, value: Any, at: tuple[Any, ...]) -> str | None:
        if value is not None and (not isinstance(value, str) or not value):
            raise self.fail(at, f"must be a non-empty string, got {value!r}")
        return value

    def texts(self, value: Any, at: tuple[Any, ...]) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(at, f"must be a list of dotted field names, got {value!r}")
        return value

    def overrides(self, value: Any, at: tuple[Any, ...]) -> tuple[Override, ...]:
        if not isinstance(value, dict):
            raise self.fail(at, "must map dotted fields to values, e.g. {pipeline.fps: 2}")
        for dotted in value:
            if not isinstance(dotted, str) or not dotted or any(not part for part in dotted.split(".")):
                raise self.fail((*at, dotted), f"{dotted!r} is not a dotted field name")
        return tuple(Override(field=k, value=v, text=f"{k}={v}") for k, v in value.items())

    def fields(self, value: Any, at: tuple[Any, ...]) -> dict[str, str | None]:
        if not isinstance(value, dict):
            raise self.fail(at, "must map field names to the result's names, e.g. {response: pred}")
        for key, name in value.items():
            if key not in FieldMap.names():
                raise self.fail((*at, key), f"unknown field (known: {', '.join(FieldMap.names())})")
            if name is not None and (not isinstance(name, str) or not name):
                raise self.fail((*at, key), f"must be a field name or null, got {name!r}")
        return dict(value)
