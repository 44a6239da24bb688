"""Run manifests: the durable record of one evaluation run.

A manifest is what lets expwatch restart a run exactly as it was started
(argv, cwd, the env that differs from the user's) and recognise its process
without being its parent (pid + create time + process group). It is JSON,
rewritten atomically, and found by listing ``DIR/.expwatch/runs/``.
"""

from __future__ import annotations

import math
import os
import re
import stat
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from expwatch import crashpoints
from expwatch.files import NotReadyYet, Unreadable, atomic_write_json, read_json
from expwatch.layout import ExperimentsLayout, is_manifest_name
from expwatch.trust import UntrustedFile, check_trusted, file_mode, make_home

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
    # pid/create_time/pgid/sid: the run's session leader, the process whose end
    # is the run's end. For a launched run that is the launch shim, which exits
    # only after writing the exit record; for an adopted run, the process itself.
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
    command_pid: int | None = None  # the command under the launch shim, when there is one
    profile_since: str | None = None  # when switch_profile moved the run onto its profile (see profile_slots)
    waiting_for_slot: str | None = None  # the full profile a switch_profile is waiting on, shown by status
    log_from: int | None = None  # the log's size when this process was launched: its own lines start there

    @property
    def shown_pid(self) -> int | None:
        """The pid users see and signal: the command's own, not the shim's."""
        return self.command_pid or self.pid

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["argv"] = list(self.argv)
        data["env_unset"] = list(self.env_unset)
        data["sbatch_args"] = list(self.sbatch_args)
        return data

    @classmethod
    def from_json(cls, data: Any, source: Path | str) -> "RunManifest":
        """A manifest whose every field has its type; ManifestError names the file and field otherwise."""
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: manifest is a JSON {type(data).__name__}, not an object")
        for required in ("name", "argv", "cwd", "log"):
            if required not in data:
                raise ManifestError(f"{source}: field '{required}' is missing")
        kwargs = {k: FIELD_CHECKS[k](k, v, source) for k, v in data.items() if k in FIELD_CHECKS}
        try:
            validate_name(kwargs["name"])
        except ManifestError as exc:
            raise ManifestError(f"{source}: field 'name': {exc}") from None
        file_name = os.path.basename(source)
        if file_name.endswith(".json") and file_name[: -len(".json")] != kwargs["name"]:
            raise ManifestError(f"{source}: field 'name' is {kwargs['name']!r}, but the file names run {file_name[: -len('.json')]!r}")
        if not kwargs["argv"]:
            raise ManifestError(f"{source}: field 'argv' is empty")
        return cls(**kwargs)

    def with_changes(self, **changes: Any) -> "RunManifest":
        return replace(self, **changes)


# A run NAME owns runs/NAME.json, runs/NAME.exit.json and runs/NAME/; a name
# ending in one of these would make its files pass for another run's.
RESERVED_SUFFIXES = (".exit", ".json", ".tmp")


def _fail(source: Path | str, key: str, wanted: str, value: Any) -> ManifestError:
    # Only the type: the value may be an environment secret.
    return ManifestError(f"{source}: field '{key}' must be {wanted}, got {type(value).__name__}")


def _text(key: str, value: Any, source: Path | str) -> str:
    if not isinstance(value, str) or "\x00" in value:
        raise _fail(source, key, "a string without NUL bytes", value)
    return value


