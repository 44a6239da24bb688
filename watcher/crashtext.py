"""What an exception's message says about its cause: HTTP status, provider error code, retry hint.

Only the structured forms the client libraries print are read, never a bare
number, so ``KeyError: 'item_429'`` or a timestamp ending in ``,429`` carry
no status. The forms and where each comes from:

- openai / anthropic (Stainless clients) and litellm: ``Error code: 429 - {...}``
  (openai-python ``src/openai/_exceptions.py`` APIStatusError, same in anthropic-sdk-python)
- google-genai: ``429 RESOURCE_EXHAUSTED. {...}`` (googleapis/python-genai ``google/genai/errors.py`` APIError)
- google-api-core: ``google.api_core.exceptions.ResourceExhausted: 429 Quota exceeded ...``
  (googleapis/python-api-core ``google/api_core/exceptions.py`` GoogleAPICallError.__str__)
- requests: ``429 Client Error: Too Many Requests for url: ...`` (psf/requests ``src/requests/models.py`` raise_for_status)
- httpx: ``Client error '429 Too Many Requests' for url '...'`` (encode/httpx ``httpx/_models.py`` raise_for_status)
- aiohttp: ``429, message='Too Many Requests', url=...`` (aio-libs/aiohttp ``aiohttp/client_exceptions.py`` ClientResponseError.__str__)
- urllib: ``HTTP Error 429: Too Many Requests`` (cpython ``Lib/urllib/error.py`` HTTPError.__str__)
- retry hints: openai's ``Please try again in 1.668s`` / ``6m0s``, Azure's ``Please retry after 86400 seconds``,
  a ``retry-after`` header echoed in the message, google's ``'retryDelay': '35s'``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STATUS_FORMS = (
    re.compile(r"Error code: ([1-5]\d\d)\b"),
    re.compile(r"^([1-5]\d\d) [A-Z][A-Z_]+\."),
    re.compile(r"^([1-5]\d\d) (?:Client|Server) Error: "),
    re.compile(r"(?:Client|Server) error '([1-5]\d\d) "),
    re.compile(r"^([1-5]\d\d), message="),
    re.compile(r"^HTTP Error ([1-5]\d\d): "),
)
# google-api-core prefixes every message with the status code and nothing else.
GOOGLE_API_CORE = re.compile(r"^([1-5]\d\d) ")
GENAI_STATUS = re.compile(r"^[1-5]\d\d ([A-Z][A-Z_]+)\.")
CODE = re.compile(r"""['"]code['"]:\s*['"]([\w.-]+)['"]""")
TYPE = re.compile(r"""['"]type['"]:\s*['"]([\w.-]+)['"]""")
GOOGLE_STATUS = re.compile(r"""['"]status['"]:\s*['"]([A-Z][A-Z_]+)['"]""")
HINTS = (
    re.compile(r"try again in (?:(?P<h>\d+)h)?(?:(?P<m>\d+)m(?!s))?(?:(?P<s>\d+(?:\.\d+)?)s)?(?:(?P<ms>\d+(?:\.\d+)?)ms)?", re.I),
    re.compile(r"retry after (?P<s>\d+(?:\.\d+)?) seconds?", re.I),
    re.compile(r"""retry-after['"]?\s*[:=]\s*['"]?(?P<s>\d+(?:\.\d+)?)""", re.I),
    re.compile(r"""retryDelay['"]?\s*:\s*['"](?P<s>\d+(?:\.\d+)?)s""", re.I),
)
# Paths of code that is not the user's: installed packages, the standard library, frozen modules.
NOT_USERS = re.compile(r"(?:[/\\](?:site|dist)-packages[/\\]|[/\\]lib[/\\]python\d(?:\.\d+)?[/\\]|^<frozen |^<string>$|[/\\]lib64[/\\]python\d)")


@dataclass(frozen=True)
class ParsedMessage:
    status: int | None = None
    error_code: str | None = None
    error_type: str | None = None
    retry_after_s: float | None = None


def status_of(type_: str, message: str) -> int | None:
    for form in STATUS_FORMS:
        if m := form.search(message):
            return int(m.group(1))
    if type_.startswith("google.api_core.") and (m := GOOGLE_API_CORE.match(message)):
        return int(m.group(1))
    return None


def retry_hint(message: str) -> float | None:
    best = None
    for form in HINTS:
        for m in form.finditer(message):
            parts = m.groupdict()
            seconds = float(parts.get("h") or 0) * 3600 + float(parts.get("m") or 0) * 60 + float(parts.get("s") or 0)
            seconds += float(parts.get("ms") or 0) / 1000
            if seconds > 0 and (best is None or seconds > best):
                best = seconds
    return best


def parse_message(chain) -> ParsedMessage:
    """Status, code, type and hint of a chain, read from the outermost exception inwards.

    A wrapper (tenacity's ``RetryError``, litellm's re-raise) often says less
    than the exception it wraps, so the first exception that says something wins.
    """
    status = code = type_ = None
    hint = None
    for exc_type, message in reversed(list(chain)):
        message = message or ""
        if status is None:
            status = status_of(exc_type, message)
        if code is None:
            m = CODE.search(message) or GENAI_STATUS.match(message) or GOOGLE_STATUS.search(message)
            code = m.group(1) if m else None
        if type_ is None:
            # anthropic wraps every error in {'type': 'error', 'error': {'type': 'rate_limit_error', ...}}.
            type_ = next((t for t in TYPE.findall(message) if t != "error"), None)
        found = retry_hint(message)
        if found is not None and (hint is None or found > hint):
            hint = found
    return ParsedMessage(status, code, type_, hint)


def frame_is_users(path: str) -> bool:
    return not NOT_USERS.search(path)
