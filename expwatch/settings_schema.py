"""Check a user's settings file against ``configs/settings.schema.json`` before anything reads it.

One JSON Schema (``additionalProperties: false`` wherever the keys are
expwatch's own) says what a settings file may hold, so ``watch: {setle_s: 1}``
is refused as an unknown field with a did-you-mean instead of being ignored,
and ``audit: null`` is one error naming the file, line and field instead of a
traceback from whichever command first reads ``audit.max_bytes``. The maps
whose keys are the user's own names (profiles, their env, worker backends)
take any key, each entry the shape of a shipped one.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from expwatch.bounded_yaml import line_at
from expwatch.rules.patterns import PatternError, compile_pattern
from expwatch.schema_errors import unknown_key

# A new profile must say which backend it is; a shipped one the user only adjusts keeps its own.
REQUIRED_OF_NEW_PROFILE = ("backend",)


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((resources.files("expwatch.configs") / "settings.schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _message(err: jsonschema.ValidationError) -> tuple[list[Any], str]:
    if refused := unknown_key(err):
        return refused.path, refused.message(name=".".join(map(str, refused.path)))
    path = list(err.absolute_path)
    field = ".".join(map(str, path))
    if err.validator == "enum":
        choices = ", ".join(str(c) for c in err.validator_value if c is not False)
        return path, f"field '{field}' must be one of {choices}, got {err.instance!r:.60}"
    if err.validator == "type":
        kinds = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        words = {"object": "a mapping", "array": "a list", "boolean": "true or false", "number": "a number",
                 "integer": "a whole number", "string": "a string", "null": "null"}
        return path, f"field '{field}' must be {' or '.join(words.get(k, k) for k in kinds)}, got {err.instance!r:.60}"
    if err.validator in ("minimum", "exclusiveMinimum"):
        return path, f"field '{field}' must be at least {err.validator_value}, got {err.instance!r:.60}"
    return path, f"field '{field or 'top level'}': {err.message}"


def check_settings(user: dict[str, Any], root: yaml.Node | None, shipped: dict[str, Any], source: Path) -> str | None:
    """None if the user's settings are valid; else the one-line error ``file:line: field ...``."""
    errors = sorted(_validator().iter_errors(user), key=lambda e: (-len(list(e.absolute_path)), str(list(e.absolute_path))))
    if errors:
        path, message = _message(errors[0])
    else:
        path, message = _semantic(user, shipped)
        if not message:
            return None
    line = line_at(root, path)
    return f"{source}{f':{line}' if line else ''}: {message}"


def _semantic(user: dict[str, Any], shipped: dict[str, Any]) -> tuple[list[Any], str]:
    """What a schema cannot say: a new profile names its backend, the default profile exists, a pattern runs."""
    shipped_profiles = shipped.get("profiles") or {}
    for name, spec in (user.get("profiles") or {}).items():
        missing = [k for k in REQUIRED_OF_NEW_PROFILE if name not in shipped_profiles and k not in spec]
        if missing:
            return ["profiles", name], f"field 'profiles.{name}': '{missing[0]}' is missing"
    profiles = {**shipped_profiles, **(user.get("profiles") or {})}
    if "profile" in user and user["profile"] not in profiles:
        return ["profile"], f"field 'profile': unknown profile {user['profile']!r} (known: {', '.join(sorted(profiles))})"
    item = (user.get("crash") or {}).get("item_pattern")
    if item is not None:
        try:
            groups = compile_pattern(item).groups
        except PatternError as exc:
            return ["crash", "item_pattern"], f"field 'crash.item_pattern': {exc}"
        if groups < 1:
            return ["crash", "item_pattern"], "field 'crash.item_pattern': needs a group, (...), around the item's name"
    return [], ""
