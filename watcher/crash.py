"""Assemble crashes from a run's log lines: one traceback (or fatal line) → one ``Crash``.

A crash's cause is its final exception and the chain behind it, not the
number of lines that mention 429. Python prints a traceback as many lines,
possibly chained (``The above exception was the direct cause ...`` /
``During handling of the above exception ...``), possibly an
``ExceptionGroup`` drawn with ``| `` borders, and other threads keep
logging in between. ``CrashAssembler`` is fed complete lines in order (as
the ``LogTailer`` gives them) and emits one ``Crash`` when the traceback
ends: at the first line that cannot belong to it, or on ``flush()``, which
the watcher calls when the process has exited (nothing more will come).

Bounded by design: lines kept per crash, chain entries and message length
have limits (``CrashLimits``, from the ``crash`` settings), so a runaway
traceback costs a fixed amount of memory. Pure: no files, no rules, no audit.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

from expwatch.watcher.crashtext import frame_is_users, parse_message
from expwatch.watcher.events import Crash, Frame

HEADER = re.compile(r"^(?P<prefix>[\s|+]*?)(?:\+ )?(?:Exception Group )?Traceback \(most recent call last\):\s*$")
FRAME = re.compile(r'^[\s|]*File "(?P<file>[^"]+)", line (?P<line>\d+)(?:, in (?P<func>.+))?\s*$')
CHAIN = re.compile(r"^[\s|]*(The above exception was the direct cause of the following exception:|"
                   r"During handling of the above exception, another exception occurred:)\s*$")
GROUP_BORDER = re.compile(r"^[\s|]*\+[-+]+(?: \d+ -+| \.\.\. .*)?\s*$")
# ``pkg.mod.Type: message`` or a bare ``Type``; the type is dotted identifiers.
EXC_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)(?::(?: (?P<msg>.*))?)?$")
# ExceptionGroup borders: "  | " per nesting level, and the one space after the last bar.
GROUP_PREFIX = re.compile(r"^(?:\s*\|)* ?(?<=\| )|^")
# A line another thread logged: a timestamp or a logging level word starts it.
LOG_LINE = re.compile(r"^\s*(?:\[?\d{4}-\d{2}-\d{2}[ T]\d|\d{2}:\d{2}:\d{2}|(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\b)")
LEVEL_WORDS = frozenset({"DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL", "NOTE", "Note"})

FAULTHANDLER = re.compile(r"^Fatal Python error: (?P<msg>.+)$")
FAULT_BODY = re.compile(r'^(?:\s*$|(?:Current )?[Tt]hread 0x[0-9a-f]+ .*\(most recent call first\):|Stack \(most recent call first\):|'
                        r'\s+File ".*", line \d+ in |\s+<no Python frame>|Extension modules: |Python runtime state: |\s+\.\.\.)')
FAULT_FRAME = re.compile(r'^\s+File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>.+)$')
# Single lines that end a job or a process, each with the pseudo exception type rules match on.
# The SLURM forms are slurmstepd's (src/slurmd/slurmstepd/req.c, task/cgroup oom notice);
# the shell forms are bash's job-status words (bash jobs.c / siglist.c).
FATAL_LINES: tuple[tuple[re.Pattern, str, str], ...] = (
    (re.compile(r"^slurmstepd(?:-[\w.-]+)?: error: .*\b(?:Detected \d+ )?oom[-_]kill event"), "slurm", "slurm.OutOfMemory"),
    (re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+ DUE TO TIME LIMIT"), "slurm", "slurm.TimeLimit"),
    (re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+ DUE TO PREEMPTION"), "slurm", "slurm.Preempted"),
    (re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+ DUE TO NODE FAILURE"), "slurm", "slurm.NodeFailure"),
    (re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+(?: DUE TO [A-Z ]+?)? \*\*\*"), "slurm", "slurm.Cancelled"),
    (re.compile(r"^(?:.*: line \d+: +\d+ )?Killed(?:\s{2,}.*)?$"), "shell", "signal.SIGKILL"),
    (re.compile(r"^(?:.*: line \d+: +\d+ )?Segmentation fault(?: \(core dumped\))?(?:\s{2,}.*)?$"), "shell", "signal.SIGSEGV"),
    (re.compile(r"^(?:.*: line \d+: +\d+ )?Aborted(?: \(core dumped\))?(?:\s{2,}.*)?$"), "shell", "signal.SIGABRT"),
)


# Every crash starts with one of these words: most log lines are skipped by this one search.
STARTS = re.compile(r"Traceback \(|Fatal Python error|slurmstepd|\*\*\* (?:JOB|STEP)|Killed|Segmentation fault|Aborted")


@dataclass(frozen=True)
class CrashLimits:
    """How much of one crash is kept (the ``crash`` section of the settings)."""

    max_lines: int = 400  # lines kept per crash; the rest are counted, not kept
    max_chain: int = 32  # exceptions kept per crash (groups can hold thousands)
    max_message_chars: int = 4000
    message_lines: int = 8  # continuation lines a multi-line exception message may have
    context_lines: int = 5  # non-crash lines remembered before a crash (what the script said last)

    @classmethod
    def from_settings(cls, crash: dict) -> "CrashLimits":
        known = {k: int(crash[k]) for k in ("max_lines", "max_chain", "max_message_chars", "message_lines", "context_lines") if k in crash}
        return cls(**known)


@dataclass
class _Entry:
    type: str
    message: str
    depth: int  # 0: a top-level section; >0: inside an ExceptionGroup
    frames: list[Frame] = field(default_factory=list)


class _Python:
    """A Python traceback being read: sections, frames, exception lines."""

    def __init__(self, offset: int, limits: CrashLimits):
        self.offset, self.end, self.limits = offset, offset, limits
        self.lines: list[str] = []
        self.dropped = 0
        self.entries: list[_Entry] = []
        self.frames: list[Frame] = []  # frames of the section being read
        self.state = "frames"  # frames | message | between | chained (after "The above exception ...")
        self.ignored = 0  # other output since the last line of ours
        self.message_left = 0

    def keep(self, text: str) -> None:
        self.end, self.ignored = self.at, 0
        if len(self.lines) < self.limits.max_lines:
            self.lines.append(text)
        else:
            self.dropped += 1

    def feed(self, text: str, offset: int) -> bool:
        """Take the line if it belongs to this traceback; False means the traceback ended before it."""
        self.at = offset
        if HEADER.match(text):
            self.frames, self.state = [], "frames"
            self.keep(text)
            return True
        if CHAIN.match(text):
            self.state = "chained"  # another section certainly follows
            self.keep(text)
            return True
        if GROUP_BORDER.match(text):
            self.state = "between"
            self.keep(text)
            return True
        if m := FRAME.match(text):
            self.frames.append(Frame(m["file"], int(m["line"]), (m["func"] or "").strip()))
            self.state = "frames"
            self.keep(text)
            return True
        if not text.strip():
            if self.state == "message":
                self.state = "between"  # a blank line after an exception: a chain may follow
            self.keep(text)
            return True
        if LOG_LINE.match(text):
            if self.state in ("message", "between", "chained") and self.entries:
                return False
            return self._other_output()
        prefix = GROUP_PREFIX.match(text).group(0)
        body = text[len(prefix):]
        indented = body[:1] in (" ", "\t")
        if self.state == "frames" and indented and self.frames:
            self.keep(text)  # source line or ^^^^ markers under a frame
            return True
        m = EXC_LINE.match(body)
        if m and not indented and self._is_exception(m):
            # Groups draw members one indent deeper: "  | " is the group itself, "    | " its members.
            pipe = prefix.find("|")
            depth = max(0, pipe // 2 - 1) if pipe >= 0 else 0
            msg = (m["msg"] or "")[: self.limits.max_message_chars]
            if len(self.entries) < self.limits.max_chain:
                self.entries.append(_Entry(m["type"], msg, depth, self.frames))
            self.frames, self.state, self.message_left = [], "message", self.limits.message_lines
            self.keep(text)
            return True
        if self.state == "message" and self.message_left > 0 and self.entries:
            self.message_left -= 1
            entry = self.entries[-1]
            room = self.limits.max_message_chars - len(entry.message)
            if room > 0:
                entry.message = (entry.message + "\n" + text.strip("| "))[: self.limits.max_message_chars]
            self.keep(text)
            return True
        if self.state == "frames":
            return self._other_output()
        return False

    @property
    def unfinished(self) -> bool:
        """Python is certainly not done printing it: inside a section's frames, or right after a chain line."""
        return self.state in ("frames", "chained")

    def _other_output(self) -> bool:
        """Another thread's line in the middle: not ours, and not the end, unless the traceback went quiet for good.

        A stray ``Traceback`` header (a logged string) followed by ordinary
        output must not hold the crash open forever.
        """
        self.ignored += 1
        return self.ignored <= self.limits.max_lines

    def _is_exception(self, m: re.Match) -> bool:
        if m["type"] in LEVEL_WORDS:
            return False
        # A bare word is only an exception line right after frames (KeyboardInterrupt, StopIteration).
        return m["msg"] is not None or text_is_bare_type(m["type"]) or bool(self.frames)

    def crash(self) -> Crash | None:
        if not self.entries:
            return None
        chain = _order(self.entries)
        frame = _user_frame(self.entries)
        parsed = parse_message([(e.type, e.message) for e in chain])
        return Crash(
            kind="python",
            chain=tuple((e.type, e.message) for e in chain),
            status=parsed.status, error_code=parsed.error_code, error_type=parsed.error_type,
            retry_after_s=parsed.retry_after_s, frame=frame, lines=tuple(self.lines),
            lines_dropped=self.dropped, offset=self.offset, end_offset=self.end,
        )


