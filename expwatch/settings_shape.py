"""Check a user's settings file against the shape of the shipped settings, before anything reads it.

The shipped ``configs/settings.yaml`` and ``profiles.yaml`` are the schema:
each value the user gives must have the kind of the shipped value at the
same place (a mapping where a mapping is, a non-negative number where a
number is, ...), so that ``audit: null`` or ``profile: {}`` is one error
naming the file, line and field, not a traceback from whichever command
first reads ``audit.max_bytes``. Keys the shipped files do not have are left
alone (a newer file read by an older expwatch), except inside the maps whose
keys are the user's own names (profiles, their env, worker backends), where
every entry takes the shape of the shipped entries.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

# Maps whose keys the user names; "*" is any one key.
OPEN_MAPS = ("profiles", "profiles.*.env", "workers.backends")
REQUIRED = {"profiles.*": ("backend",)}
# Word settings where YAML 1.1 reads a bare `off`/`no` as false: the reader takes false for "off".
FALSE_IS_OFF = ("discover",)


class SettingsShapeError(Exception):
    """A value of the wrong kind: ``path`` is the dotted field."""

    def __init__(self, path: list[str], message: str):
        super().__init__(message)
        self.path = path


def _is_open(path: list[str]) -> bool:
    return any(len(p.split(".")) == len(path) and all(a in ("*", b) for a, b in zip(p.split("."), path)) for p in OPEN_MAPS)


def _entry_template(entries: dict[str, Any]) -> Any:
    """What every entry of an open map looks like: the union of the shipped entries."""
    merged: Any = None
    for value in entries.values():
        if isinstance(value, dict):
            merged = {**(merged if isinstance(merged, dict) else {}), **value}
            for key, inner in value.items():
                if isinstance(inner, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **inner}
        elif merged is None:
            merged = value
    return merged


def _kind(template: Any) -> str:
    if isinstance(template, dict):
        return "a mapping"
    if isinstance(template, list):
        return "a list"
    if isinstance(template, bool):
        return "true or false"
    if isinstance(template, (int, float)):
        return "a non-negative number"
    return "a string" if isinstance(template, str) else "a value"


def _fits(value: Any, template: Any) -> bool:
    if isinstance(template, dict):
        return isinstance(value, dict)
    if isinstance(template, list):
        return isinstance(value, list) and all(v is None or isinstance(v, (str, int, float, bool)) for v in value)
    if isinstance(template, bool):
        return isinstance(value, bool)
    if isinstance(template, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if isinstance(template, str):
        return isinstance(value, str)
    return value is None or isinstance(value, (str, int, float, bool))


def _check(value: Any, template: Any, path: list[str]) -> None:
    if value is False and ".".join(path) in FALSE_IS_OFF:
        return
    if not _fits(value, template):
        raise SettingsShapeError(path, f"field '{'.'.join(path)}' must be {_kind(template)}, got {value!r:.60}")
    if not isinstance(value, dict):
        return
    if _is_open(path):
        entry = _entry_template(template) if isinstance(template, dict) else None
        required = REQUIRED.get(".".join([*path, "*"]), ())
        for key, inner in value.items():
            where = [*path, str(key)]
            _check(inner, entry if entry is not None else "", where)
            # A shipped entry the user only adjusts keeps its own values; a new one needs them all.
            missing = [k for k in required if isinstance(inner, dict) and k not in inner and key not in template]
            if missing:
                raise SettingsShapeError(where, f"field '{'.'.join(where)}': '{missing[0]}' is missing")
        return
    for key, inner in value.items():
        if isinstance(template, dict) and key in template:
            _check(inner, template[key], [*path, str(key)])


def _line(path_on_disk: Path, fields: list[str]) -> int | None:
    try:
        node = yaml.compose(path_on_disk.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    for key in fields:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if str(k.value) == key), None)
        if match is None:
            break
        node = match[1]
    return node.start_mark.line + 1 if node is not None else None


def check_settings(user: dict[str, Any], shipped: dict[str, Any], source: Path) -> str | None:
    """None if ``user`` fits ``shipped``; else the one-line error, ``file:line: field ...``."""
    try:
        _check(user, shipped, [])
        profiles = {**(shipped.get("profiles") or {}), **(user.get("profiles") or {})}
        if "profile" in user and user["profile"] not in profiles:
            raise SettingsShapeError(["profile"], f"field 'profile': unknown profile {user['profile']!r} (known: {', '.join(sorted(profiles))})")
    except SettingsShapeError as exc:
        line = _line(source, exc.path)
        return f"{source}{f':{line}' if line else ''}: {exc}"
    return None
