"""Typed events: the only thing the watcher hands to the rules stage.

Every source (the file observer, process-exit waiter, timers, health
probes) puts one of these on the single queue that the engine thread
drains; the log and progress readers, which the engine loop calls on a file
event, hand it ``LogLine`` and ``Progress``. They are frozen so nothing downstream can edit
evidence after the fact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FileChanged:
    """inotify or watchdog saw a create/modify/move/delete under a watched directory.

    ``appended``: every event was a write, so the path still names the file
    a reader has open (inotify says so; the polling observer never does).
    """

    path: Path
    appended: bool = False


@dataclass(frozen=True)
class LogLine:
    """One complete line of a run's log (tail semantics)."""

    run: str
    path: str
    offset: int
    text: str
    replay: bool = False  # history read on first sight: rebuilds counters, triggers nothing


@dataclass(frozen=True)
class Progress:
    """What the run's result/checkpoint files say now."""

    run: str
    done: int
    expected: int | None
    correct: int
    null_count: int
    null_reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessExit:
    """The run's process (or SLURM job) is gone; returncode/signal when they can be known."""

    run: str
    pid: int | None
    returncode: int | None = None
    signal: int | None = None
    job_id: str | None = None  # SLURM runs: which job ended, how, and where
    job_state: str | None = None
    node: str | None = None
    oom_killed: bool | None = None  # the kernel log names the pid as OOM-killed; None: not asked or unreadable
    oom_unreadable: bool = False  # asked, and the kernel log could not be read


@dataclass(frozen=True)
class Deadline:
    """A timer set by the engine thread came due (silence, settle, wait)."""

    run: str
    purpose: str
    token: int


@dataclass(frozen=True)
class ProbeResult:
    """One health-probe attempt for a backend profile."""

    profile: str
    url: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Shutdown:
    """Ask the engine thread to stop (SIGINT/SIGTERM)."""

    reason: str = "signal"


EVIDENCE_LINES = 40  # lines of a crash carried in incident evidence and audit records


@dataclass(frozen=True)
class Frame:
    """One ``File "x", line N, in f`` of a traceback."""

    file: str
    line: int
    function: str

    def short(self) -> str:
        return f"{Path(self.file).name}:{self.line} {self.function}".rstrip()


@dataclass(frozen=True)
class Crash:
    """One crash read from a run's log: a whole traceback or one fatal line (watcher/crash.py).

    ``chain`` holds (qualified type, message) pairs, outermost last: the
    exception that ended the program is ``chain[-1]``. Non-Python crashes
    carry a pseudo type (``slurm.OutOfMemory``, ``signal.SIGKILL``,
    ``faulthandler.FatalError``) so rules match them the same way.
    """

    kind: str  # python | faulthandler | slurm | shell
    chain: tuple[tuple[str, str], ...]
    status: int | None = None  # HTTP status the message carries
    error_code: str | None = None  # the provider's error code (rate_limit_exceeded, RESOURCE_EXHAUSTED, ...)
    error_type: str | None = None  # the provider's error type (insufficient_quota, rate_limit_error, ...)
    retry_after_s: float | None = None  # what the server asked us to wait
    frame: Frame | None = None  # innermost frame in the user's own code
    lines: tuple[str, ...] = ()
    lines_dropped: int = 0  # lines beyond ``crash.max_lines``, counted, not kept
    offset: int = -1  # byte offset of the crash's first line in the log
    end_offset: int = -1  # byte offset of its last line
    before: tuple[str, ...] = ()  # the last few lines the script printed before it
    followed: bool = False  # a line that is not its own came after it: its writer went on writing

    @property
    def final(self) -> tuple[str, str]:
        return self.chain[-1]

    def cause(self) -> str:
        """One line an operator reads: ``openai.RateLimitError 429 rate_limit_exceeded at run_eval.py:188 call_model``."""
        parts = [self.final[0]]
        if self.status is not None:
            parts.append(str(self.status))
        code = self.error_code or self.error_type
        if code:
            parts.append(code)
        if self.kind != "python" or len(parts) == 1:
            message = self.final[1].splitlines()[0] if self.final[1] else ""
            if message and not code:
                parts.append(message[:80])
        if self.frame is not None:
            parts.append(f"at {self.frame.short()}")
        return " ".join(parts)

    def to_json(self) -> dict:
        return {
            "kind": self.kind, "chain": [list(p) for p in self.chain], "status": self.status, "error_code": self.error_code,
            "error_type": self.error_type, "retry_after_s": self.retry_after_s,
            "frame": {"file": self.frame.file, "line": self.frame.line, "function": self.frame.function} if self.frame else None,
            # The tail is enough for evidence; the audit gets this once per matched rule.
            "lines": list(self.lines[-EVIDENCE_LINES:]), "lines_dropped": self.lines_dropped + max(0, len(self.lines) - EVIDENCE_LINES), "offset": self.offset, "end_offset": self.end_offset, "before": list(self.before),
            "followed": self.followed, "cause": self.cause(),
        }
