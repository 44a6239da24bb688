"""Where expwatch keeps its files inside an experiments directory.

Everything expwatch writes lives under ``DIR/.expwatch/`` so a run's record
survives as long as the experiments themselves, and one ``rm -r .expwatch``
forgets it all. The user's editable files (rules, settings) sit next to the
experiments, in plain sight.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

HOME_NAME = ".expwatch"


def is_manifest_name(name: str) -> bool:
    """A run's manifest in ``runs/``, not its exit record nor a file being written (a dot file)."""
    return name.endswith(".json") and not name.endswith(".exit.json") and not name.startswith(".")


@dataclass(frozen=True)
class ExperimentsLayout:
    """Paths are computed once per layout (cached_property): the engine asks for them on every file event."""

    root: Path

    @classmethod
    def at(cls, root: Path | str) -> "ExperimentsLayout":
        return cls(Path(root).resolve())

    @cached_property
    def home(self) -> Path:
        return self.root / HOME_NAME

    @cached_property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    def manifest_path(self, name: str) -> Path:
        return self.runs_dir / f"{name}.json"

    def exit_path(self, name: str) -> Path:
        """Written by the launch shim when the run's command ends."""
        return self.runs_dir / f"{name}.exit.json"

    def run_files_dir(self, name: str) -> Path:
        """Diagnosis bundles and validation reports of one run."""
        return self.home / "runs" / name

    @cached_property
    def audit_path(self) -> Path:
        return self.home / "audit.jsonl"

    @cached_property
    def state_db(self) -> Path:
        return self.home / "state.sqlite3"

    @cached_property
    def lock_path(self) -> Path:
        return self.home / "watcher.lock"

    @cached_property
    def rules_path(self) -> Path:
        """The user's editable rules, created by ``expwatch rules init``."""
        return self.root / "expwatch.rules.yaml"

    @cached_property
    def settings_path(self) -> Path:
        """Optional user overrides of configs/settings.yaml."""
        return self.root / "expwatch.yaml"

    # The same as text: file events arrive as path text, and comparing Paths costs more than the rest of an event.
    @cached_property
    def home_text(self) -> str:
        return str(self.home)

    @cached_property
    def runs_dir_text(self) -> str:
        return str(self.runs_dir)

    @cached_property
    def rules_path_text(self) -> str:
        return str(self.rules_path)

    def is_own_file(self, path: str) -> bool:
        """Audit, state and lock files under .expwatch/: a file event about one is the watcher's own write.

        Asked of every file event, on any thread; the layout is immutable.
        """
        folder = path.rpartition("/")[0]
        return folder == self.home_text or (folder == self.runs_dir_text and not self.is_manifest(path))

    def is_manifest(self, path: Path | str) -> bool:
        # On strings: the engine asks this on every file event, and Path.parent builds a new Path each time.
        folder, _, name = str(path).rpartition("/")
        return folder == self.runs_dir_text and is_manifest_name(name)
