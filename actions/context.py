"""What every action receives, and how it reports back.

Actions change the world and nothing else: they never decide whether to
act (the rules did) and never talk to the rules engine. Each reads the
run's manifest fresh from disk, because an earlier step of the same
incident (a restart, a profile switch) may have rewritten it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from expwatch.audit.log import AuditLog
from expwatch.layout import ExperimentsLayout
from expwatch.manifest import RunManifest, load_named, save_manifest
from expwatch.runners.base import Runner
from expwatch.runners.registry import Runners
from expwatch.settings import Settings


class ActionFailed(Exception):
    """The action could not do its job; the incident halts the run."""


@dataclass(frozen=True)
class ActionResult:
    outcome: str  # short word: killed, waited, restarted, halted, skipped, ...
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActionContext:
    layout: ExperimentsLayout
    settings: Settings
    runners: Runners
    audit: AuditLog
    run: str
    incident: str
    rule: str
    evidence: dict[str, Any]
    stop: threading.Event
    console: Callable[[str], None]
    manifest_lock: threading.Lock = field(default_factory=threading.Lock)  # one per run, shared by its incidents
    step_info: dict[str, Any] = field(default_factory=dict)  # survives a watcher crash mid-step
    persist_step_info: Callable[[dict[str, Any]], None] = lambda info: None

    def manifest(self) -> RunManifest:
        return load_named(self.layout, self.run)

    def runner_for(self, manifest: RunManifest) -> Runner:
        return self.runners.for_manifest(manifest)

    def update(self, change: Callable[[RunManifest], RunManifest]) -> RunManifest:
        """Read the manifest fresh, apply ``change``, write it back, under the run's lock.

        Incidents of one run may act at once (a completion beside a restart);
        without the lock one would write back a manifest read before the
        other's change and silently undo it.
        """
        with self.manifest_lock:
            manifest = change(self.manifest())
            save_manifest(self.layout, manifest)
            return manifest

    def remember(self, **info: Any) -> None:
        """Persist facts about the running step before acting on them (crash recovery)."""
        self.step_info.update(info)
        self.persist_step_info(dict(self.step_info))
