"""Which field of an eval script's item record means what.

Eval scripts do not agree on names: the seed writes ``response`` and the gold
``answer``; lm-evaluation-harness writes ``filtered_resps`` and ``target``;
others write ``pred``/``label``. Reading a field by the wrong name is silent
(the answer-bias check once counted the gold labels), so every check reads
through one ``FieldMap``: shipped defaults in configs/validation.yaml, a
per-run file beside the result, then ``validate --field`` on top.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from expwatch.bounded_yaml import YamlRefused, parse_yaml
from expwatch.files import NotReadyYet, read_text

SIDECAR_SUFFIX = ".fields.yaml"


class FieldMapError(ValueError):
    """A field map entry that cannot be used (message names the file or option and the field)."""


@dataclass(frozen=True)
class FieldMap:
    """Dotted paths into one item record; ``None`` means the script does not write that field.

    A path part that is an integer indexes a list, so ``filtered_resps.0``
    reads the first filtered response of an lm-evaluation-harness sample.
    """

    id: str | None
    response: str | None
    gold: str | None
    correct: str | None
    task_type: str | None
    null_reason: str | None
    max_time: str | None
    realtime: str | None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def with_overrides(self, overrides: dict[str, str | None], where: str) -> FieldMap:
        if not overrides:  # nearly every run: no sidecar, no --field
            return self
        unknown = sorted(set(overrides) - set(self.names()))
        if unknown:
            raise FieldMapError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(self.names())})")
        for name, path in overrides.items():
            if path is not None and (not isinstance(path, str) or not path):
                raise FieldMapError(f"{where}: {name}: must be a field name or null, got {path!r}")
        return replace(self, **overrides)

    def to_json(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in self.names()}


@dataclass(frozen=True)
class Normalisation:
    """How a response is compared with the gold when the record has no ``correct``."""

    case: bool
    whitespace: bool

    def text(self, value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        if self.whitespace:
            text = re.sub(r"\s+", " ", text).strip()
        return text.casefold() if self.case else text

    def same(self, response: Any, gold: Any) -> bool:
        return self.text(response) == self.text(gold)


_ABSENT = object()


def lookup(record: Any, path: str | None) -> Any:
    """The value at a dotted path, or None when any step is missing."""
    if path is None:
        return None
    node = record
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part, _ABSENT)
        elif isinstance(node, list) and part.isdigit():
            node = node[int(part)] if int(part) < len(node) else _ABSENT
        else:
            return None
        if node is _ABSENT:
            return None
    return node


def parse_field_options(options: list[str]) -> dict[str, str | None]:
    """``--field response=pred`` options; an empty value (``gold=``) means the field is absent."""
    overrides: dict[str, str | None] = {}
    for option in options:
        name, sep, path = option.partition("=")
        if not sep or not name:
            raise FieldMapError(f"--field {option!r}: expected NAME=FIELD, e.g. response=pred")
        overrides[name.strip()] = path.strip() or None
    return overrides


def sidecar_path(result_path: Path | str) -> Path:
    """``out.json`` -> ``out.fields.yaml``: the per-run field map, read by status, watcher and validate alike."""
    return Path(sidecar_text(os.fspath(result_path)))


def sidecar_text(result_path: str) -> str:
    """``sidecar_path`` on text, as ``Path.stem`` cuts a name: status asks it of every run, and a Path costs more than the stat."""
    folder, slash, name = result_path.rpartition("/")
    dot = name.rfind(".")
    stem = name[:dot] if 0 < dot < len(name) - 1 else name
    return f"{folder}{slash}{stem}{SIDECAR_SUFFIX}"


def read_sidecar(path: Path) -> dict[str, str | None]:
    """The field map a sidecar at ``path`` (``sidecar_path``) gives, {} when there is none.

    Read and parsed within configs/limits.yaml's YAML bounds, as every other
    YAML input is: it sits beside a result others write, and the watcher reads it too.
    """
    try:
        text = read_text(path)  # most runs have none: one failing stat
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as exc:
        raise FieldMapError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except NotReadyYet as exc:  # not a regular file, or over the size bound
        raise FieldMapError(str(exc)) from None
    except OSError as exc:
        raise FieldMapError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        document = parse_yaml(text, str(path))
    except YamlRefused as exc:
        raise FieldMapError(str(exc)) from None
    data, root = document.data, document.root
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FieldMapError(f"{path}: must be a mapping of field -> name in the result, got {type(data).__name__}")
    for key_node, value_node in root.value if isinstance(root, yaml.MappingNode) else ():
        name, value = key_node.value, data.get(key_node.value)
        if name not in FieldMap.names():
            raise FieldMapError(f"{path}:{key_node.start_mark.line + 1}: {name}: unknown field"
                                f" (known: {', '.join(FieldMap.names())})")
        if value is not None and (not isinstance(value, str) or not value):
            raise FieldMapError(f"{path}:{value_node.start_mark.line + 1}: {name}: must be a field name or null,"
                                f" got {value!r}")
    return data
