"""Which runner runs a run: chosen per manifest, so one watcher serves both kinds."""

from __future__ import annotations

from expwatch.manifest import RunManifest
from expwatch.runners.base import Runner
from expwatch.runners.local import LocalRunner
from expwatch.runners.slurm import SlurmRunner
from expwatch.settings import Settings

RUNNER_NAMES = ("local", "slurm")


class Runners:
    """One instance of each runner, created on first use (SLURM asks its controller lazily)."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self.local = LocalRunner()
        self._slurm: SlurmRunner | None = None

    @property
    def slurm(self) -> SlurmRunner:
        if self._slurm is None:
            cfg = self._settings.get("slurm")
            self._slurm = SlurmRunner(
                slurm_conf=cfg.get("conf") or None,
                jobcomp=cfg.get("jobcomp") or None,
                poll_s=float(cfg.get("poll_s", 0.25)),
                command_timeout_s=float(cfg.get("command_timeout_s", 30)),
            )
        return self._slurm

    def named(self, name: str) -> Runner:
        if name == "slurm":
            return self.slurm
        if name == "local":
            return self.local
        raise ValueError(f"unknown runner {name!r} (known: {', '.join(RUNNER_NAMES)})")

    def for_manifest(self, manifest: RunManifest) -> Runner:
        return self.named(manifest.runner)
