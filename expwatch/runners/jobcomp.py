"""SLURM job completion records (jobcomp/filetxt), parsed and followed.

With ``JobCompType=jobcomp/filetxt`` slurmctld appends one line per job the
moment it ends, in the same lock that changes the job's state, so the file
tells how a job ended without accounting (sacct) and long after the
controller has forgotten the job (``MinJobAge``)::

    JobId=12 UserId=root(0) GroupId=root(0) Name=gpt4o JobState=FAILED Partition=debug
    TimeLimit=UNLIMITED StartTime=... EndTime=... NodeList=vm NodeCnt=1 ProcCnt=1
    WorkDir=/exp dir ReservationName= ... DerivedExitCode=0:0 ExitCode=3:0

(one line in the file). The file is appended to like a log, so it is
followed with the same ``LogTailer``: only complete lines, resumable from a
persisted position, rotation handled. A finished job becomes a record here;
The SLURM runner is its one follower: it answers job states with it, and the engine loop turns each final record into its exit event, as a pidfd does for local runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from expwatch.watcher.tail import LogTailer, TailPosition
from expwatch.slurm_states import FINAL_STATES

# Values are not quoted and some contain spaces (WorkDir, Name), so a field
# ends only where " Key=" starts the next one. SLURM's keys are CamelCase, a
# path segment like "/a b=c" is not; a WorkDir containing " Capital=" would
# still be cut, which SLURM's format gives no way to avoid.
_KEY = re.compile(r"(?:^| )([A-Z][A-Za-z]*)=")
_EXIT = re.compile(r"^(\d+):(\d+)$")
_NO_NODE = {"", "(null)", "None", "None assigned"}



class JobCompError(ValueError):
    """A line that is not a completion record; the message says why."""


@dataclass(frozen=True)
class JobCompRecord:
    job_id: str
    state: str  # SLURM's word: COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, ...
    exit_code: int | None  # the program's status, first half of ExitCode=N:S
    signal: int | None  # the signal that ended it, second half of ExitCode (None for 0)
    node: str | None  # NodeList; None when the job never ran (cancelled while pending)
    name: str
    work_dir: str
    start_time: str  # as written: local time "2026-11-26T12:23:33", or "Unknown"
    end_time: str
    fields: dict[str, str] = field(default_factory=dict, compare=False)  # every key as written

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def returncode(self) -> int | None:
        """The exit status the way ``ProcessExit`` carries it: None when a signal ended the job."""
        return None if self.signal else self.exit_code


def parse_fields(line: str) -> dict[str, str]:
    """``Key=value`` pairs of one line; values keep their inner spaces."""
    matches = list(_KEY.finditer(line))
    ends = [m.start() for m in matches[1:]] + [len(line.rstrip())]
    return {m.group(1): line[m.end() : end] for m, end in zip(matches, ends)}


def parse_record(line: str) -> JobCompRecord:
    """One jobcomp/filetxt line as a record; raises JobCompError naming what is wrong."""
    values = parse_fields(line.rstrip("\r\n"))
    for key in ("JobId", "JobState", "ExitCode"):
        if key not in values:
            raise JobCompError(f"no {key}= field")
    job_id = values["JobId"].strip()
    if not job_id:
        raise JobCompError("empty JobId")
    exit_match = _EXIT.match(values["ExitCode"].strip())
    if not exit_match:
        raise JobCompError(f"ExitCode={values['ExitCode']!r} is not N:S")
    code, sig = int(exit_match.group(1)), int(exit_match.group(2))
    node = values.get("NodeList", "").strip()
    return JobCompRecord(
        job_id=job_id,
        # sacct spells a cancel "CANCELLED by UID"; the state is the first word either way.
        state=values["JobState"].split(" ")[0].strip(),
        exit_code=code,
        signal=sig or None,
        node=None if node in _NO_NODE else node,
        name=values.get("Name", ""),
        work_dir=values.get("WorkDir", ""),
        start_time=values.get("StartTime", ""),
        end_time=values.get("EndTime", ""),
        fields=values,
    )


class JobCompFollower:
    """Records appended to a jobcomp file since the last call.

    Give it the persisted ``position`` to resume without repeating records.
    Lines that are not records are skipped and reported by ``drain_notes()``
    together with what happened to the file (rotation, truncation).
    """

    def __init__(self, path: Path | str, position: TailPosition | None = None, max_line_bytes: int = 1 << 16):
        self.path = Path(path)
        self._tailer = LogTailer(self.path, position, max_line_bytes)
        self._notes: list[str] = []

    @property
    def position(self) -> TailPosition:
        return self._tailer.position

    def read_new(self) -> list[JobCompRecord]:
        records = []
        while True:
            for line in self._tailer.read_new():
                if not line.text.strip():
                    continue
                try:
                    if line.cut:
                        raise JobCompError("line longer than the reader's limit")
                    records.append(parse_record(line.text))
                except JobCompError as exc:
                    self._notes.append(f"{self.path}: offset {line.offset}: skipped, not a completion record ({exc})")
            if not self._tailer.more_pending:
                return records

    def drain_notes(self) -> list[str]:
        notes = self._tailer.drain_notes()
        notes, self._notes = self._notes + [f"{self.path}: {n}" for n in notes], []
        return notes

    def close(self) -> None:
        self._tailer.close()
