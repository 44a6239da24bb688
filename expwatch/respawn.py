"""``expwatch watch`` as a small supervising parent: a watcher that dies abnormally is restarted.

The watcher itself runs in a child process (``watch --no-restart``). When it
ends by a signal (SIGSEGV in a C extension, SIGKILL by the OOM killer) or an
uncaught exception, the parent audits it and starts a new one, at most once
per back-off window, the way systemd's ``Restart=on-failure`` with
``RestartSec`` would. Exits that a restart cannot fix (stopped, bad
configuration, directory already watched) are passed through, like systemd's
``RestartPreventExitStatus``. The new watcher resumes from the state store,
as after any crash.

The child is its parent's for life: PR_SET_PDEATHSIG makes the kernel
SIGKILL it when the parent dies, so killing ``expwatch watch`` with SIGKILL
still kills the watcher (and never leaves one running unsupervised).
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

# 0 stopped by a signal it was sent, 2 bad directory/settings/rules, 3 DIR already watched.
FINAL_EXITS = frozenset({0, 2, 3})
PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class RespawnPolicy:
    backoff_s: float  # at most one restart within this many seconds of the last


def _die_with_parent() -> None:
    """Runs in the child between fork and exec (the parent is single-threaded there)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def describe_exit(returncode: int) -> dict[str, Any]:
    if returncode < 0:
        try:
            return {"signal": signal.Signals(-returncode).name}
        except ValueError:  # a real-time signal has no name
            return {"signal": -returncode}
    return {"returncode": returncode}


class Respawner:
    """Run ``argv`` until it ends cleanly or we are told to stop; restart it when it fails."""

    def __init__(self, argv: list[str], policy: RespawnPolicy, record: Callable[..., Any]):
        self._argv, self._policy, self._record = argv, policy, record
        self._child: subprocess.Popen | None = None
        self._stopping = threading.Event()

    def _forward(self, signum: int, _frame: object) -> None:
        self._stopping.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def run(self) -> int:
        for signum in FORWARDED:
            signal.signal(signum, self._forward)
        last_restart: float | None = None
        while not self._stopping.is_set():
            self._child = subprocess.Popen(self._argv, preexec_fn=_die_with_parent)
            if self._stopping.is_set():  # a signal between fork and the assignment was not forwarded
                self._child.send_signal(signal.SIGTERM)
            pid = self._child.pid
            returncode = self._child.wait()
            if self._stopping.is_set() or returncode in FINAL_EXITS:
                return returncode if returncode >= 0 else 128 - returncode
            now = time.monotonic()
            delay = 0.0 if last_restart is None else max(0.0, self._policy.backoff_s - (now - last_restart))
            self._record("watcher died", pid=pid, restart_in_s=round(delay, 3), **describe_exit(returncode))
            if self._stopping.wait(delay):
                return 128 - returncode if returncode < 0 else returncode
            last_restart = time.monotonic()
            self._record("watcher restarted", previous_pid=pid, **describe_exit(returncode))
        return 0
