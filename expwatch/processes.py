"""Which process is a run's: identity by pid *and* create time, and the run's process tree.

The watcher (is the run alive?), the actions (kill this tree) and the
status command all ask the same question; a pid alone may belong to an
unrelated process after reuse, so it is answered in this one place.
"""

from __future__ import annotations

import os

import psutil

# psutil derives create_time from boot time + clock ticks; the same process
# reads back equal to well within this.
CREATE_TIME_TOLERANCE_S = 0.05


def verified_process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The live process with this pid *and* create time, else None (gone or reused)."""
    if not pid or create_time is None:
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CREATE_TIME_TOLERANCE_S:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def this_process() -> dict[str, float]:
    """This process's identity as JSON, for what it owns (an incident ``expwatch resume`` carries out)."""
    return {"pid": os.getpid(), "create_time": psutil.Process().create_time()}


def owner_alive(owner: dict | None) -> bool:
    """The process ``this_process()`` named, other than this one, still lives."""
    if not isinstance(owner, dict) or owner.get("pid") == os.getpid():
        return False
    return verified_process(owner.get("pid"), owner.get("create_time")) is not None


def run_tree(leader: psutil.Process, pgid: int | None) -> list[psutil.Process]:
    """The leader, its descendants, and group members started after it.

    Descendants that called setsid are still children; members of the group
    whose parent died were reparented and are found by pgid instead. Anything
    older than the leader cannot belong to the run.
    """
    procs = {leader.pid: leader}
    try:
        for child in leader.children(recursive=True):
            procs[child.pid] = child
    except psutil.NoSuchProcess:
        pass
    if pgid:
        born = leader.create_time()
        for proc in psutil.process_iter(["pid", "create_time"]):
            try:
                if proc.pid not in procs and os.getpgid(proc.pid) == pgid and proc.info["create_time"] >= born:
                    procs[proc.pid] = proc
            except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
                continue
    return list(procs.values())
