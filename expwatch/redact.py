"""Keep secrets out of everything expwatch writes down or prints: the one redaction step.

Runs are launched with API keys and hub tokens in their environment and argv,
and their logs echo request headers. The audit trail, the state store's
incident evidence, the HTML report, diagnosis bundles, notification
environments and terminal output are meant to be pasted into issues and chats,
so each of them passes every record through ``redact_record`` (or a string
through ``redact_text``) right before it is written: secrets are replaced by
construction, not filtered when someone remembers to.

What counts as a secret is data (``configs/redaction.yaml``). Name matching is
deliberately greedy (``AUTHOR`` or ``monkey=3`` are masked too): a masked
harmless value costs a glance, a leaked key costs a rotation. The patterns run
on RE2, so a 1 MiB log line costs linear time, never a backtracking stall.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import re2

from expwatch.settings import shipped_yaml

# Fields that hold a whole environment: every secret-looking variable in them is masked.
ENV_FIELDS = frozenset({"env", "env_overrides", "environment"})
CACHED_CHARS, CACHED_ENTRIES = 256, 4096  # redactions remembered: short strings only, emptied when full


def _remember(cache: dict, key: str, value: Any) -> None:
    if len(cache) >= CACHED_ENTRIES:
        cache.clear()
    cache[key] = value


def _rx(pattern: str) -> "re2._Regexp":
    options = re2.Options()
    options.log_errors = False  # a bad shipped pattern raises; RE2's own stderr chatter would only duplicate it
    return re2.compile(pattern, options)


@dataclass(frozen=True)
class Redactor:
    """The compiled form of ``configs/redaction.yaml``."""

    mask: str
    name_parts: tuple[str, ...]
    tokens: "re2._Regexp"
    schemes: "re2._Regexp"
    colon_form: "re2._Regexp"
    assignment: "re2._Regexp"
    flag: "re2._Regexp"
    flag_value: "re2._Regexp"
    # A superset of what every pass below can match, searched first: most strings hold no secret,
    # and one search in RE2's C++ costs a fifth of five (each call re-encodes the text).
    any_secret: "re2._Regexp"
    # What was found for recent names and short strings: an audit record repeats its run, rule,
    # incident and digest in every record, and redaction is a pure function of the text.
    _names: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)
    _texts: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> "Redactor":
        schemes = "|".join(data["auth_schemes"])
        endings = "|".join(re2.escape(e) for e in data["colon_name_endings"])
        flag = data["secret_flag"]
        tokens = r"\b(?:" + "|".join(data["token_patterns"]) + ")"
        parts = "|".join(re2.escape(p) for p in data["secret_name_parts"])
        any_secret = "|".join((
            tokens,
            rf"(?i:\b(?:{schemes})\s+[A-Za-z0-9._~+/=-])",
            rf"(?i:\b[A-Za-z0-9_.-]*(?:{endings})[\"']?\s*:)",
            rf"(?i:(?:^|\s){flag}\s+[^\s-])",
            rf"\b[A-Za-z0-9_]*(?i:{parts})[A-Za-z0-9_]*=[^\s;,&|'\"]",
        ))
        return cls(
            mask=str(data["mask"]),
            name_parts=tuple(p.upper() for p in data["secret_name_parts"]),
            tokens=_rx(tokens),
            schemes=_rx(rf"(?i)\b({schemes})(\s+)[A-Za-z0-9._~+/=-]+"),
            colon_form=_rx(rf"(?i)\b([A-Za-z0-9_.-]*(?:{endings}))([\"']?\s*:\s*[\"']?)((?:(?:{schemes})\s+)?)([^\s\"',;}}]+)"),
            assignment=_rx(r"\b([A-Za-z_][A-Za-z0-9_]*)=([^\s;,&|'\"]+)"),
            flag=_rx(rf"(?i)^{flag}$"),
            flag_value=_rx(rf"(?i)(^|\s)({flag})(\s+)([^\s-]\S*)"),
            any_secret=_rx(any_secret),
        )

    def is_secret_name(self, name: str) -> bool:
        known = self._names.get(name)
        if known is None:
            upper = name.upper()
            known = any(part in upper for part in self.name_parts)
            _remember(self._names, name, known)
        return known

    def text(self, text: str) -> str:
        known = self._texts.get(text)
        if known is not None:
            return known
        try:
            masked = self._text(text)
        except UnicodeEncodeError:  # lone surrogates (JSON "\\ud800" escapes): RE2 matches UTF-8 only
            masked = self._text(text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
        if len(text) <= CACHED_CHARS:
            _remember(self._texts, text, masked)
        return masked

    def _text(self, text: str) -> str:
        return self.passes(text) if self.any_secret.search(text) else text

    def passes(self, text: str) -> str:
        """Every masking pass over ``text``, without the ``any_secret`` shortcut (tests hold the two equal)."""
        mask = self.mask

        def keep_name(m: Any) -> str:
            return m.group(1) + m.group(2) + m.group(3) + mask

        passes = (
            (self.tokens, mask),
            (self.schemes, lambda m: m.group(1) + m.group(2) + mask),
            (self.colon_form, keep_name),
            (self.flag_value, keep_name),
            (self.assignment, lambda m: f"{m.group(1)}={mask}" if self.is_secret_name(m.group(1)) else m.group(0)),
        )
        for rx, replacement in passes:
            # search() runs in RE2's C++; sub() is the wrapper's Python loop, worth paying only on a hit.
            if rx.search(text):
                text = rx.sub(replacement, text)
        return text

    def argv(self, argv: list[Any]) -> list[Any]:
        out: list[Any] = []
        after_flag = False
        for arg in argv:
            if not isinstance(arg, str):
                out.append(self.value(None, arg))
                after_flag = False
                continue
            out.append(self.mask if after_flag else self.text(arg))
            after_flag = not after_flag and bool(self.flag.search(arg))
        return out

    def env(self, env: dict[Any, Any]) -> dict[Any, Any]:
        return {k: self.mask if self.is_secret_name(str(k)) else self.value(k, v) for k, v in env.items()}

    def value(self, key: Any, value: Any) -> Any:
        if key is not None and isinstance(value, (str, int, float)) and not isinstance(value, bool) and self.is_secret_name(str(key)):
            return self.mask
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return self.env(value) if key in ENV_FIELDS else {k: self.value(k, v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return self.argv(list(value))
        return value


@lru_cache(maxsize=1)
def redactor() -> Redactor:
    return Redactor.from_config(shipped_yaml("redaction.yaml"))


def is_secret_name(name: str) -> bool:
    return redactor().is_secret_name(name)


def redact_text(text: str) -> str:
    """Mask secrets in free text (a log line, an error, a joined command), leaving the rest readable."""
    return redactor().text(text)


def redact_argv(argv: list[Any]) -> list[Any]:
    """A command with the values of secret flags (``--api-key X``, ``--token=X``) and tokens masked."""
    return redactor().argv(argv)


def redact_env(env: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``env`` with secret-named values masked; never modifies the input (often the live environment)."""
    return redactor().env(env)


def redact_record(record: Any) -> Any:
    """A copy of a record (dicts, lists, strings at any depth) with every secret masked.

    Secret-named fields are masked whole, env dicts by variable name, lists as
    argv, and every other string as text: evidence arrives nested
    (``evidence={"lines": [...]}``) and so do launch plans.
    """
    return redactor().value(None, record)


def redact_secrets(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the audit trail's pass through ``redact_record``."""
    value = redactor().value
    return {key: value(key, item) for key, item in event_dict.items()}
