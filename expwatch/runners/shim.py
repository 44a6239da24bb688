"""The launch shim: session leader of every run expwatch starts.

Only a parent can learn a process's exit status, and neither the ``launch``
CLI (gone in a second) nor the watcher (may restart) can stay the parent.
So the run's command runs under this tiny stdlib-only parent, which waits
for it and writes ``{"returncode", "signal", "pid", "ended_at"}`` atomically
to the exit record, then exits with the command's status (128+N for a
signal, as a shell reports it).

Users kill what they see: ``kill PID`` on the command's pid, on the shim's,
or ``kill -- -PGID`` on the whole group. So the shim forwards SIGTERM,
SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 to the command (as tini and dumb-init
do) instead of ignoring them; whichever is hit, the command ends and the
shim lives to record how. A signal that arrives before the command exists
is held and forwarded the moment it does.

Usage: python -m expwatch.runners.shim EXIT_RECORD [--pid-fd N] -- CMD [ARGS...]
With ``--pid-fd`` the shim writes the command's pid to fd N and closes it,
so the launcher can show the pid users will ``kill`` and ``ps``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

# Set by the launcher; echoed in the exit record so a restart interrupted
# before recording its launch can tell that the launch happened.
LAUNCH_TOKEN_ENV = "EXPWATCH_LAUNCH_TOKEN"


def _write_record(path: str, record: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    # Owner-only whatever the umask, group-shared when .expwatch/runs is (see expwatch/trust.py).
    mode = 0o660 if os.stat(os.path.dirname(path) or ".").st_mode & 0o020 else 0o600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class SignalForwarder:
    """Passes each forwarded signal on to the command; remembers the last one the shim received."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.held: list[int] = []
        self.received: int | None = None

    def install(self) -> None:
        for sig in FORWARDED:
            signal.signal(sig, self._on_signal)

    def attach(self, child: subprocess.Popen) -> None:
        self.child = child
        for sig in self.held:
            self._send(sig)
        self.held.clear()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.received = signum
        if self.child is None:
            self.held.append(signum)
        else:
            self._send(signum)

    def _send(self, signum: int) -> None:
        try:
            os.kill(self.child.pid, signum)  # type: ignore[union-attr]
        except ProcessLookupError:
            pass  # already ended; wait() will tell how


def _parse(argv: list[str]) -> tuple[str, int | None, list[str]] | None:
    if len(argv) >= 3 and argv[1] == "--":
        return argv[0], None, argv[2:]
    if len(argv) >= 5 and argv[1] == "--pid-fd" and argv[2].isdigit() and argv[3] == "--":
        return argv[0], int(argv[2]), argv[4:]
    return None


def _report_pid(fd: int | None, pid: int | None) -> None:
    """Tell the launcher the command's pid. A launcher killed meanwhile (a watcher SIGKILLed in its
    restart step) leaves no reader: the shim goes on, waits and writes the exit record all the same,
    which is how the next watcher finds this launch instead of starting a second copy."""
    if fd is None:
        return
    try:
        if pid is not None:
            os.write(fd, f"{pid}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    parsed = _parse(argv)
    if parsed is None:
        print("usage: python -m expwatch.runners.shim EXIT_RECORD [--pid-fd N] -- CMD [ARGS...]", file=sys.stderr)
        return 2
    record_path, pid_fd, command = parsed
    token = os.environ.pop(LAUNCH_TOKEN_ENV, None)  # the shim's own mark, not the command's
    forwarder = SignalForwarder()
    forwarder.install()
    try:
        # Handlers (unlike SIG_IGN) are reset to the default by exec, so the
        # command starts with default dispositions for every forwarded signal.
        child = subprocess.Popen(command)
    except OSError as exc:
        _report_pid(pid_fd, None)
        print(f"expwatch: cannot start {command[0]!r}: {exc.strerror}", file=sys.stderr, flush=True)
        _write_record(record_path, {"pid": None, "shim_pid": os.getpid(), "launch_token": token, "returncode": 127,
                                    "signal": None, "ended_at": time.time(), "error": str(exc)})
        return 127
    forwarder.attach(child)
    _report_pid(pid_fd, child.pid)
    code = child.wait()
    _write_record(
        record_path,
        {
            "pid": child.pid,
            "shim_pid": os.getpid(),
            "launch_token": token,
            "returncode": code if code >= 0 else None,
            "signal": -code if code < 0 else None,
            # The signal someone sent the shim (or the group), passed on to the command.
            "forwarded_signal": forwarder.received,
            "ended_at": time.time(),
        },
    )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
