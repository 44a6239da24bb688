"""Runs evaluations as local processes, each in its own session.

A run must outlive the shell (and the tmux pane, and the watcher) that
started it, so it is started with ``setsid`` semantics and stdin from
/dev/null. A process is only ever recognised by pid *and* create time: a pid
alone may belong to an unrelated process after reuse.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import psutil

from expwatch.manifest import RunManifest
from expwatch.files import NotReadyYet, read_json
from expwatch.runners.base import KillReport, LaunchSpec, Launched
from expwatch.processes import CREATE_TIME_TOLERANCE_S, run_tree, verified_process
from expwatch.runners.shim import LAUNCH_TOKEN_ENV

def shim_argv(exit_record: str, argv: tuple[str, ...], pid_fd: int | None = None) -> list[str]:
    fd = ["--pid-fd", str(pid_fd)] if pid_fd is not None else []
    return [sys.executable, "-m", "expwatch.runners.shim", exit_record, *fd, "--", *argv]


# How long launch waits for the shim to report the command's pid; the shim
# writes it right after fork+exec, so only a machine under heavy load comes near.
PID_REPORT_TIMEOUT_S = 10.0


def _read_command_pid(fd: int) -> int | None:
    """The pid line the shim writes on ``fd``; None if it closed the pipe without one (exec failed)."""
    data = b""
    deadline = time.monotonic() + PID_REPORT_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 64)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    text = data.decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


class LocalRunner:
    name = "local"

    def __init__(self) -> None:
        # Popen objects of runs this process started, reaped once they end so
        # no zombie lingers while the watcher lives.
        self._children: dict[int, subprocess.Popen] = {}

    def launch(self, spec: LaunchSpec) -> Launched:
        log_dir = os.path.dirname(spec.log)
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
        try:
            os.unlink(spec.exit_record)
        except FileNotFoundError:
            pass
        pid_r, pid_w = os.pipe()
        try:
            with open(spec.log, "ab", buffering=0) as log:
                proc = subprocess.Popen(
                    shim_argv(spec.exit_record, spec.argv, pid_w),
                    cwd=spec.cwd,
                    env={**spec.env, LAUNCH_TOKEN_ENV: spec.launch_token} if spec.launch_token else spec.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=(pid_w,),
                )
        except BaseException:
            os.close(pid_r)
            raise
        finally:
            os.close(pid_w)
        self._children[proc.pid] = proc
        ps = psutil.Process(proc.pid)
        return Launched(pid=proc.pid, create_time=ps.create_time(), pgid=os.getpgid(proc.pid), sid=os.getsid(proc.pid),
                        command_pid=_read_command_pid(pid_r))

    def reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    def find_launched(self, spec: LaunchSpec) -> Launched | None:
        # Ended first: a shim that has written its exit record is done, even while it is still exiting
        # (found alive then, with no command under it, it passed for a live launch).
        ended = self._ended_launch(spec)
        if ended is not None:
            return ended
        # Alive: the shim leads the run's session and carries the token in its environment.
        for proc in psutil.process_iter(["pid", "create_time"]):
            try:
                if os.getsid(proc.pid) == proc.pid and proc.environ().get(LAUNCH_TOKEN_ENV) == spec.launch_token:
                    command = next(iter(proc.children()), None)
                    if command is None:
                        return self._ended_launch(spec) or Launched(pid=proc.pid, create_time=proc.info["create_time"],
                                                                    pgid=proc.pid, sid=proc.pid)
                    return Launched(pid=proc.pid, create_time=proc.info["create_time"], pgid=proc.pid, sid=proc.pid,
                                    command_pid=command.pid)
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
        return self._ended_launch(spec)

    @staticmethod
    def _ended_launch(spec: LaunchSpec) -> Launched | None:
        """The launch as its shim's exit record tells it (it echoes the token). No create time: it is not alive."""
        try:
            record = read_json(Path(spec.exit_record))
        except (FileNotFoundError, NotReadyYet):
            return None
        if isinstance(record, dict) and record.get("launch_token") == spec.launch_token:
            pid = record.get("shim_pid")
            return Launched(pid=pid, create_time=None, pgid=pid, sid=pid, command_pid=record.get("pid"))
        return None

    def alive(self, manifest: RunManifest) -> bool:
        self.reap()
        return verified_process(manifest.pid, manifest.create_time) is not None

    def kill(self, manifest: RunManifest, grace_s: float) -> KillReport:
        leader = verified_process(manifest.pid, manifest.create_time)
        if leader is None:
            return KillReport(skipped=_why_not_ours(manifest))
        tree = run_tree(leader, manifest.pgid)
        signalled = _signal_all(tree, "terminate")
        _, survivors = psutil.wait_procs(tree, timeout=grace_s)
        # Children forked during the grace period belong to the run too.
        late = [p for p in run_tree(leader, manifest.pgid) if p.pid not in signalled] if leader.is_running() else []
        killed = _signal_all(survivors + late, "kill")
        psutil.wait_procs(survivors + late, timeout=max(grace_s, 1.0))
        self.reap()
        return KillReport(signalled=tuple(signalled), killed=tuple(killed))


def _why_not_ours(manifest: RunManifest) -> str:
    try:
        proc = psutil.Process(manifest.pid or -1)
        if abs(proc.create_time() - (manifest.create_time or 0)) > CREATE_TIME_TOLERANCE_S:
            return "pid now belongs to another process (create time differs)"
        return "process already exited"  # a zombie not yet reaped by its parent
    except psutil.NoSuchProcess:
        return "process already exited"


def _signal_all(procs: list[psutil.Process], how: str) -> list[int]:
    done = []
    for proc in procs:
        try:
            getattr(proc, how)()  # psutil re-checks create time, so a reused pid is never hit
            done.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return done
