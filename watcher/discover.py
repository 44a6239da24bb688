"""Runs started by hand: processes that write into DIR and have no manifest.

Researchers start evaluations with ``setsid nohup python eval.py --output
DIR/x.json >> DIR/x.log 2>&1 &``, from a tmux pane or a plain shell, and
never tell expwatch. What such a run needs for a manifest is all readable
from ``/proc`` (through psutil): the files it holds open for writing (its
stdout/stderr are ``/proc/PID/fd`` links, their access mode is in
``fdinfo``), its argv, cwd and create time. This module only reads and
infers, recording where each value came from; deciding to adopt and writing
the manifest is ``expwatch.autoadopt``'s.
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import psutil

from expwatch.files import NotReadyYet, read_json
from expwatch.layout import HOME_NAME
from expwatch.manifest import RunManifest
from expwatch.results.progress import checkpoint_path_for
from expwatch.settings import Settings

INTERPRETER_RE = re.compile(r"^(python[0-9.]*|pypy[0-9.]*)$")
UNSAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class DiscoveryConfig:
    """The ``discovery`` section of settings.yaml, typed."""

    budget_s: float
    recheck_s: float
    result_wait_s: float
    result_flags: tuple[str, ...]
    expected_flags: tuple[str, ...]
    expected_result_keys: tuple[str, ...]
    expected_checkpoint_keys: tuple[str, ...]
    ignore_programs: frozenset[str]
    ignore_modules: frozenset[str]
    ignore_files: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> "DiscoveryConfig":
        def names(key: str) -> tuple[str, ...]:
            return tuple(settings.discovery[key])  # lists of strings, by configs/settings.schema.json

        return cls(
            budget_s=settings.discovery["budget_s"],
            recheck_s=settings.discovery["recheck_s"],
            result_wait_s=settings.discovery["result_wait_s"],
            result_flags=names("result_flags"),
            expected_flags=names("expected_flags"),
            expected_result_keys=names("expected_result_keys"),
            expected_checkpoint_keys=names("expected_checkpoint_keys"),
            ignore_programs=frozenset(names("ignore_programs")),
            ignore_modules=frozenset(names("ignore_modules")),
            ignore_files=names("ignore_files"),
        )


@dataclass(frozen=True)
class Inferred:
    """One manifest field and where its value came from (audited with it)."""

    value: Any
    source: str


@dataclass(frozen=True)
class FoundRun:
    """A process that looks like an evaluation run nobody recorded."""

    pid: int
    create_time: float
    argv: tuple[str, ...]
    cwd: str
    name: Inferred
    log: Inferred
    result: Inferred
    checkpoint: Inferred
    expected: Inferred
    waiting: str | None = None  # why adoption should wait for a later scan

    def fields(self) -> dict[str, dict[str, Any]]:
        """Every inferred field as {"value", "source"}: what ``run adopted`` audits and adopt/monitor print."""
        inferred = {k: {"value": getattr(self, k).value, "source": getattr(self, k).source}
                    for k in ("name", "log", "result", "checkpoint", "expected")}
        inferred["argv"] = {"value": list(self.argv), "source": f"/proc/{self.pid}/cmdline"}
        inferred["cwd"] = {"value": self.cwd, "source": f"/proc/{self.pid}/cwd"}
        return inferred


@dataclass(frozen=True)
class Scan:
    found: tuple[FoundRun, ...]
    stopped_at: int | None  # the pid the time budget ran out at (the next scan starts there); None: all read
    quiet: tuple[int, ...] = ()  # pids of processes read that write nothing under root (and are old enough to skip)

    @property
    def truncated(self) -> bool:
        return self.stopped_at is not None


@dataclass(frozen=True)
class _Writer:
    proc: psutil.Process
    argv: tuple[str, ...]
    cwd: str
    create_time: float
    ancestors: tuple[int, ...]
    pgid: int
    writes: tuple[tuple[int, str], ...]  # (fd, path) of regular files under DIR open for writing
    named_result: tuple[str, str] | None  # (flag, absolute path) from argv


def flag_value(argv: tuple[str, ...], flags: Iterable[str]) -> tuple[str, str] | None:
    """(flag, value) of the first of *flags* in argv, as ``--f V`` or ``--f=V``."""
    wanted = set(flags)
    for i, arg in enumerate(argv[1:], start=1):
        if arg in wanted and i + 1 < len(argv):
            return arg, argv[i + 1]
        key, eq, value = arg.partition("=")
        if eq and key in wanted and value:
            return key, value
    return None


def under(path: str, root: Path) -> bool:
    p = Path(path)
    return p.is_relative_to(root) and not p.is_relative_to(root / HOME_NAME)


def _ignored_module(argv: list[str] | tuple[str, ...], config: DiscoveryConfig) -> bool:
    """``python -m MODULE`` with MODULE one of ``ignore_modules``."""
    if not argv or not INTERPRETER_RE.match(os.path.basename(argv[0])) or "-m" not in argv[1:-1]:
        return False
    return argv[list(argv).index("-m") + 1] in config.ignore_modules


def _helper(argv: tuple[str, ...], name: str, config: DiscoveryConfig) -> bool:
    """A shell, pager, editor or package tool, including ``python -m pip`` and ``python .../bin/pip``."""
    if _ignored_module(argv, config):
        return True
    programs = {os.path.basename(argv[0]), name}
    if INTERPRETER_RE.match(os.path.basename(argv[0])) and "-m" not in argv[1:-1] and len(argv) > 1 and not argv[1].startswith("-"):
        programs.add(os.path.basename(argv[1]))
    return bool(programs & config.ignore_programs)


def _ancestors(proc: psutil.Process, config: DiscoveryConfig) -> tuple[int, ...] | None:
    """Pids of its parents, or None when one runs an ignored module.

    Everything below ``python -m expwatch.runners.shim`` was started by
    expwatch, whose manifest for it may be a moment from being written; below
    the watcher or pip it is theirs.
    """
    pids = []
    try:
        for parent in proc.parents():
            if _ignored_module(parent.cmdline(), config):
                return None
            pids.append(parent.pid)
    except psutil.Error:
        pass
    return tuple(pids)


def _writer(proc: psutil.Process, root: Path, config: DiscoveryConfig, shared: frozenset[str]) -> _Writer | None:
    """The process as a writer under *root*, ignoring files in *shared* (the watcher's own output)."""
    try:
        with proc.oneshot():
            argv = tuple(proc.cmdline())
            if not argv or _helper(argv, proc.name(), config):
                return None
            cwd = proc.cwd()
            # psutil reads the access mode from /proc/PID/fdinfo: 'r' is a reader (tail -F, a pager).
            writes = tuple(sorted(
                (f.fd, f.path) for f in proc.open_files()
                if f.mode != "r" and under(f.path, root) and f.path not in shared
                and not any(fnmatch.fnmatch(os.path.basename(f.path), g) for g in config.ignore_files)
            ))
            named = flag_value(argv, config.result_flags)
            named_result = (named[0], os.path.normpath(os.path.join(cwd, named[1]))) if named else None
            if named_result and not under(named_result[1], root):
                named_result = None
            if not writes and not named_result:
                return None
            if "SLURM_JOB_ID" in proc.environ():
                return None  # a SLURM job's process: discovered as the job, through squeue
            ancestors = _ancestors(proc, config)
            if ancestors is None:
                return None
            return _Writer(proc, argv, cwd, proc.create_time(), ancestors, os.getpgid(proc.pid), writes, named_result)
    except (psutil.Error, ProcessLookupError, PermissionError):
        return None


def _json(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        data = read_json(Path(path))
    except (FileNotFoundError, NotReadyYet, OSError):
        return None
    return data if isinstance(data, dict) else None


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def expected_from_files(result: str | None, checkpoint: str | None, config: DiscoveryConfig) -> Inferred:
    """The item count a result's config or a checkpoint states, else unknown."""
    data = _json(result)
    cfg = data.get("config") if data else None
    for key in config.expected_result_keys if isinstance(cfg, dict) else ():
        if _positive_int(cfg.get(key)):
            return Inferred(_positive_int(cfg[key]), f"result config.{key}")
    data = _json(checkpoint)
    for key in config.expected_checkpoint_keys if data else ():
        if _positive_int(data.get(key)):
            return Inferred(_positive_int(data[key]), f"checkpoint {key}")
    return Inferred(None, "unknown")


def expected_from(argv: tuple[str, ...], result: str | None, checkpoint: str | None, config: DiscoveryConfig) -> Inferred:
    """The item count: argv's flag, else what the result or checkpoint states, else unknown."""
    flag = flag_value(argv, config.expected_flags)
    if flag and _positive_int(flag[1]):
        return Inferred(_positive_int(flag[1]), f"argv {flag[0]}")
    return expected_from_files(result, checkpoint, config)


def unique_name(path: str, what: str, taken: set[str]) -> Inferred:
    """The stem of *path* as a valid run name not in *taken* (which gains it)."""
    base = UNSAFE_NAME_RE.sub("-", Path(path).stem).strip("-._")[:90] or "run"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return Inferred(name, f"stem of the {what}" + (f", made unique (-{n})" if n > 1 else ""))


def checkpoint_beside(result: str | None) -> Inferred:
    if not result:
        return Inferred(None, "no result")
    path = checkpoint_path_for(Path(result))
    return Inferred(str(path), "present beside the result" if path.exists() else "default beside the result (not written yet)")


def _fd_label(fd: int) -> str:
    return {1: "stdout", 2: "stderr"}.get(fd, f"fd {fd}")


def infer(w: _Writer, root: Path, taken: set[str], config: DiscoveryConfig, now: float) -> FoundRun:
    """Every manifest field of a writer, each with its source; *taken* gains the chosen name."""
    checkpoints = {str(checkpoint_path_for(Path(p))) for _, p in w.writes}
    logs = [(fd, p) for fd, p in w.writes if not p.endswith(".json")]
    jsons = [(fd, p) for fd, p in w.writes if p.endswith(".json") and p not in checkpoints and "_checkpoint" not in Path(p).stem]
    if w.named_result:
        result = Inferred(w.named_result[1], f"argv {w.named_result[0]}")
    elif jsons:
        result = Inferred(jsons[0][1], f"open for writing ({_fd_label(jsons[0][0])})")
    else:
        result = Inferred(None, "none found")
    std = [(fd, p) for fd, p in logs if fd in (1, 2)] or logs
    if std:
        fds = "+".join(_fd_label(fd) for fd, p in std if p == std[0][1])
        log = Inferred(std[0][1], f"{fds} of pid {w.proc.pid}")
    else:
        stem = Path(result.value)
        log = Inferred(str(stem.with_suffix(".log")), "no log open; a restart appends its output here")
    checkpoint = checkpoint_beside(result.value)
    expected = expected_from(w.argv, result.value, checkpoint.value, config)
    name = unique_name(result.value or log.value, "result" if result.value else "log", taken)
    waiting = None
    if expected.value is None and result.value and not os.path.exists(result.value) and now - w.create_time < config.result_wait_s:
        waiting = f"result {result.value} not written yet"
    return FoundRun(w.proc.pid, w.create_time, w.argv, w.cwd, name, log, result, checkpoint, expected, waiting)


def _owned(manifests: Iterable[RunManifest]) -> tuple[set[str], set[int], set[int]]:
    """(files, pids, process groups) that belong to watched runs.

    The files of a finished run (completed, stopped, halted) are no one's: a
    process writing them again is the user running it anew, a run of its own.
    """
    files, pids, groups = set(), set(), set()
    for m in manifests:
        if not (m.completed_at or m.stopped_at or m.halted):
            files |= {p for p in (m.log, m.result, m.checkpoint) if p}
        if m.pid:
            pids.add(m.pid)
        if m.pgid and m.pgid == m.pid:  # the run leads its group: every member is the run's
            groups.add(m.pgid)
    return files, pids, groups


@dataclass(frozen=True)
class WatcherSelf:
    """The watcher's own process as a scan needs it: whoever started it, and the files it writes.

    Neither is a run of it: a script or benchmark that started the watcher
    may hold the watcher's output file under DIR. Read once and reused by
    the sweeps for a while: listing the watcher's own descriptors (one per
    watched log) on every sweep was a good part of an idle watcher's CPU.
    """

    pid: int
    elders: frozenset[int]
    shared: frozenset[str]

    @classmethod
    def read(cls) -> "WatcherSelf":
        me = os.getpid()
        try:
            this = psutil.Process(me)
            return cls(me, frozenset(p.pid for p in this.parents()), frozenset(f.path for f in this.open_files() if f.mode != "r"))
        except psutil.Error:
            return cls(me, frozenset(), frozenset())


def scan(root: Path, manifests: list[RunManifest], config: DiscoveryConfig,
         skip: frozenset[tuple[int, float]] = frozenset(), resume_at: int = 0,
         quiet: frozenset[int] = frozenset(), watcher: WatcherSelf | None = None) -> Scan:
    """Every unrecorded writer into *root* of this user, topmost process of each tree only.

    *skip*: (pid, create_time) of writers the caller has dealt with; they are
    not inferred again (inference reads their result files). *quiet*: pids a
    recent scan found writing nothing under *root*; they are not read again
    (listing every process's descriptors, a readlink each, was most of an
    idle watcher's CPU; a pid reused meanwhile is seen once the caller
    forgets it, after ``recheck_s``). Processes are read in pid
    order from *resume_at* on, wrapping round, so a scan cut short by
    ``budget_s`` is continued by the next one instead of starting over.
    *watcher*: the calling process, read now if not given.
    """
    root = Path(root).resolve()
    uid = os.getuid()
    files, pids, groups = _owned(manifests)
    watcher = watcher or WatcherSelf.read()
    me, elders, shared = watcher.pid, watcher.elders, watcher.shared
    started = time.monotonic()
    writers: list[_Writer] = []
    found_quiet: list[int] = []
    wall = time.time()
    stopped_at = None
    everyone = psutil.pids()
    order = [p for p in everyone if p >= resume_at] + [p for p in everyone if p < resume_at]
    for index, pid in enumerate(order):
        if index and time.monotonic() - started > config.budget_s:  # at least one process per scan: progress
            stopped_at = pid
            break
        if pid == me or pid in pids or pid in elders or pid in quiet:
            continue
        try:
            proc = psutil.Process(pid)
            if proc.uids().real != uid:
                continue
        except psutil.Error:
            continue
        w = _writer(proc, root, config, shared)
        if w is None:
            try:
                if wall - proc.create_time() >= config.recheck_s:  # a young one may be importing torch before it opens its log
                    found_quiet.append(pid)
            except psutil.Error:
                pass
            continue
        if me in w.ancestors or pids & set(w.ancestors) or w.pgid in groups:
            continue  # the watcher's own children, and processes of a watched run
        written = {p for _, p in w.writes} | ({w.named_result[1]} if w.named_result else set())
        if written <= files:
            continue  # writes only what a watched run owns (its shim, a restarted copy being recorded)
        writers.append(w)
    # A worker pool inherits its parent's stdout: the run is the topmost writer.
    candidates = {w.proc.pid for w in writers}
    tops = [w for w in writers if not candidates & set(w.ancestors)]
    taken = {m.name for m in manifests}
    now = time.time()
    fresh = [w for w in tops if (w.proc.pid, w.create_time) not in skip]
    found = tuple(infer(w, root, taken, config, now) for w in sorted(fresh, key=lambda w: w.create_time))
    return Scan(found, stopped_at, tuple(found_quiet))
