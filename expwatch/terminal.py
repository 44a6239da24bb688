"""The one gate between untrusted text and a terminal.

Log lines, run results (``null_reason``) and anything derived from them are
written by the run, not by us. A terminal honours escape sequences in them:
C0 ``ESC [`` and ``ESC ]``, and the one-byte C1 forms (U+009B CSI, U+009D OSC)
that ``str.isprintable`` rejects but ``json.dumps(ensure_ascii=False)`` passes,
can move the cursor, retitle the window, hide lines or fake output; bidi
overrides (U+202E) reorder what is shown. Every command that prints such text
(plain output, ``audit``, ``status``, ``validate``, ``rules test``, the live
view) passes it through ``terminal_text``: secrets are redacted, and every
non-printable character is shown as a visible ``\\xNN`` / ``\\uNNNN`` escape,
so a person still sees that it was there.
"""

from __future__ import annotations

from expwatch.redact import redact_text


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def safe_chars(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every non-printable character escaped (newlines kept if asked)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or (keep_newlines and ch == "\n") else _escaped(ch) for ch in text)


def terminal_text(text: object, keep_newlines: bool = False) -> str:
    """What may be printed of ``text``: secrets masked, control characters escaped."""
    return safe_chars(redact_text(str(text)), keep_newlines)
