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
            cfg = self._settings.slurm
            self._slurm = SlurmRunner(
                slurm_conf=cfg.conf or None,
                jobcomp=cfg.jobcomp or None,
                poll_s=float(cfg.poll_s),
                command_timeout_s=float(cfg.command_timeout_s),
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
