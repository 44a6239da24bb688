"""Keep secrets out of everything expwatch writes down.

Runs are launched with API keys and hub tokens in their environment, and
their logs sometimes echo request headers. The audit trail, ``status`` output
and diagnosis bundles are meant to be pasted into issues and chats, so they
must be safe to share by construction: secrets are replaced before anything
is rendered, not filtered when someone remembers to.

Name matching is deliberately greedy (``AUTHOR`` or ``tokens_per_second``
are masked too): a masked harmless value costs a glance, a leaked key costs a
rotation.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")

# Fields that hold a whole environment: every secret-looking variable in them is masked.
ENV_FIELDS = frozenset({"env", "env_overrides", "environment"})

# Fields that carry free text from a run (log lines, error messages): tokens inside are masked.
TEXT_FIELDS = frozenset({"line", "lines", "text", "detail", "error"})

_TOKEN_PATTERNS = (
    # "Authorization: Bearer <token>" keeps the scheme so the line still reads.
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + MASK),
    # OpenAI / Anthropic style (sk-..., sk-proj-..., sk-ant-...).
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), MASK),
    # Hugging Face hub tokens, the most common secret in an eval run's log.
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), MASK),
)

# "HF_TOKEN=abc" echoed by a launcher script; the name decides, as for env dicts.
_ASSIGNMENT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)=([^\s;,&|'\"]+)")


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


def redact_env(env: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``env`` with secret-named values masked, descending into nested dicts.

    Nested dicts occur when environments are grouped (per run, per backend).
    The input is never modified: callers often pass the live ``os.environ`` copy
    they are about to launch with.
    """
    redacted: dict[str, Any] = {}
    for name, value in env.items():
        if is_secret_name(str(name)):
            redacted[name] = MASK
        elif isinstance(value, dict):
            redacted[name] = redact_env(value)
        else:
            redacted[name] = value
    return redacted


def redact_text(text: str) -> str:
    """Mask token-looking substrings in free text, leaving the rest readable."""
    for pattern, replacement in _TOKEN_PATTERNS:
        text = pattern.sub(replacement, text)
    return _ASSIGNMENT.sub(
        lambda m: f"{m.group(1)}={MASK}" if is_secret_name(m.group(1)) else m.group(0), text
    )


def _scrub(key: str | None, value: Any) -> Any:
    if key in ENV_FIELDS and isinstance(value, dict):
        return redact_env(value)
    if key in TEXT_FIELDS and isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _scrub(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        # Items inherit the field name, so ``lines: [...]`` is scrubbed like ``line``.
        return [_scrub(key, item) for item in value]
    return value


def redact_secrets(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask secret-named top-level fields, env dicts and tokens in text.

    Env and text fields are found at any depth, because evidence arrives
    nested (``evidence={"lines": [...]}``) and so do launch plans.
    """
    return {
        key: MASK if is_secret_name(key) else _scrub(key, value)
        for key, value in event_dict.items()
    }
