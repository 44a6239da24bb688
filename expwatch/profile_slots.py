"""How many runs use a backend profile, and waiting for a free slot on one.

A fallback backend with a low burst limit (the shipped ``trapi``) breaks if
a proxy outage moves every run onto it at once. A profile's ``max_runs``
caps that; ``launch`` and the ``switch_profile`` action both ask
``runs_using`` and take a slot through ``claim``, so they count the same way.

A run uses a profile when its manifest names it, it is not finished
(completed, stopped or halted) and either its process is alive or it was
switched onto the profile and not relaunched since: a run between its
``switch_profile`` and ``restart`` steps already holds the slot it is about
to use, or ten simultaneous switches would all see an empty profile.

Claims are serialised by an advisory lock beside the manifests, which covers
incident threads of one watcher and ``launch`` commands alike.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from expwatch.trust import file_mode, make_home
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import RunManifest, discover
from expwatch.runners.registry import Runners
from expwatch.settings import Profile

LOCK_NAME = "profile-slots.lock"


@dataclass(frozen=True)
class SlotOutcome:
    granted: bool
    holders: tuple[str, ...]  # the runs that used the profile at the last look
    waited_s: float = 0.0


def awaiting_relaunch(manifest: RunManifest) -> bool:
    """Switched onto its profile after its last launch (ISO timestamps of one format compare as text)."""
    since = manifest.profile_since
    return since is not None and (manifest.launched_at is None or manifest.launched_at < since)


def runs_using(layout: ExperimentsLayout, runners: Runners, profile: str, exclude: str | None = None) -> list[str]:
    """Names of the live, unfinished runs (other than ``exclude``) that use ``profile``."""
    users = []
    for manifest in discover(layout):
        if manifest.name == exclude or manifest.profile != profile:
            continue
        if manifest.completed_at or manifest.stopped_at or manifest.halted:
            continue
        if awaiting_relaunch(manifest) or runners.for_manifest(manifest).alive(manifest):
            users.append(manifest.name)
    return users


@contextmanager
def _slot_lock(layout: ExperimentsLayout) -> Iterator[None]:
    make_home(layout)
    # A fresh open file description per claim: flock then excludes other threads of this process too.
    # Owner-only whatever the umask, like everything under .expwatch/ (expwatch/trust.py).
    fd = os.open(layout.home / LOCK_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode(layout.home))
    with os.fdopen(fd, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def claim(
    layout: ExperimentsLayout,
    runners: Runners,
    profile: Profile,
    take: Callable[[], object],
    *,
    exclude: str | None = None,
    wait: bool = False,
    poll_s: float = 1.0,
    on_wait: Callable[[tuple[str, ...]], None] = lambda holders: None,
    pause: Callable[[float], bool] | None = None,
) -> SlotOutcome:
    """Run ``take`` (which must make the run count as a user) once the profile has a free slot.

    Without ``wait`` a full profile is refused at once. ``on_wait`` is told
    the holders the first time the claim has to wait. ``pause(seconds)``
    sleeps between looks and returns True to end the wait ungranted (a
    watcher shutting down passes its stop event's ``wait``).
    """
    started = time.monotonic()
    told = False
    while True:
        with _slot_lock(layout):
            holders = tuple(runs_using(layout, runners, profile.name, exclude)) if profile.max_runs else ()
            if profile.max_runs is None or len(holders) < profile.max_runs:
                take()
                return SlotOutcome(True, holders, time.monotonic() - started)
        if not wait:
            return SlotOutcome(False, holders)
        if not told:
            on_wait(holders)
            told = True
        if pause is None:
            time.sleep(poll_s)
        elif pause(poll_s):
            return SlotOutcome(False, holders, time.monotonic() - started)