def text_is_bare_type(name: str) -> bool:
    return name.endswith(("Error", "Exception", "Interrupt", "Exit", "Iteration", "Group"))


def _order(entries: list[_Entry]) -> list[_Entry]:
    """Outermost last; an ExceptionGroup's members come before the group they belong to."""
    out: list[_Entry] = []
    top: _Entry | None = None
    members: list[_Entry] = []
    for entry in entries:
        if entry.depth == 0:
            if top is not None:
                out.extend(members)
                out.append(top)
            top, members = entry, []
        else:
            members.append(entry)
    out.extend(members)
    if top is not None:
        out.append(top)
    return out


def _user_frame(entries: list[_Entry]) -> Frame | None:
    """The innermost frame in the user's own code, in the first exception of the chain that has one.

    The first printed section is the root cause (a ``RetryError`` is raised in
    tenacity's frames, the ``RateLimitError`` it wraps in the user's call).
    """
    for entry in entries:
        for frame in reversed(entry.frames):
            if frame_is_users(frame.file):
                return frame
    return None


class _Faulthandler:
    def __init__(self, offset: int, message: str, text: str, limits: CrashLimits):
        self.offset, self.end, self.message, self.limits = offset, offset, message, limits
        self.lines, self.dropped, self.frames = [text], 0, []

    def feed(self, text: str, offset: int) -> bool:
        if not FAULT_BODY.match(text):
            return False
        if text.strip():
            self.end = offset
        if m := FAULT_FRAME.match(text):
            self.frames.append(Frame(m["file"], int(m["line"]), m["func"].strip()))
        if len(self.lines) < self.limits.max_lines:
            self.lines.append(text)
        else:
            self.dropped += 1
        return True

    def crash(self) -> Crash:
        # faulthandler prints the most recent call first.
        frame = next((f for f in self.frames if frame_is_users(f.file)), None)
        return Crash(kind="faulthandler", chain=(("faulthandler.FatalError", self.message),), frame=frame,
                     lines=tuple(self.lines), lines_dropped=self.dropped, offset=self.offset,
                     end_offset=self.end)


