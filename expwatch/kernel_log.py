"""Kernel OOM-killer evidence, read from the kernel log where permitted.

Containers and unprivileged users often cannot read it; then the answer
is "unknown" (None), never a guess.
"""

from __future__ import annotations

import re
import shutil
import subprocess

OOM_LINE = re.compile(r"Out of memory|oom-kill|Killed process \d+|oom_reaper")


def kernel_oom_lines(limit: int = 40) -> list[str] | None:
    exe = shutil.which("dmesg")
    if not exe:
        return None
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return [line for line in out.stdout.splitlines() if OOM_LINE.search(line)][-limit:]


def oom_killed(pids: list[int]) -> bool | None:
    """True if the kernel log says it OOM-killed one of ``pids``; None if unreadable."""
    lines = kernel_oom_lines(limit=500)
    if lines is None:
        return None
    wanted = {str(p) for p in pids if p}
    return any(m.group(1) in wanted for line in lines for m in [re.search(r"Killed process (\d+)", line)] if m)
