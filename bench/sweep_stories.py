"""The crash sweep's failure stories: the run's faults, and what happens around the watcher that the sweep kills.

A story with ``before`` first runs under a watcher that is not armed, until
the run reaches that state; that watcher then stops cleanly and ``down``
happens while no watcher runs. The armed watcher (the one killed at the
crash point) starts after that, and ``operator`` (``expwatch resume`` or
``expwatch stop``) is run by hand right after it. So every crash point a
story lists is one its armed phase passes: the resume, the stop, or the
start that finds a run that died while no watcher ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from fleet import Fleet
from invariants import RunPlan

ITEMS = 8
DELAY = 0.03
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@dataclass(frozen=True)
class Story:
    faults: tuple[str, ...] = ()
    items: int = ITEMS
    delay: float = DELAY
    before: str | None = None  # "halted": until the run is halted; "progress": until its first item is done
    down: str | None = None  # "fix": its script is rewritten without the faults; "death": its process (or job) ends
    operator: str | None = None  # "resume" | "stop"
    runner: str = "local"

    def plan(self, name: str) -> RunPlan:
        return RunPlan(name, self.items, self.faults, resumed=self.operator == "resume", stopped=self.operator == "stop")

    @property
    def fault_args(self) -> list[str]:
        return [a for f in self.faults for a in ("--fault", f)]


STORIES: dict[str, Story] = {
    "completion": Story(),
    "die-once": Story(("die@3",)),
    "die-always": Story(("die:always@3",)),
    "crash-always": Story(("traceback:always@3",)),
    "rate-limit": Story(("rate_limit@3",)),
    "proxy-down": Story(("proxy@3",)),
    "oom": Story(("oom@3",)),
    "hang": Story(("hang@3",)),
    # Halted by a code bug; the bug is fixed in the script and the run resumed by hand. Items of 0.25 s: the
    # restarted process crashes after its restart step ended, whatever the load (crash-always sweeps that race).
    "resume": Story(("traceback:always@3",), delay=0.25, before="halted", down="fix", operator="resume"),
    # Stopped by hand while it runs (60 items of 0.1 s: alive long after the armed watcher is up).
    "stop": Story(items=60, delay=0.1, before="progress", operator="stop"),
    # Dies while no watcher runs: the next watcher's start decides it, once.
    "die-while-down": Story(("die@3",), delay=0.3, before="progress", down="death"),
    "slurm-die-while-down": Story(("die@3",), delay=0.3, before="progress", down="death", runner="slurm"),
}


def script_path(fleet: Fleet, name: str) -> Path:
    return fleet.root / f"{name}.sh"


def launch(story: Story, fleet: Fleet, name: str) -> None:
    """The story's run; a run that will be fixed and resumed runs a script, so that the fix is a new script."""
    script = script_path(fleet, name) if story.down == "fix" else None
    fleet.launch(name, story.fault_args, story.items, story.delay, runner=story.runner, script=script)


def reached(story: Story, fleet: Fleet, name: str) -> bool:
    """Whether the run has reached the story's ``before`` state."""
    try:
        m = fleet.manifest(name)
    except Exception:
        return False
    if story.before == "halted":
        return m.halted is not None
    return len(fleet.items(name)) >= 1


def run_ended(story: Story, fleet: Fleet, name: str) -> bool:
    """The run's process (or SLURM job) is gone."""
    m = fleet.manifest(name)
    if story.runner == "slurm":
        state = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(m.job_id), "-o", "%T"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")
    try:
        return psutil.Process(m.pid).status() == psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, TypeError):
        return True


def at_rest(story: Story, fleet: Fleet, name: str) -> bool:
    try:
        m = fleet.manifest(name)
    except Exception:
        return False
    if story.operator == "stop":
        return bool(m.stopped_at) and run_ended(story, fleet, name)
    return bool(m.completed_at or m.halted)


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def while_down(story: Story, fleet: Fleet, name: str, timeout: float) -> str | None:
    """What happens while no watcher runs; a violation if it could not be brought about."""
    if story.down == "fix":
        fleet.write_script(script_path(fleet, name), story.items, story.delay, name, [])
    elif story.down == "death" and not wait_until(lambda: run_ended(story, fleet, name), timeout):
        return f"the run's process did not end within {timeout:g}s while the watcher was down"
    return None


@contextmanager
def slurm_cluster() -> Iterator[str | None]:
    """A private single-node SLURM (scripts/slurm-up.sh) with SLURM_CONF set for the runs; None (and why) where none starts."""
    if os.geteuid() != 0 or not shutil.which("sbatch"):
        print("slurm stories skipped: a private SLURM needs root and slurm-wlm (make system-packages)")
        yield None
        return
    state = Path(tempfile.mkdtemp(prefix="expwatch-sweep-slurm-", dir="/tmp"))
    up = subprocess.run([str(SCRIPTS / "slurm-up.sh"), str(state)], capture_output=True, text=True, timeout=900)
    before = os.environ.get("SLURM_CONF")
    try:
        if up.returncode != 0:
            print(f"slurm stories skipped: scripts/slurm-up.sh failed: {(up.stderr.strip().splitlines() or ['?'])[-1]}")
            yield None
        else:
            os.environ["SLURM_CONF"] = str(state / "slurm.conf")  # the in-process launch and the watcher inherit it
            yield os.environ["SLURM_CONF"]
    finally:
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        down = subprocess.run([str(SCRIPTS / "slurm-down.sh"), str(state)], capture_output=True, timeout=120)
        if down.returncode == 0:
            shutil.rmtree(state, ignore_errors=True)
