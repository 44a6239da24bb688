"""The launch shim: session leader of every run expwatch starts.

Only a parent can learn a process's exit status, and neither the ``launch``
CLI (gone in a second) nor the watcher (may restart) can stay the parent.
So the run's command runs under this tiny stdlib-only parent, which waits
for it and writes ``{"returncode", "signal", "pid", "ended_at"}`` atomically
to the exit record. It ignores SIGTERM/SIGINT/SIGHUP so that a group kill
reaches the command and the shim lives to record how the command ended.

Usage: python -m expwatch.runners.shim EXIT_RECORD -- CMD [ARGS...]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


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


# Set by the launcher; echoed in the exit record so a restart interrupted
# before recording its launch can tell that the launch happened.
LAUNCH_TOKEN_ENV = "EXPWATCH_LAUNCH_TOKEN"


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m expwatch.runners.shim EXIT_RECORD -- CMD [ARGS...]", file=sys.stderr)
        return 2
    record_path, command = argv[0], argv[2:]
    token = os.environ.pop(LAUNCH_TOKEN_ENV, None)  # the shim's own mark, not the command's
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        # The child gets default dispositions back (restore_signals covers only
        # SIGPIPE and friends), so a group SIGTERM still ends it.
        child = subprocess.Popen(command, preexec_fn=_restore_default_signals)
    except OSError as exc:
        print(f"expwatch: cannot start {command[0]!r}: {exc.strerror}", file=sys.stderr, flush=True)
        _write_record(record_path, {"pid": None, "shim_pid": os.getpid(), "launch_token": token, "returncode": 127,
                                    "signal": None, "ended_at": time.time(), "error": str(exc)})
        return 127
    code = child.wait()
    _write_record(
        record_path,
        {
            "pid": child.pid,
            "shim_pid": os.getpid(),
            "launch_token": token,
            "returncode": code if code >= 0 else None,
            "signal": -code if code < 0 else None,
            "ended_at": time.time(),
        },
    )
    return code if code >= 0 else 128 - code


def _restore_default_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
