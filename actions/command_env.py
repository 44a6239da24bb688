"""Text from log lines and run files, made safe to hand to execve.

Incident fields reach user commands as environment variables and argv
placeholders. execve cannot carry a NUL byte (Python raises ``ValueError:
embedded null byte``), and log text is untrusted, so a single NUL in a line
would otherwise make the command impossible to start.
"""

from __future__ import annotations

from typing import Mapping


def exec_text(value: str) -> str:
    """``value`` with each NUL byte written as the two characters ``\\0``."""
    return value.replace("\x00", "\\0")


def exec_env(env: Mapping[str, str]) -> dict[str, str]:
    return {exec_text(k): exec_text(v) for k, v in env.items()}
