"""Shipped defaults (configs/*.yaml) merged with the user's overrides.

Defaults are data: every threshold the watcher uses comes from here, which
is also what lets the tests run the real code with second-scale timings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from expwatch.bounded_yaml import YamlRefused, parse_yaml
from expwatch.files import NotReadyYet, read_text
from expwatch.layout import HOME_NAME, ExperimentsLayout
from expwatch.trust import check_trusted
from expwatch.settings_schema import check_settings


class SettingsError(Exception):
    """A settings or profiles file that cannot be used (message names file and field)."""


def shipped_text(name: str) -> str:
    return (resources.files("expwatch.configs") / name).read_text(encoding="utf-8")


def shipped_yaml(name: str) -> dict[str, Any]:
    return parse_yaml(shipped_text(name), f"configs/{name}").data or {}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class Profile:
    name: str
    backend: str
    env: dict[str, str]
    probe_url: str | None = None
    probe_every_s: float = 30.0
    probe_timeout_s: float = 5.0
    fallback: str | None = None  # the profile to name when this one's probe fails at launch
    max_runs: int | None = None  # at most this many runs use the profile at once; None: no cap


@dataclass(frozen=True)
class WorkerBounds:
    floor: int
    ceiling: int


@dataclass(frozen=True)
class WatchSettings:
    settle_s: float
    safety_poll_s: float
    poll_step_s: float
    observer: str
    polling_interval_s: float
    stale_fallback_s: float
    position_save_s: float
    read_interval_s: float
    restart_backoff_s: float
    release_finished_s: float
    views_every_s: float
    status_cache_after_s: float


@dataclass(frozen=True)
class TailSettings:
    max_line_bytes: int


@dataclass(frozen=True)
class GuardSettings:
    same_rule_limit: int
    restart_budget: int
    restart_window_s: float


@dataclass(frozen=True)
class KillSettings:
    grace_s: float


@dataclass(frozen=True)
class LaunchSettings:
    check_after_s: float
    volatile_path_markers: tuple[str, ...]
    config_flags: tuple[str, ...]
    slot_poll_s: float


@dataclass(frozen=True)
class AuditSettings:
    max_bytes: int
    backups: int
    progress_every_s: float
    console_gather_s: float


@dataclass(frozen=True)
class AdoptSettings:
    ignore_env: tuple[str, ...]


@dataclass(frozen=True)
class NotifySettings:
    argv: tuple[str, ...]
    on_halt: bool
    on_complete: bool
    rules: tuple[str, ...]
    timeout_s: float


@dataclass(frozen=True)
class SecuritySettings:
    group_access: bool


@dataclass(frozen=True)
class SlurmSettings:
    conf: str | None
    jobcomp: str | None
    poll_s: float
    command_timeout_s: float


@dataclass(frozen=True)
class TestingSettings:
    """Test-only (expwatch/crashpoints.py); null in the shipped settings."""

    crash_at: str | None
    crash_trace: str | None


_SECTIONS = {"watch": WatchSettings, "tail": TailSettings, "guard": GuardSettings, "kill": KillSettings,
             "launch": LaunchSettings, "audit": AuditSettings, "adopt": AdoptSettings, "notify": NotifySettings,
             "security": SecuritySettings, "slurm": SlurmSettings, "testing": TestingSettings}


def _section(cls: type, data: dict[str, Any]) -> Any:
    """A validated section as its frozen dataclass (lists become tuples, so nothing downstream can edit them)."""
    return cls(**{k: tuple(str(x) for x in v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class Settings:
    """settings.yaml + profiles.yaml (+ the user's expwatch.yaml), validated by configs/settings.schema.json.

    Sections whose shape their owners parse further stay mappings: ``crash``
    (watcher/crash.py, rules/retry_hint.py) and ``discovery`` (watcher/discover.py).
    """

    watch: WatchSettings
    tail: TailSettings
    guard: GuardSettings
    kill: KillSettings
    launch: LaunchSettings
    audit: AuditSettings
    adopt: AdoptSettings
    notify: NotifySettings
    security: SecuritySettings
    slurm: SlurmSettings
    testing: TestingSettings
    crash: dict[str, Any]
    discovery: dict[str, Any]
    discover: str  # adopt | suggest | off
    runner: str
    default_profile: str
    profiles: dict[str, Profile]
    worker_flag: str
    worker_bounds: dict[str, WorkerBounds]
    launch_workers_max: dict[str, int] = field(default_factory=dict)  # backend -> most workers `launch` accepts

    def profile(self, name: str | None) -> Profile:
        key = name or self.default_profile
        if key not in self.profiles:
            raise SettingsError(f"profiles: unknown profile {key!r} (known: {', '.join(sorted(self.profiles))})")
        return self.profiles[key]


def yaml_mapping(text: str, label: str, error: type[Exception] = SettingsError) -> dict[str, Any]:
    """Parse a YAML settings text whose top level must be a mapping; errors name label:line."""
    try:
        data = parse_yaml(text, label).data or {}
    except YamlRefused as exc:
        raise error(str(exc)) from None
    if not isinstance(data, dict):
        raise error(f"{label}: top level must be a mapping")
    return data


def _load_user(path: Path) -> tuple[dict[str, Any], Any]:
    """The user's settings and their YAML nodes (for line numbers); ({}, None) when there is no file."""
    try:
        text = read_text(path, lambda p, info: check_trusted(p, info, path.parent / HOME_NAME))
    except FileNotFoundError:
        return {}, None
    except NotReadyYet as exc:
        raise SettingsError(f"{path}: {exc.reason}") from None
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        document = parse_yaml(text, str(path))
    except YamlRefused as exc:
        raise SettingsError(str(exc)) from None
    if document.data is None:
        return {}, None
    if not isinstance(document.data, dict):
        raise SettingsError(f"{path}: top level must be a mapping")
    return document.data, document.root


def _profiles(data: dict[str, Any]) -> dict[str, Profile]:
    profiles = {}
    for name, spec in (data.get("profiles") or {}).items():
        if not isinstance(spec, dict) or "backend" not in spec:
            raise SettingsError(f"profiles: profile '{name}': field 'backend' is missing")
        probe = spec.get("probe") or {}
        profiles[name] = Profile(
            name=name,
            backend=str(spec["backend"]),
            env={str(k): str(v) for k, v in (spec.get("env") or {}).items()},
            probe_url=probe.get("url"),
            probe_every_s=float(probe.get("every_s", 30)),
            probe_timeout_s=float(probe.get("timeout_s", 5)),
            fallback=_optional_str(spec.get("fallback")),
            max_runs=_positive_int(spec.get("max_runs"), f"profiles: profile '{name}': field 'max_runs'"),
        )
    for profile in profiles.values():
        if profile.fallback is not None and profile.fallback not in profiles:
            raise SettingsError(f"profiles: profile '{profile.name}': field 'fallback': unknown profile {profile.fallback!r}")
    return profiles


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _positive_int(value: Any, label: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"{label} must be a positive integer, got {value!r}")
    return value


def load_settings(layout: ExperimentsLayout | None = None) -> Settings:
    user, root = _load_user(layout.settings_path) if layout else ({}, None)
    shipped = deep_merge(shipped_yaml("settings.yaml"), shipped_yaml("profiles.yaml"))
    if layout and (problem := check_settings(user, root, shipped, layout.settings_path)):
        raise SettingsError(problem)
    raw = deep_merge(shipped, user)
    workers = raw.get("workers") or {}
    bounds = {
        backend: WorkerBounds(int(b.get("floor", 1)), int(b.get("ceiling", 1)))
        for backend, b in (workers.get("backends") or {}).items()
    }
    launch_max = {
        str(backend): _positive_int(most, f"profiles: workers.launch_max.{backend}")
        for backend, most in (workers.get("launch_max") or {}).items()
    }
    return Settings(**{name: _section(cls, raw[name]) for name, cls in _SECTIONS.items()},
                    crash=raw["crash"], discovery=raw["discovery"], discover="off" if raw["discover"] is False else str(raw["discover"]),
                    runner=str(raw["runner"]), default_profile=str(raw["profile"]), profiles=_profiles(raw),
                    worker_flag=str(workers.get("flag", "--workers")), worker_bounds=bounds, launch_workers_max=launch_max)