def _integer(key: str, value: Any, source: Path | str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(source, key, "a non-negative integer", value)
    return value


def _number(key: str, value: Any, source: Path | str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise _fail(source, key, "a number", value)
    return float(value)


def _flag(key: str, value: Any, source: Path | str) -> bool:
    if not isinstance(value, bool):
        raise _fail(source, key, "true or false", value)
    return value


def _texts(key: str, value: Any, source: Path | str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _fail(source, key, "a list of strings", value)
    return tuple(_text(key, item, source) for item in value)


def _env(key: str, value: Any, source: Path | str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _fail(source, key, "an object of strings", value)
    return {_text(key, k, source): _text(key, v, source) for k, v in value.items()}


def _halt(key: str, value: Any, source: Path | str) -> HaltMark:
    if not isinstance(value, dict) or not isinstance(value.get("reason"), str) or not isinstance(value.get("at"), str) \
            or not isinstance(value.get("incident"), (str, type(None))):
        raise _fail(source, key, "an object with 'reason', 'at' and 'incident'", value)
    return HaltMark(value["reason"], value["incident"], value["at"])


KIND_CHECKS: dict[str, Callable[[str, Any, Path | str], Any]] = {
    "text": _text, "integer": _integer, "number": _number, "flag": _flag, "texts": _texts, "env": _env, "halt": _halt,
}


def _or_null(check: Callable[[str, Any, Path | str], Any]) -> Callable[[str, Any, Path | str], Any]:
    def checked(key: str, value: Any, source: Path | str) -> Any:
        return None if value is None else check(key, value, source)
    return checked


# The JSON type of every manifest field; "optional" ones may be null.
FIELD_KINDS = {
    "name": "text", "argv": "texts", "cwd": "text", "log": "text", "env_overrides": "env", "env_unset": "texts",
    "result": "optional text", "checkpoint": "optional text", "expected": "optional integer", "pid": "optional integer",
    "create_time": "optional number", "pgid": "optional integer", "sid": "optional integer",
    "launched_at": "optional text", "restarts": "integer", "profile": "optional text", "runner": "text",
    "job_id": "optional text", "sbatch_args": "texts", "adopted": "flag", "halted": "optional halt",
    "stopped_at": "optional text", "completed_at": "optional text", "command_pid": "optional integer",
    "profile_since": "optional text", "waiting_for_slot": "optional text", "log_from": "optional integer",
}
# Each field's check, looked up once here rather than its kind parsed per field of every manifest read.
FIELD_CHECKS = {
    key: _or_null(KIND_CHECKS[kind.removeprefix("optional ")]) if kind.startswith("optional ") else KIND_CHECKS[kind]
    for key, kind in FIELD_KINDS.items()
}


def validate_name(name: str) -> str:
    """The one check of a run name (launch, adopt and every manifest read)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ManifestError(f"run name {name!r}: use letters, digits, '.', '_' or '-', starting with a letter or digit (at most 100)")
    if name.lower().endswith(RESERVED_SUFFIXES):
        raise ManifestError(f"run name {name!r}: may not end in {', '.join(RESERVED_SUFFIXES)} (names files of other runs)")
    return name


def save_manifest(layout: ExperimentsLayout, manifest: RunManifest) -> Path:
    path = layout.manifest_path(manifest.name)
    make_home(layout)
    atomic_write_json(path, manifest.to_json(), file_mode(layout.runs_dir))
    crashpoints.passed("manifest:save")
    return path


def load_manifest(path: Path | str) -> RunManifest:
    """Raises FileNotFoundError, NotReadyYet (torn write; UntrustedFile: not ours) or ManifestError.

    On strings, no Path: ``status`` loads every manifest of a lab's folder (11,000) each time it is asked.
    """
    home = os.path.dirname(os.path.dirname(os.fspath(path)))
    return RunManifest.from_json(read_json(path, lambda p, info: check_trusted(p, info, home)), path)


def load_named(layout: ExperimentsLayout, name: str) -> RunManifest:
    path = layout.manifest_path(name)
    try:
        return load_manifest(path)
    except FileNotFoundError:
        known = ", ".join(sorted(m.name for m in discover(layout))) or "none"
        raise ManifestError(f"no run named {name!r} in {layout.root} (known: {known})") from None


class ManifestCache:
    """Parsed manifests by the stat of the file they were parsed from, for one reader (thread) at a time.

    The safety poll and discovery each read every manifest every few
    seconds, and almost none has changed: parsing them was most of an idle
    watcher's CPU. Manifests are replaced atomically (a new inode) and any
    write, chmod or chown changes the ctime, so an unchanged (inode, size,
    mtime, ctime) is an unchanged file, trust included; a group-writable
    file is never cached, as whether its group is trusted depends on
    ``.expwatch/``'s mode too.
    """

    def __init__(self) -> None:
        self._parsed: dict[str, tuple[tuple[int, int, int, int], RunManifest]] = {}

    def load(self, path: str, info: os.stat_result | None = None) -> RunManifest:
        """``load_manifest(path)``, without parsing a file unchanged since it last parsed; ``info``: its stat, if known."""
        info = info or os.stat(path)
        key = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        known = self._parsed.get(path)
        if known is not None and known[0] == key:
            return known[1]
        self._parsed.pop(path, None)
        manifest = load_manifest(path)
        if not info.st_mode & stat.S_IWGRP:
            self._parsed[path] = (key, manifest)
        return manifest

    def keep_only(self, paths: set[str]) -> None:
        """Forget the files no longer there (a lab's runs come and go)."""
        for gone in self._parsed.keys() - paths:
            del self._parsed[gone]


@dataclass(frozen=True)
class UnreadableManifest:
    """A file in runs/ that is not a usable manifest: shown as UNREADABLE, never acted on."""

    name: str
    path: Path
    reason: str  # one line naming the file (and the field)
    untrusted: bool = False  # owned or writable by someone else (expwatch/trust.py)


class SurveyRound:
    """One pass over ``runs/``, a few manifests at a time.

    ``take(until)`` reads manifests until a ``time.monotonic()`` deadline, so
    the safety poll can read a lab's 11,000 between other events (all at
    once it held the engine thread ~70 ms). The folder is listed as it is
    read, too: listing and sorting 11,000 entries first was one 15-30 ms hold
    every round. ``skip(name, info)``: leave that manifest unparsed (a
    released run whose file did not change; ``info`` is its stat);
    ``cache``: reuse what an earlier pass parsed of files unchanged since.
    When done, ``found`` holds the usable manifests and ``broken`` why each
    other one is not, both by name, and ``seen`` every run name listed,
    parsed or not.
    """

    def __init__(self, layout: ExperimentsLayout, skip: Callable[[str, os.stat_result], bool] | None = None,
                 cache: ManifestCache | None = None):
        self.found: list[RunManifest] = []
        self.broken: list[UnreadableManifest] = []
        self.seen: set[str] = set()
        self._layout, self._skip, self._cache = layout, skip, cache
        self._on_disk: set[str] = set()
        self._listing: Iterator[os.DirEntry[str]] | None = None
        self._done = False

    def take(self, until: float = math.inf) -> bool:
        """Read manifests until ``until`` (at least one); True once every one is read."""
        if self._done:
            return True
        if self._listing is None:
            try:
                self._listing = os.scandir(self._layout.runs_dir_text)
            except (FileNotFoundError, NotADirectoryError):
                return self._finish()
        # On strings and directory entries, no Path per file: a lab's folder holds >10,000 manifests,
        # and building Paths of unchanged ones was most of an idle watcher's survey.
        for entry in self._listing:
            name = entry.name
            if not is_manifest_name(name) or name[: -len(".json")] in self.seen:
                continue  # a manifest replaced while the folder is listed may be listed twice (tmpfs)
            self._read(entry, name[: -len(".json")])
            if until != math.inf and time.monotonic() >= until:
                return False
        return self._finish()

    def _read(self, entry: os.DirEntry[str], name: str) -> None:
        self.seen.add(name)
        self._on_disk.add(entry.path)
        try:
            if self._skip is None and self._cache is None:  # `status`: nothing to compare, so no stat
                self.found.append(load_manifest(entry.path))
                return
            info = entry.stat()
            if self._skip is not None and self._skip(name, info):
                return
            self.found.append(self._cache.load(entry.path, info) if self._cache is not None else load_manifest(entry.path))
        except FileNotFoundError:
            pass
        except (NotReadyYet, ManifestError) as exc:
            self.broken.append(UnreadableManifest(name, Path(entry.path), str(exc), isinstance(exc, UntrustedFile)))
        except OSError as exc:  # the listing's stat: a symlink loop, say
            self.broken.append(UnreadableManifest(name, Path(entry.path), str(Unreadable(entry.path, exc.strerror or str(exc))), False))

    def _finish(self) -> bool:
        if self._listing is not None:
            self._listing.close()
        self._done = True
        self.found.sort(key=lambda m: m.name)
        self.broken.sort(key=lambda b: b.name)
        if self._cache is not None:
            self._cache.keep_only(self._on_disk)
        return True


def survey(layout: ExperimentsLayout, cache: ManifestCache | None = None) -> tuple[list[RunManifest], list[UnreadableManifest]]:
    """Every manifest of ``layout`` at once (``SurveyRound``): the usable ones, and why each other one is not."""
    whole = SurveyRound(layout, cache=cache)
    whole.take()
    return whole.found, whole.broken


def discover(layout: ExperimentsLayout, cache: ManifestCache | None = None) -> list[RunManifest]:
    """Every usable manifest; see ``survey`` for the others (the watcher retries them)."""
    return survey(layout, cache=cache)[0]