class CrashAssembler:
    """Per-log: feed complete lines in order, collect the crashes they complete."""

    def __init__(self, limits: CrashLimits | None = None):
        self.limits = limits or CrashLimits()
        self._open: _Python | _Faulthandler | None = None
        self._context: deque[str] = deque(maxlen=self.limits.context_lines)

    @property
    def reading(self) -> bool:
        """A crash has started and not yet ended."""
        return self._open is not None

    @property
    def unfinished(self) -> bool:
        """The crash being read is a traceback Python has not finished printing (its last section has no exception line yet)."""
        return isinstance(self._open, _Python) and self._open.unfinished

    @property
    def opened_at(self) -> int | None:
        """The offset of the first line of the crash being read; None when none is."""
        return self._open.offset if self._open is not None else None

    def feed(self, text: str, offset: int = -1) -> list[Crash]:
        done: list[Crash] = []
        if self._open is not None:
            if self._open.feed(text, offset):
                return done
            done.extend(self._close(followed=True))
        if not STARTS.search(text):
            self._context.append(text)
            return done
        if HEADER.match(text):
            self._open = _Python(offset, self.limits)
            self._open.feed(text, offset)
            return done
        if m := FAULTHANDLER.match(text):
            self._open = _Faulthandler(offset, m["msg"], text, self.limits)
            return done
        for pattern, kind, type_ in FATAL_LINES:
            if pattern.search(text):
                done.append(self._with_context(Crash(kind=kind, chain=((type_, text.strip()[: self.limits.max_message_chars]),),
                                                     lines=(text,), offset=offset, end_offset=offset)))
                break
        else:
            self._context.append(text)
        return done

    def flush(self) -> list[Crash]:
        """The writer is gone (process exit, end of a replayed log): whatever is open is complete."""
        return self._close()

    def _close(self, followed: bool = False) -> list[Crash]:
        opened, self._open = self._open, None
        crash = opened.crash() if opened is not None else None
        return [self._with_context(crash, followed)] if crash is not None else []

    def _with_context(self, crash: Crash, followed: bool = False) -> Crash:
        before = tuple(self._context)
        self._context.clear()
        return Crash(**{**crash.__dict__, "before": before, "followed": followed})
