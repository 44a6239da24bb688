"""Run manifests: the durable record of one evaluation run.

A manifest is what lets expwatch restart a run exactly as it was started
(argv, cwd, the env that differs from the user's) and recognise its process
without being its parent (pid + create time + process group). It is JSON,
rewritten atomically, and found by listing ``DIR/.expwatch/runs/``.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from expwatch.files import NotReadyYet, atomic_write_json, read_json
from expwatch.layout import ExperimentsLayout

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ManifestError(Exception):
    """A manifest that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class HaltMark:
    reason: str
    incident: str | None
    at: str


@dataclass(frozen=True)
class RunManifest:
    name: str
    argv: tuple[str, ...]
    cwd: str
    log: str
    env_overrides: dict[str, str] = field(default_factory=dict)
    env_unset: tuple[str, ...] = ()
    result: str | None = None
    checkpoint: str | None = None
    expected: int | None = None
    pid: int | None = None
    create_time: float | None = None
    pgid: int | None = None
    sid: int | None = None
    launched_at: str | None = None
    restarts: int = 0
    profile: str | None = None
    runner: str = "local"
    job_id: str | None = None  # SLURM job id when runner == "slurm"
    sbatch_args: tuple[str, ...] = ()  # extra sbatch options, reused on restart
    adopted: bool = False
    halted: HaltMark | None = None
    stopped_at: str | None = None
    completed_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["argv"] = list(self.argv)
        data["env_unset"] = list(self.env_unset)
        data["sbatch_args"] = list(self.sbatch_args)
        return data

    @classmethod
    def from_json(cls, data: Any, source: Path) -> "RunManifest":
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: manifest is not a JSON object")
        known = {f.name for f in fields(cls)}
        for required in ("name", "argv", "cwd", "log"):
            if required not in data:
                raise ManifestError(f"{source}: field '{required}' is missing")
        kwargs = {k: v for k, v in data.items() if k in known}
        if not isinstance(kwargs["argv"], list) or not all(isinstance(a, str) for a in kwargs["argv"]):
            raise ManifestError(f"{source}: field 'argv' must be a list of strings")
        kwargs["argv"] = tuple(kwargs["argv"])
        kwargs["env_unset"] = tuple(kwargs.get("env_unset") or ())
        sbatch_args = kwargs.get("sbatch_args") or []
        if not isinstance(sbatch_args, list) or not all(isinstance(a, str) for a in sbatch_args):
            raise ManifestError(f"{source}: field 'sbatch_args' must be a list of strings")
        kwargs["sbatch_args"] = tuple(sbatch_args)
        kwargs["env_overrides"] = dict(kwargs.get("env_overrides") or {})
        halted = kwargs.get("halted")
        kwargs["halted"] = HaltMark(**halted) if isinstance(halted, dict) else None
        return cls(**kwargs)

    def with_changes(self, **changes: Any) -> "RunManifest":
        return replace(self, **changes)


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ManifestError(f"run name {name!r}: use letters, digits, '.', '_' or '-' (at most 100)")
    return name


def save_manifest(layout: ExperimentsLayout, manifest: RunManifest) -> Path:
    path = layout.manifest_path(manifest.name)
    atomic_write_json(path, manifest.to_json())
    return path


def load_manifest(path: Path) -> RunManifest:
    """Raises FileNotFoundError, NotReadyYet (torn write) or ManifestError."""
    return RunManifest.from_json(read_json(path), path)


def load_named(layout: ExperimentsLayout, name: str) -> RunManifest:
    path = layout.manifest_path(name)
    try:
        return load_manifest(path)
    except FileNotFoundError:
        known = ", ".join(sorted(m.name for m in discover(layout))) or "none"
        raise ManifestError(f"no run named {name!r} in {layout.root} (known: {known})") from None


def discover(layout: ExperimentsLayout) -> list[RunManifest]:
    """Every readable manifest; unreadable ones are skipped (they are retried by the watcher)."""
    found = []
    try:
        # Names filtered as strings before any Path is built: a lab's folder holds >10,000 of them.
        names = sorted(n for n in os.listdir(layout.runs_dir)
                       if n.endswith(".json") and not n.endswith(".exit.json") and not n.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for name in names:
        try:
            found.append(load_manifest(layout.runs_dir / name))
        except (FileNotFoundError, NotReadyYet, ManifestError, IsADirectoryError):
            continue
    return found
