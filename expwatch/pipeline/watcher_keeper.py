"""Keeping a normal ``expwatch watch DIR`` alive under a pipeline.

A pipeline's phases are watched by the same watcher and rules as any run, so
the pipeline does not watch anything itself: it checks that some process
holds DIR/.expwatch/watcher.lock and, if none does, starts one detached (its
own session, output to a log), the way a user would in tmux.

Whether the lock is held is read from /proc/locks rather than by trying to
take it: a probe that took the lock, even for a moment, could make a watcher
starting at that instant exit with "already watched".
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from expwatch.layout import ExperimentsLayout

PROC_LOCKS = Path("/proc/locks")


def watcher_holder(layout: ExperimentsLayout) -> int | None:
    """The pid holding the watcher lock, or None when no watcher runs."""
    try:
        st = os.stat(layout.lock_path)
    except FileNotFoundError:
        return None
    try:
        text = PROC_LOCKS.read_text()
    except OSError:
        return _probe(layout)
    # e.g. "3: FLOCK  ADVISORY  WRITE 4242 fd:01:131077 0 EOF" (device as hex major:minor, then the inode)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == wanted and parts[4].isdigit():
            return int(parts[4])
    return None


def _probe(layout: ExperimentsLayout) -> int | None:
    fd = os.open(layout.lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        return int(holder) if holder.isdigit() else -1
    finally:
        os.close(fd)
    return None


class WatcherKeeper:
    """Starts a watcher for DIR when none holds its lock; reaps the ones it started."""

    def __init__(self, layout: ExperimentsLayout, log_path: Path, start_timeout_s: float):
        self.layout = layout
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.started: list[subprocess.Popen] = []

    def ensure(self) -> tuple[int, bool]:
        """(pid of the watcher, whether this call started it). Raises RuntimeError if it will not start."""
        for proc in self.started:
            proc.poll()  # reap a watcher of ours that died, so it is no zombie holding a pid
        holder = watcher_holder(self.layout)
        if holder is not None:
            return holder, False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "expwatch", "watch", str(self.layout.root)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.started.append(proc)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            holder = watcher_holder(self.layout)
            if holder is not None:
                return holder, True
            if proc.poll() is not None and proc.returncode != 3:  # 3: another watcher won the race
                raise RuntimeError(f"the watcher exited with code {proc.returncode}; see {self.log_path}")
            time.sleep(0.05)
        raise RuntimeError(f"no watcher took {self.layout.lock_path} within {self.start_timeout_s:g}s; see {self.log_path}")
