"""What a user's YAML file says wrong, in one wording: the did-you-mean of settings and rules alike.

The settings check (expwatch/settings_schema.py) and the rules loader
(rules/loader.py) both validate a file someone has just edited against a
JSON Schema with ``additionalProperties: false``. A misspelt key has to read
the same in both, ``unknown field 'KEY' (did you mean 'NAME'?)``, and a name
that is close to none of the known ones lists them instead, so that whoever
fixed one kind of file recognises the other's error. This module sits below
both (the rules stage may import core modules, never the reverse), next to the
line lookup in expwatch/bounded_yaml.py that places the message.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterable

import jsonschema


def did_you_mean(word: Any, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, else `` (known: a, b)``; empty when nothing is known."""
    known = [str(name) for name in known]
    hint = difflib.get_close_matches(str(word), known, n=1)
    if hint:
        return f" (did you mean '{hint[0]}'?)"
    return f" (known: {', '.join(known)})" if known else ""


@dataclass(frozen=True)
class UnknownKey:
    """A key the schema refused and the names it allows in that mapping."""

    path: list[Any]  # down to the refused key itself, so the error's line is the key's own
    known: list[str]

    @property
    def key(self) -> str:
        return str(self.path[-1])

    def message(self, noun: str = "field", name: str | None = None) -> str:
        """``unknown field 'NAME' (did you mean 'x'?)``; NAME is the key unless the caller gives more of its path."""
        return f"unknown {noun} '{name or self.key}'{did_you_mean(self.key, self.known)}"


def unknown_key(err: jsonschema.ValidationError) -> UnknownKey | None:
    """The first key (in sorted order, so the message is stable) that an ``additionalProperties: false`` refused."""
    if err.validator != "additionalProperties" or not isinstance(err.instance, dict):
        return None
    known = list(err.schema.get("properties", {}))
    extra = sorted(set(err.instance) - set(known), key=str)
    return UnknownKey([*err.absolute_path, extra[0]], known) if extra else None
