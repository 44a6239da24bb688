"""Process exits, seen the moment they happen (pidfd), not on the next poll.

The watcher is usually not the run's parent, so it cannot ``wait()`` for
it. A pidfd becomes readable when its process terminates, whoever the
parent is; one thread polls all of them plus a wake-up pipe.
"""

from __future__ import annotations

import os
import queue
import select
import threading
from pathlib import Path

from expwatch.files import NotReadyYet, read_json
from expwatch.kernel_log import oom_killed
from expwatch.processes import verified_process
from expwatch.watcher.events import ProcessExit


class ExitWaiter:
    def __init__(self, events: queue.Queue):
        self._events = events
        self._lock = threading.Lock()
        self._by_fd: dict[int, tuple[str, int, Path | None]] = {}
        self._by_run: dict[str, int] = {}
        self._gone: list[tuple[str, int, Path | None]] = []  # already ended when asked to watch
        self._wake_r, self._wake_w = os.pipe()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="exit-waiter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, run: str, pid: int, create_time: float | None, exit_record: Path | None) -> None:
        """Report the exit of (pid, create_time) as run; at once if it is already gone."""
        self.forget(run)
        fd = None
        if verified_process(pid, create_time) is not None:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                pass
        with self._lock:
            if fd is None:
                self._gone.append((run, pid, exit_record))  # reported from the waiter's thread
            else:
                self._by_fd[fd] = (run, pid, exit_record)
                self._by_run[run] = fd
        os.write(self._wake_w, b"x")

    def forget(self, run: str) -> None:
        with self._lock:
            fd = self._by_run.pop(run, None)
            if fd is not None:
                self._by_fd.pop(fd, None)
                os.close(fd)
        if fd is not None:
            os.write(self._wake_w, b"x")

    def stop(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)

    @staticmethod
    def _exit_event(run: str, pid: int, exit_record: Path | None) -> ProcessExit:
        """How it ended; a SIGKILL (or an unknown end) asks the kernel log about the OOM killer here,
        on this thread, because dmesg can take seconds."""
        returncode = signal = command_pid = None
        if exit_record is not None:
            try:
                record = read_json(exit_record)
                returncode, signal, command_pid = record.get("returncode"), record.get("signal"), record.get("pid")
            except (FileNotFoundError, NotReadyYet, AttributeError):
                pass
        # The kernel kills the command (the exit record's pid), not the shim that waits for it.
        suspects = [p for p in (pid, command_pid) if isinstance(p, int)]
        asked = signal == 9 or returncode == 137 or (returncode is None and signal is None)
        oom = oom_killed(suspects) if asked else None
        return ProcessExit(run, pid, returncode, signal, oom_killed=oom, oom_unreadable=asked and oom is None)

    def _loop(self) -> None:
        while not self._stop:
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            with self._lock:
                for fd in self._by_fd:
                    poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll():
                if fd == self._wake_r:
                    os.read(self._wake_r, 4096)
                    with self._lock:
                        gone, self._gone = self._gone, []
                    for entry in gone:
                        self._events.put(self._exit_event(*entry))
                    continue
                with self._lock:
                    entry = self._by_fd.pop(fd, None)
                    if entry:
                        self._by_run.pop(entry[0], None)
                        os.close(fd)
                if entry:
                    self._events.put(self._exit_event(*entry))
